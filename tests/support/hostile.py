"""The hostile report mails of issue 8, one builder each (tests and bench/ use them).

Each is small on the wire; together they cover what once stopped, slowed or blew up stage 2:
text that cannot be encoded, counts no SIEM (or SQLite) can hold, amplification, quadratic
parsing and decompression bombs.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable

from tests.support.factories import report_dict, sts_policy, tlsrpt_email


def _mail(doc: object, *, rid: str = "hostile") -> bytes:
    payload = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
    return tlsrpt_email(gzip.compress(payload), filenames=[f"r!example.com!1!2!{rid}.json.gz"])


def surrogate_subject() -> bytes:
    """Two header lines whose Subject decodes to a lone surrogate (UTF-7 '+2AA-')."""
    return b"From: x@reporter.example\r\nSubject: =?utf-7?q?+2AA-?=\r\n\r\nhello\r\n"


def surrogate_in_json() -> bytes:
    doc = report_dict(report_id="surrogate")
    doc["organization-name"] = "Evil \ud800 Corp"
    return _mail(json.dumps(doc).encode())  # json.dumps escapes it as \ud800


def count(value: object, rid: str) -> bytes:
    doc = report_dict(report_id=rid)
    doc["policies"][0]["summary"]["total-successful-session-count"] = value
    return _mail(doc, rid=rid)


def big_int_count() -> bytes:
    return count(2**63, "int-2-63")


def float_count() -> bytes:
    return _mail(json.dumps(report_dict(report_id="float")).replace("100", "1e300", 1).encode())


def string_count() -> bytes:
    return count("9" * 30, "digits")


def overflow_by_sum() -> bytes:
    half = 2**62 + 1
    doc = report_dict(
        sts_policy("a.example", success=half),
        sts_policy("b.example", success=half),
        report_id="sum",
    )
    return _mail(doc, rid="sum")


def million_details(n: int = 1_000_000) -> bytes:
    """One report whose one policy lists `n` identical failure details (~250 KB gzipped)."""
    item = b'{"result-type":"certificate-expired","failed-session-count":1}'
    head = json.dumps(report_dict(sts_policy(success=5, failure=n), report_id="million")).encode()
    marker = b'"failure-details": []'
    if marker not in head:  # the default policy has no details: add the key
        head = head.replace(b'"summary"', b'"failure-details": [], "summary"', 1)
    before, after = head.split(marker)
    body = b'"failure-details": [' + b",".join([item] * n) + b"]"
    return _mail(before + body + after, rid="million")


def many_gzip_members(n: int = 20_000) -> bytes:
    """A valid report split into `n` gzip members of a few bytes each."""
    data = json.dumps(report_dict(report_id="members")).encode()
    step = max(1, len(data) // n)
    members = b"".join(gzip.compress(data[i : i + step]) for i in range(0, len(data), step))
    return tlsrpt_email(members, filenames=["r!example.com!1!2!members.json.gz"])


def many_encoded_words(n: int = 20_000) -> bytes:
    subject = " ".join(["=?utf-8?q?a?="] * n)
    head = f"From: x@reporter.example\r\nSubject: {subject}\r\n".encode()
    mail = _mail(report_dict(report_id="words"), rid="words")
    return head + mail


def giant_string(size: int = 30 * 1024 * 1024, rid: str = "giant") -> bytes:
    """A valid report whose one failure detail carries a `size`-byte string (~30 KB gzipped,
    under the default decompression cap): the shape that took stage 2 to ~870 MiB with
    thirteen such mails in one batch."""
    doc = report_dict(
        sts_policy(
            failure=1,
            details=[
                {
                    "result-type": "validation-failure",
                    "failed-session-count": 1,
                    "additional-information": "@@",
                }
            ],
        ),
        report_id=rid,
    )
    head, tail = json.dumps(doc).encode().split(b"@@")
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = comp.compress(head)
    chunk = b"A" * (1 << 20)
    data += b"".join(comp.compress(chunk) for _ in range(size >> 20))
    data += comp.compress(tail) + comp.flush()
    return tlsrpt_email(data, filenames=[f"r!example.com!1!2!{rid}.json.gz"])


def bomb(size: int = 64 * 1024 * 1024 + 1) -> bytes:
    """gzip that inflates past the default decompression cap."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * (1 << 20)
    data = b"".join(comp.compress(chunk) for _ in range(size >> 20))
    data += comp.compress(b" " * (size & ((1 << 20) - 1))) + comp.flush()
    return tlsrpt_email(data, filenames=["r!example.com!1!2!bomb.json.gz"])


HOSTILE: dict[str, Callable[[], bytes]] = {
    "surrogate-subject": surrogate_subject,
    "surrogate-in-json": surrogate_in_json,
    "count-2**63": big_int_count,
    "count-1e300": float_count,
    "count-digit-string": string_count,
    "count-overflow-by-sum": overflow_by_sum,
    "400,000 failure details (26 MB)": lambda: million_details(400_000),
    "1,000,000 failure details (66 MB)": million_details,
    "20,000 gzip members": many_gzip_members,
    "20,000 encoded-words": many_encoded_words,
    "30 MB string": giant_string,
    "gzip bomb": bomb,
}
