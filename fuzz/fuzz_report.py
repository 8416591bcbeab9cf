"""Fuzz target: report JSON bytes -> parse_report -> events, every event encodable.

Documented: ReportError (the body is not a usable report). Checked beyond "no other
exception": totals add up, a detail/summary mismatch is flagged, the events encode as JSON
and UTF-8, their number and size stay linear in the input.
"""

from __future__ import annotations

import harness
import seeds

with harness.instrumented():
    import orjson

    from tlsrpt_lmtp.events import report_events
    from tlsrpt_lmtp.model import MailMeta
    from tlsrpt_lmtp.report import ReportError, parse_report

META = MailMeta(report_domain="example.com", submitter="reporter.example")


def check(data: bytes) -> None:
    report = parse_report(data, header_domain="example.com")
    policies = report.policies
    assert report.total_successful_session_count == sum(
        p.total_successful_session_count for p in policies
    )
    details = 0
    for p in policies:
        details += len(p.failure_details)
        detail_sum = sum(d.failed_session_count for d in p.failure_details)
        assert p.total_successful_session_count >= 0 and p.total_failure_session_count >= 0
        if p.failure_details and detail_sum != p.total_failure_session_count:
            assert "failure-count-mismatch" in report.warnings
    events = report_events(report, META, archive_id="0" * 64, source="fuzz", duplicate=False)
    assert len(events) <= 1 + len(policies) + details
    for event in events:
        encoded = orjson.dumps(event)
        encoded.decode("utf-8")  # what the sinks write
        assert len(encoded) <= 4096 + 8 * len(data), (len(encoded), len(data))


if __name__ == "__main__":
    harness.main("report", check, (ReportError,), seeds.report_json)
