"""Fuzz target: report JSON bytes -> parse_report -> events, every event encodable.

Documented: ReportError (the body is not a usable report). Checked beyond "no other
exception": totals add up, a detail/summary mismatch is flagged, the events encode as JSON
and UTF-8, their number and size stay linear in the input.
"""

from __future__ import annotations

import json
import random
from typing import Any

import harness
import seeds

with harness.instrumented():
    import orjson

    from tlsrpt_lmtp.core.events import report_events
    from tlsrpt_lmtp.core.model import MailMeta
    from tlsrpt_lmtp.core.report import ReportError, parse_report
    from tlsrpt_lmtp.core.sanitize import MAX_COUNT

COUNT_FIELDS = (
    "total_successful_session_count",
    "total_failure_session_count",
    "failed_session_count",
)
META = MailMeta(report_domain="example.com", submitter="reporter.example")


def check(data: bytes) -> None:
    report = parse_report(data, header_domain="example.com")
    policies = report.policies
    # docs/events.md, count-clamped: every count and every sum stops at MAX_COUNT
    assert report.total_successful_session_count == min(
        sum(p.total_successful_session_count for p in policies), MAX_COUNT
    )
    details = 0
    for p in policies:
        details += len(p.failure_details)
        detail_sum = min(sum(d.failed_session_count for d in p.failure_details), MAX_COUNT)
        assert 0 <= p.total_successful_session_count <= MAX_COUNT
        assert 0 <= p.total_failure_session_count <= MAX_COUNT
        if p.failure_details and detail_sum != p.total_failure_session_count:
            assert "failure-count-mismatch" in report.warnings
    events = report_events(report, META, archive_id="0" * 64, source="fuzz", duplicate=False)
    assert len(events) <= 1 + len(policies) + details
    for event in events:
        fields = event.to_dict()  # the JSON object the sinks write
        encoded = orjson.dumps(fields)
        encoded.decode("utf-8")
        assert len(encoded) <= 4096 + 8 * len(data), (len(encoded), len(data))
        counts = (fields.get(k) for k in COUNT_FIELDS)
        assert all(0 <= c <= MAX_COUNT for c in counts if c is not None), event


# Values that sit on a boundary of some type the parser or a sink relies on.
INTERESTING: tuple[Any, ...] = (
    2**53,
    2**63,
    2**64,
    -1,
    1e300,
    1.5,
    "7",
    " 7 ",
    "\u00b2",
    "\u0663",
    "",
    None,
    True,
    [],
    {},
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2024-02-30T00:00:00Z",
    "2024-01-01 00:00:00",
    "\ud800",
    "a\x00b",
    "B\u00fccher.example.",
    "x" * 300,
)


def _slots(value: Any, out: list[tuple[Any, Any]]) -> None:
    """Every (container, key) pair of a decoded JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((value, key))
            _slots(item, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.append((value, i))
            _slots(item, out)


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    """Half the time libFuzzer's byte mutation; otherwise, when the input is JSON, one value
    of the document replaced by a boundary value, deleted or duplicated."""
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return harness.byte_mutate(data, max_size, seed)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return harness.byte_mutate(data, max_size, seed)
    slots: list[tuple[Any, Any]] = []
    _slots(doc, slots)
    if not slots:
        return harness.byte_mutate(data, max_size, seed)
    container, key = rng.choice(slots)
    action = rng.randrange(4)
    if action == 0 and isinstance(container, dict):
        del container[key]
    elif action == 1 and isinstance(container, list):
        container.append(container[key])
    else:
        container[key] = rng.choice(INTERESTING)
    return json.dumps(doc).encode()[:max_size]


if __name__ == "__main__":
    harness.main("report", check, (ReportError,), seeds.report_json, mutate)
