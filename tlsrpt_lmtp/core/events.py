"""The event schema (docs/events.md): pure functions from reports to event dicts.

Field names are a contract with people's SIEM queries: add fields, never rename them, and
bump SCHEMA when a change is not backwards compatible. ``timestamp`` is added by the sink.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from tlsrpt_lmtp.core.model import MailMeta, Policy, Report
from tlsrpt_lmtp.core.names import mail_domain

if TYPE_CHECKING:
    from tlsrpt_lmtp.core.dkim import DkimVerdict

SCHEMA = 1
Event = dict[str, Any]


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def stamp(events: list[Event], *scope: object) -> list[Event]:
    """Give each event its stable ``event_id``: a hash of where it comes from (the archive id
    and the report's identity, in ``scope``) and its position, so that writing the same
    message's events again (after a crash or a sink failure) repeats the same ids."""
    base = "\x1f".join(str(part) for part in scope)
    for position, event in enumerate(events):
        digest = hashlib.blake2b(
            f"{base}\x1e{position}\x1e{event['event']}".encode("utf-8", "surrogatepass"),
            digest_size=16,
        )
        event.setdefault("event_id", digest.hexdigest())
    return events


def check_encodable(events: list[Event]) -> None:
    """Raise (TypeError, orjson.JSONEncodeError) if a sink could not render an event, so that
    the message is quarantined instead of failing at the sink forever."""
    for event in events:
        orjson.dumps(event, default=str)


def _common(report: Report | None, archive_id: str | None, source: str) -> Event:
    return {
        "report_id": report.report_id if report else None,
        "organization_name": report.organization_name if report else None,
        "date_range_start": iso(report.date_range_start) if report else None,
        "date_range_end": iso(report.date_range_end) if report else None,
        "archive_id": archive_id,
        "source": source,
    }


def submitter_of(report: Report, meta: MailMeta) -> str | None:
    if meta.submitter:
        return meta.submitter
    return mail_domain(report.contact_info)


def dkim_fields(verdict: DkimVerdict | None) -> Event:
    """The report's DKIM verdict (all null when verification is off)."""
    return {
        "dkim_result": verdict.result.value if verdict else None,
        "dkim_domain": verdict.domain if verdict else None,
        "dkim_aligned": verdict.aligned if verdict else None,
        "dkim_reason": verdict.reason if verdict else None,
    }


def report_events(
    report: Report,
    meta: MailMeta,
    *,
    archive_id: str,
    source: str,
    duplicate: bool,
    dkim: DkimVerdict | None = None,
) -> list[Event]:
    """One tlsrpt.report event, then (unless a duplicate) its policies and failures."""
    common = _common(report, archive_id, source)
    events: list[Event] = [
        {
            "event": "tlsrpt.report",
            **common,
            "contact_info": report.contact_info,
            "report_domain": meta.report_domain,
            "submitter": submitter_of(report, meta),
            "policy_count": len(report.policies),
            "total_successful_session_count": report.total_successful_session_count,
            "total_failure_session_count": report.total_failure_session_count,
            "duplicate": duplicate,
            "warnings": list(report.warnings),
            **dkim_fields(dkim),
        }
    ]
    if duplicate:
        return events
    for policy in report.policies:
        events.append(_policy_event(policy, common))
        events.extend(_failure_events(policy, common))
    return events


def _policy_event(p: Policy, common: Event) -> Event:
    return {
        "event": "tlsrpt.policy",
        **common,
        "policy_type": p.policy_type,
        "policy_domain": p.policy_domain,
        "policy_string": list(p.policy_string),
        "mx_host": list(p.mx_host),
        "total_successful_session_count": p.total_successful_session_count,
        "total_failure_session_count": p.total_failure_session_count,
    }


def _failure_events(p: Policy, common: Event) -> list[Event]:
    return [
        {
            "event": "tlsrpt.failure",
            **common,
            "policy_type": p.policy_type,
            "policy_domain": p.policy_domain,
            "result_type": d.result_type,
            "sending_mta_ip": d.sending_mta_ip,
            "receiving_mx_hostname": d.receiving_mx_hostname,
            "receiving_mx_helo": d.receiving_mx_helo,
            "receiving_ip": d.receiving_ip,
            "failed_session_count": d.failed_session_count,
            "additional_information": d.additional_information,
            "failure_reason_code": d.failure_reason_code,
        }
        for d in p.failure_details
    ]


def invalid_event(
    reason: str,
    meta: MailMeta,
    *,
    archive_id: str | None,
    source: str,
    report: Report | None = None,
    dkim: DkimVerdict | None = None,
    warnings: tuple[str, ...] = (),
) -> Event:
    """``report`` and ``dkim``: a report refused by ``[dkim] policy = "enforce"``;
    ``warnings``: what had to be changed in the mail's headers (``text-replaced``, ...)."""
    event: Event = {
        "event": "tlsrpt.invalid",
        **_common(report, archive_id, source),
        "reason": reason,
        "from": meta.from_,
        "subject": meta.subject,
        "message_id": meta.message_id,
        "warnings": list(warnings),
    }
    if dkim is not None:
        event.update(dkim_fields(dkim))
    return event
