"""Seed inputs built at run time: the real samples (when ../shared is there) plus generated
reports, containers and mails covering the shapes the parsers branch on."""

from __future__ import annotations

import email
import gzip
import json

from harness import samples

from tests.support import factories as f


def report_json() -> list[bytes]:
    odd_detail = f.detail(count=3, **{"receiving-mx-host-name": "MX.Example.com."})
    sts = f.sts_policy(failure=4, details=[f.detail(), odd_detail])
    quirky = f.report_dict(
        sts, f.tlsa_policy(), f.no_policy(), contact=None, start="2024-01-09 00:00:00"
    )
    del quirky["policies"][0]["failure-details"][1]["receiving-mx-hostname"]
    quirky["policies"][1]["policy"]["policy-string"] = json.dumps(["3 1 1 ab", "3 1 1 cd"])
    generated = [
        f.to_json(f.report_dict()),
        f.to_json(quirky),
        b"\xef\xbb\xbf" + f.to_json(f.report_dict(f.no_policy())),
        json.dumps(f.report_dict()).encode("utf-16"),
    ]
    return samples(".json") + generated


def attachments(mail: bytes) -> list[bytes]:
    """The decoded non-text leaves of a mail (the stdlib parser: the project's is what the
    targets fuzz, and it must be imported inside ``harness.instrumented``)."""
    leaves = email.message_from_bytes(mail).walk()
    out = [leaf.get_payload(decode=True) for leaf in leaves if not leaf.is_multipart()]
    return [x for x in out if isinstance(x, bytes) and not x.isascii()]


def payloads() -> list[bytes]:
    reports = report_json()[:6]
    out = list(reports) + samples(".gz", ".zip")
    out += [a for mail in samples(".eml") for a in attachments(mail)]
    for body in reports[:3]:
        out.append(gzip.compress(body))
        out.append(f.zip_archive([("report.json", body)]))
    out.append(gzip.compress(gzip.compress(reports[0])))
    out.append(f.gzip_member(reports[0], fname=b"r.json", fextra=b"ab", fhcrc=True) + b"junk")
    out.append(f.gzip_member(reports[0][:40]) + f.gzip_member(reports[0][40:]))
    out.append(f.zip_archive([("a.txt", b"x"), ("b.json.gz", gzip.compress(reports[0]))]))
    return out


def mails() -> list[bytes]:
    body = f.to_json(f.report_dict())
    gz = gzip.compress(body)
    generated = [
        f.tlsrpt_email(gz),
        f.tlsrpt_email(body, content_type="application/tlsrpt+json", filenames=["r.json"]),
        f.tlsrpt_email(
            f.zip_archive([("r.json", body)]), content_type="application/zip", filenames=["r.zip"]
        ),
        f.raw_email(f.text_part(), f.attachment_part(gz), close_boundary=False, crlf=True),
        f.raw_email(
            f.attachment_part(gz, content_type='application/octet-stream; name="r.json.gz"'),
            headers=[
                "From: =?utf-8?b?w6lsw6k=?= <a@b.example>",
                "Subject: =?iso-8859-1?q?R=E9port?= =?utf-8?q?_x?=",
                "TLS-Report-Domain: example.com",
            ],
        ),
        b"Subject: =?utf-7?q?+2AA-?=\n\nhello\n",
        body,
        gz,
    ]
    return samples(".eml") + generated
