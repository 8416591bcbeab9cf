"""Properties of event building (tlsrpt_lmtp.core.events) for messages as they arrive.

Each case is a whole report mail (generated report JSON, gzipped, in an attachment, with
RFC 2047 headers) read by ``extract``, then turned into events the way the pipeline does:
``report_events`` per report, ``invalid_event`` per error. Every event must encode as the
sinks write it (orjson, UTF-8), totals must add up, and the number of events is bounded by
the report's size.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from tests.support import factories as f
from tests.support import properties as p
from tests.support.events import plain
from tlsrpt_lmtp.core.events import Event, invalid_event, report_events
from tlsrpt_lmtp.core.mime import extract
from tlsrpt_lmtp.core.sanitize import MAX_COUNT

COUNT_FIELDS = ("total_successful_session_count", "total_failure_session_count")


def encoded_word(text: str) -> str:
    """``text`` as one RFC 2047 word; UTF-7 carries any code point, lone surrogates too."""
    raw = text.encode("utf-7")
    return f"=?utf-7?b?{base64.b64encode(raw).decode()}?="


def report_mail(doc: Any, subject: str, domain: str) -> bytes:
    body = json.dumps(doc).encode()  # lone surrogates travel as \ud800 escapes
    headers = [
        "From: noreply@reporter.example",
        f"Subject: {encoded_word(subject)}",
        "Message-ID: <prop-1@reporter.example>",
        f"TLS-Report-Domain: {encoded_word(domain)}",
        "TLS-Report-Submitter: reporter.example",
    ]
    return f.raw_email(f.attachment_part(gzip.compress(body)), headers=headers)


def events_of(raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """The events the pipeline emits for ``raw`` (as the sinks write them: the JSON
    encoding fails on what a sink could not write), and the number of failure details read."""
    extracted = extract(raw)
    key = "0" * 64
    events: list[Event] = [
        invalid_event(e, extracted.meta, archive_id=key, source="lmtp") for e in extracted.errors
    ]
    details = 0
    for report in extracted.reports:
        events += report_events(
            report, extracted.meta, archive_id=key, source="lmtp", duplicate=False
        )
        details += sum(len(x.failure_details) for x in report.policies)
    return [plain(e) for e in events], details


def check_events(events: list[dict[str, Any]], details: int) -> None:
    reports = [e for e in events if e["event"] == "tlsrpt.report"]
    policies = [e for e in events if e["event"] == "tlsrpt.policy"]
    failures = [e for e in events if e["event"] == "tlsrpt.failure"]
    assert len(failures) <= details
    assert len(events) == len(reports) + len(policies) + len(failures) + sum(
        e["event"] == "tlsrpt.invalid" for e in events
    )
    for event in events:
        orjson.dumps(event).decode("utf-8")  # what the sinks write
    for report in reports:
        mine = [x for x in policies if x["report_id"] == report["report_id"]]
        assert len(mine) == report["policy_count"]
        for field in COUNT_FIELDS:
            # docs/events.md, count-clamped: sums stop at 2**53 - 1 too
            assert report[field] == min(sum(x[field] for x in mine), MAX_COUNT)


mails = st.builds(report_mail, p.report_docs(), p.plain_text, p.plain_text)


@given(mails)
def test_events_of_any_report_mail_encode_and_add_up(raw: bytes) -> None:
    events, details = events_of(raw)
    check_events(events, details)


@given(p.report_docs())
def test_failure_events_add_up_to_the_details(doc: dict[str, Any]) -> None:
    """A policy's failure events add up to its failure count, or the report says they do not
    (``failure-count-mismatch``). A policy without failure details (RFC 8460 makes them
    optional) has nothing to add up: the summary alone is no mismatch."""
    events, _ = events_of(report_mail(doc, "s", "example.com"))
    [report] = [e for e in events if e["event"] == "tlsrpt.report"] or [None]
    if report is None:
        return
    policies: list[list[Any]] = []  # [policy event, its failure events' sum, their number]
    for e in events:  # each policy's failure events follow it
        if e["event"] == "tlsrpt.policy":
            policies.append([e, 0, 0])
        elif e["event"] == "tlsrpt.failure":
            policies[-1][1] += e["failed_session_count"]
            policies[-1][2] += 1
    for policy, failed, details in policies:
        if details and min(failed, MAX_COUNT) != policy["total_failure_session_count"]:
            assert "failure-count-mismatch" in report["warnings"]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


_SURROGATE_DOC = f.report_dict(org="Example \ud800 Inc.")


@given(st.builds(report_mail, p.report_docs(text=p.any_text), p.any_text, p.any_text))
@example(report_mail(f.report_dict(), "\ud800", "example.com"))
@example(report_mail(_SURROGATE_DOC, "subject", "example.com"))
def test_events_encodable_for_any_text(raw: bytes) -> None:
    """Text that cannot be encoded (lone surrogates, NUL) is replaced before it is emitted."""
    events, details = events_of(raw)
    check_events(events, details)
    for event in events:
        assert not any("\x00" in s for s in _strings(event))


_HUGE = f.report_dict(f.sts_policy(success=2**63 - 1), f.sts_policy(success=2**63 - 1))


@given(
    st.builds(report_mail, p.report_docs(counts=p.any_counts), st.just("s"), st.just("d.example"))
)
@example(report_mail(f.report_dict(f.sts_policy(success=2**63)), "s", "d.example"))
@example(report_mail(_HUGE, "s", "d.example"))
def test_events_encodable_for_any_count(raw: bytes) -> None:
    """Counts are clamped (2**53 - 1, what every SIEM holds) and so are their sums."""
    events, details = events_of(raw)
    check_events(events, details)
    for event in events:
        counts = [event.get(k) for k in (*COUNT_FIELDS, "failed_session_count")]
        assert all(0 <= c <= MAX_COUNT for c in counts if c is not None)
