"""Events for tests: an ``emit`` that keeps them as the event log has them (plain dicts),
typed events for the sink tests, and ``plain``: an event as the sinks write it."""

from __future__ import annotations

from typing import Any

import orjson

from tlsrpt_lmtp.core.events import Event, FailureReported, PolicyRef, PolicyReported, ReportRef
from tlsrpt_lmtp.core.model import FailureDetail


def report_ref(**over: Any) -> ReportRef:
    ref = ReportRef(
        report_id="r1",
        organization_name="Example Inc.",
        date_range_start="2026-11-29T00:00:00Z",
        date_range_end="2026-11-29T23:59:59Z",
        archive_id="a" * 64,
        source="lmtp",
    )
    return ref._replace(**over)


def failure_event(*, report_id: str = "r1", source: str = "lmtp", **over: Any) -> FailureReported:
    """A tlsrpt.failure; ``over``: fields of the failure detail."""
    detail = FailureDetail(
        result_type="certificate-expired",
        sending_mta_ip="192.0.2.1",
        receiving_mx_hostname="mx.example.org",
        receiving_mx_helo=None,
        receiving_ip="2001:DB8::25",
        failed_session_count=3,
        additional_information=None,
        failure_reason_code="X509_V_ERR_CERT_HAS_EXPIRED",
    )._replace(**over)
    return FailureReported(
        report=report_ref(report_id=report_id, source=source),
        policy=PolicyRef("sts", "example.org"),
        detail=detail,
    )


def policy_event(
    *, report_id: str = "r1", policy_string: tuple[str, ...] = ("mode: enforce",)
) -> PolicyReported:
    return PolicyReported(
        report=report_ref(report_id=report_id),
        policy_type="sts",
        policy_domain="example.org",
        policy_string=policy_string,
        mx_host=("mx.example.org",),
        total_successful_session_count=10,
        total_failure_session_count=3,
    )


def plain(event: Event) -> dict[str, Any]:
    """The event's JSON object as a reader of the event log sees it (no time stamp)."""
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(event.to_dict()))
    return loaded


class Recorder:
    """An ``emit`` that keeps the events, as the event log has them (``plain``)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: Event) -> None:
        self.events.append(plain(event))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]
