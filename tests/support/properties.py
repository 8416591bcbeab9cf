"""Hypothesis profiles and strategies for tests/test_properties_*.py.

Profiles: ``ci`` (the default: 200 examples a test, derandomized so a run is reproducible, no
deadline because the machine is shared, no example database written) and ``dev``
(HYPOTHESIS_PROFILE=dev: ten times the examples, random, with the database in .hypothesis/).

The report strategies build RFC 8460-shaped documents where any field may instead hold any
JSON value, so both the normal path and every fallback branch of the parser are exercised.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from tests.support import factories as f

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Only the @example cases: each strict xfail must fail on its explicit example alone, since
# generated cases can differ between runs that collect different modules.
settings.register_profile("explicit", phases=[Phase.explicit], database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Text as a report or a header can carry it once decoded: anything, lone surrogates and NUL
# included. ``plain_text`` leaves those two out (what the parser must already handle today).
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
plain_text = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20
)

small_counts = st.integers(0, 10**6)
# Every form a count takes in the wild or in an attack: small, huge, negative, float, string.
any_counts = st.one_of(
    small_counts,
    st.integers(2**53 - 2, 2**64 + 2),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.from_regex(r"\A[ ]?[0-9]{1,25}[ ]?\Z"),
    st.none(),
    st.booleans(),
)


@functools.cache
def json_values(text: st.SearchStrategy[str] = plain_text) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        text,
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=8,
    )


def _iso(dt: datetime, style: int) -> str:
    text = dt.isoformat()
    if style == 0:
        return text.replace("+00:00", "Z")
    if style == 1:
        return text.replace("T", " ")
    return text


def datetimes_text(
    low: datetime = datetime(2000, 1, 1), high: datetime = datetime(2100, 1, 1)
) -> st.SearchStrategy[str]:
    """RFC 3339 date-times as senders write them, by default within years 2000-2100."""
    zones = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    moments = st.datetimes(low, high)
    aware = st.builds(lambda d, z: d.replace(tzinfo=z), moments, st.one_of(st.just(UTC), zones))
    return st.builds(_iso, st.one_of(moments, aware), st.integers(0, 2))


def _or_noise(
    valid: st.SearchStrategy[Any], text: st.SearchStrategy[str]
) -> st.SearchStrategy[Any]:
    """Usually the valid value, sometimes any JSON value instead."""
    return st.one_of(valid, valid, valid, json_values(text))


def _detail(text: st.SearchStrategy[str], counts: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    known = st.sampled_from(["certificate-expired", "starttls-not-supported", "validation-failure"])
    return st.fixed_dictionaries(
        {"result-type": _or_noise(known, text)},
        optional={
            "sending-mta-ip": _or_noise(st.ip_addresses().map(str), text),
            "receiving-mx-hostname": _or_noise(text, text),
            "receiving-mx-host-name": text,
            "receiving-mx-helo": text,
            "receiving-ip": _or_noise(st.ip_addresses().map(str), text),
            "failed-session-count": counts,
            "additional-information": text,
            "failure-reason-code": text,
            "x-vendor-extension": json_values(text),
        },
    )


def _policy(text: st.SearchStrategy[str], counts: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    inner = st.fixed_dictionaries(
        {},
        optional={
            "policy-type": _or_noise(st.sampled_from(["sts", "tlsa", "no-policy-found"]), text),
            "policy-domain": _or_noise(st.sampled_from(["example.com", "Bücher.example."]), text),
            "policy-string": _or_noise(st.lists(text, max_size=3), text),
            "mx-host": _or_noise(st.lists(text, max_size=3), text),
            "mx-host-pattern": text,
        },
    )
    summary = st.fixed_dictionaries(
        {},
        optional={
            "total-successful-session-count": counts,
            "total-failure-session-count": counts,
        },
    )
    details = st.lists(_or_noise(_detail(text, counts), text), max_size=4)
    return st.fixed_dictionaries(
        {"policy": _or_noise(inner, text), "summary": _or_noise(summary, text)},
        optional={"failure-details": _or_noise(details, text)},
    )


def report_docs(
    text: st.SearchStrategy[str] = plain_text,
    counts: st.SearchStrategy[Any] = small_counts,
    dates: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """RFC 8460-shaped report objects, any field possibly replaced by any JSON value."""
    if dates is None:
        dates = datetimes_text()
    date_range = st.fixed_dictionaries(
        {"start-datetime": _or_noise(dates, text), "end-datetime": _or_noise(dates, text)}
    )
    policies = st.lists(_or_noise(_policy(text, counts), text), max_size=4)
    return st.fixed_dictionaries(
        {
            "report-id": _or_noise(text.map(lambda t: "id-" + t), text),
            "date-range": _or_noise(date_range, text),
            "policies": st.one_of(
                policies, policies, policies, _policy(text, counts), json_values()
            ),
        },
        optional={
            "organization-name": _or_noise(text, text),
            "contact-info": _or_noise(text.map(lambda t: t + "@reporter.example"), text),
        },
    )


def encodings(doc: Any) -> st.SearchStrategy[bytes]:
    """The ways a report document reaches the parser as bytes."""
    compact = orjson.dumps(doc) if _orjson_ok(doc) else json.dumps(doc).encode()
    return st.sampled_from(
        [
            compact,
            json.dumps(doc, indent=1).encode(),
            json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass"),
            b"\xef\xbb\xbf" + json.dumps(doc).encode(),
            json.dumps(doc).encode("utf-16"),
        ]
    )


def _orjson_ok(doc: Any) -> bool:
    try:
        orjson.dumps(doc)
    except TypeError:
        return False
    return True


def containers(body: bytes) -> st.SearchStrategy[bytes]:
    """The containers an attachment's report arrives in."""
    return st.sampled_from(
        [
            body,
            gzip.compress(body),
            f.gzip_member(body[:7]) + f.gzip_member(body[7:]),
            f.zip_archive([("report.json", body)]),
            f.zip_archive([("notes.txt", b"x"), ("r.json.gz", gzip.compress(body))]),
        ]
    )


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with a few bytes flipped, removed or inserted, or cut short."""
    n = len(data)

    def apply(edits: list[tuple[int, int, int]]) -> bytes:
        buf = bytearray(data)
        for op, at, value in edits:
            at %= max(len(buf), 1)
            if op == 0 and buf:
                buf[at] ^= value or 1
            elif op == 1:
                buf.insert(at, value)
            elif op == 2:
                del buf[at : at + 1 + value % 8]
            else:
                del buf[at:]
        return bytes(buf)

    edit = st.tuples(st.integers(0, 3), st.integers(0, max(n - 1, 0)), st.integers(0, 255))
    return st.lists(edit, min_size=1, max_size=4).map(apply)
