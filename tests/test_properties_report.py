"""Properties of the report parser (tlsrpt_lmtp.core.report) over generated documents.

Documented behaviour: ``parse_report`` / ``report_from_json`` return a Report or raise
ReportError (a body that cannot identify a report); every other deviation becomes a warning.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from tests.support import properties as p
from tlsrpt_lmtp.core.model import Report
from tlsrpt_lmtp.core.report import ReportError, parse_report, report_from_json
from tlsrpt_lmtp.core.sanitize import MAX_COUNT


def check_report(report: Report, doc: Any) -> None:
    """What holds for every report the parser returns."""
    assert report.report_id
    # docs/events.md, count-clamped: counts and their sums stop at 2**53 - 1
    assert report.total_successful_session_count == min(
        sum(x.total_successful_session_count for x in report.policies), MAX_COUNT
    )
    assert report.total_failure_session_count == min(
        sum(x.total_failure_session_count for x in report.policies), MAX_COUNT
    )
    raw = doc.get("policies")
    assert len(report.policies) == (len(raw) if isinstance(raw, list) else 1)
    for policy in report.policies:
        assert type(policy.total_successful_session_count) is int
        assert type(policy.total_failure_session_count) is int
        assert 0 <= policy.total_successful_session_count <= MAX_COUNT
        assert 0 <= policy.total_failure_session_count <= MAX_COUNT
        detail_sum = min(sum(d.failed_session_count for d in policy.failure_details), MAX_COUNT)
        assert all(type(d.failed_session_count) is int for d in policy.failure_details)
        assert all(0 <= d.failed_session_count <= MAX_COUNT for d in policy.failure_details)
        if policy.failure_details and detail_sum != policy.total_failure_session_count:
            assert "failure-count-mismatch" in report.warnings
    assert len(report.warnings) == len(set(report.warnings))


def parse_or_refuse(doc: Any) -> Report | None:
    try:
        return report_from_json(doc, header_domain="example.com")
    except ReportError:
        return None


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_report_or_refused(data: bytes) -> None:
    try:
        parse_report(data)
    except ReportError as exc:
        assert str(exc)


@given(p.json_values())
def test_any_json_document_is_a_report_or_refused(doc: Any) -> None:
    try:
        report = parse_report(json.dumps(doc).encode())
    except ReportError:
        return
    check_report(report, doc)


@given(p.report_docs().flatmap(lambda d: st.tuples(st.just(d), p.encodings(d))))
def test_report_shaped_documents_parse_consistently(case: tuple[dict[str, Any], bytes]) -> None:
    doc, body = case
    report = parse_or_refuse(doc)
    try:
        from_bytes = parse_report(body, header_domain="example.com")
    except ReportError:
        assert report is None
        return
    assert report is not None
    check_report(from_bytes, doc)
    # The same document read from any encoding gives the same report (bar encoding warnings).
    assert from_bytes.policies == report.policies
    assert from_bytes.report_id == report.report_id


@given(p.report_docs())
def test_valid_reports_keep_every_count(doc: dict[str, Any]) -> None:
    """A report with plain integer counts keeps them exactly."""
    report = parse_or_refuse(doc)
    if report is None:
        return
    check_report(report, doc)


@given(p.report_docs(counts=p.any_counts | p.any_text))
@example(
    {
        "report-id": "x",
        "date-range": {"start-datetime": "2024-01-01T00:00:00Z", "end-datetime": "2024-01-02"},
        "policies": [{"summary": {"total-successful-session-count": "\u00b2"}}],
    }
)
def test_counts_in_any_form_are_read_or_refused(doc: dict[str, Any]) -> None:
    """Counts as any JSON value or string (here: non-ASCII digits) never escape as ValueError."""
    report = parse_or_refuse(doc)
    if report is not None:
        check_report(report, doc)


@given(p.report_docs(dates=p.datetimes_text(datetime.min, datetime.max) | p.any_text))
@example(
    {
        "report-id": "x",
        "date-range": {
            "start-datetime": "0001-01-01T00:00:00+01:00",
            "end-datetime": "9999-12-31T23:59:59-01:00",
        },
        "policies": [],
    }
)
def test_dates_anywhere_in_the_calendar_are_read_or_refused(doc: dict[str, Any]) -> None:
    """A date-time the calendar can hold but UTC cannot (year 1 at +01:00) is refused."""
    report = parse_or_refuse(doc)
    if report is not None:
        check_report(report, doc)
