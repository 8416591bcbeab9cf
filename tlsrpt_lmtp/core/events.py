"""The report events (docs/events.md): their types, and pure functions from reports to them.

Field names are a contract with people's SIEM queries: add fields, never rename them, and
bump SCHEMA when a change is not backwards compatible. Each type lists its fields in the
order the JSON object has them (``Event.to_dict``, eventbase.py); ``timestamp`` is added by
the sink.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, NamedTuple, TypeVar

import orjson

from tlsrpt_lmtp.core.eventbase import ABSENT as ABSENT
from tlsrpt_lmtp.core.eventbase import PART, values
from tlsrpt_lmtp.core.eventbase import SCHEMA as SCHEMA
from tlsrpt_lmtp.core.eventbase import Absent as Absent
from tlsrpt_lmtp.core.eventbase import Event as Event
from tlsrpt_lmtp.core.model import FailureDetail, MailMeta, Report
from tlsrpt_lmtp.core.names import mail_domain

if TYPE_CHECKING:
    from tlsrpt_lmtp.core.dkim import DkimVerdict

E = TypeVar("E", bound=Event)


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


class ReportRef(NamedTuple):
    """The fields every ``tlsrpt.*`` event starts with: the report it is about (one value
    that all the events of a report share)."""

    report_id: str | None
    organization_name: str | None
    date_range_start: str | None
    date_range_end: str | None
    archive_id: str | None
    source: str


def report_ref(report: Report | None, archive_id: str | None, source: str) -> ReportRef:
    """The report fields of an event about ``report`` (all null without one)."""
    if report is None:
        return ReportRef(None, None, None, None, archive_id, source)
    return ReportRef(
        report.report_id,
        report.organization_name,
        iso(report.date_range_start),
        iso(report.date_range_end),
        archive_id,
        source,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportEvent(Event):
    """A ``tlsrpt.*`` event: the report's fields, then the kind's own."""

    report: ReportRef = field(metadata=PART)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportReceived(ReportEvent):
    EVENT: ClassVar[str] = "tlsrpt.report"

    contact_info: str | None
    report_domain: str | None
    submitter: str | None
    policy_count: int
    total_successful_session_count: int
    total_failure_session_count: int
    duplicate: bool
    warnings: tuple[str, ...]
    dkim_result: str | None
    dkim_domain: str | None
    dkim_aligned: bool | None
    dkim_reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyReported(ReportEvent):
    EVENT: ClassVar[str] = "tlsrpt.policy"

    policy_type: str
    policy_domain: str | None
    policy_string: tuple[str, ...]
    mx_host: tuple[str, ...]
    total_successful_session_count: int
    total_failure_session_count: int


class PolicyRef(NamedTuple):
    """The policy a failure detail is about (one value its failure events share)."""

    policy_type: str
    policy_domain: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureReported(ReportEvent):
    """``detail``: the failure detail as the parser made it (its fields are the event's)."""

    EVENT: ClassVar[str] = "tlsrpt.failure"

    policy: PolicyRef = field(metadata=PART)
    detail: FailureDetail = field(metadata=PART)


@dataclass(frozen=True, slots=True, kw_only=True)
class Invalid(ReportEvent):
    """``dkim_*``: only on a report refused by ``[dkim] policy = "enforce"``."""

    EVENT: ClassVar[str] = "tlsrpt.invalid"

    reason: str
    from_: str | None
    subject: str | None
    message_id: str | None
    warnings: tuple[str, ...]
    dkim_result: str | Absent | None = ABSENT
    dkim_domain: str | Absent | None = ABSENT
    dkim_aligned: bool | Absent | None = ABSENT
    dkim_reason: str | Absent | None = ABSENT


class EventIds:
    """Stable ``event_id``s for one group of events, handed out in order: a hash of where
    they come from (the archive id and the report's identity, in ``scope``), each event's
    position and its name, so that writing the same message's events again (after a crash
    or a sink failure) repeats the same ids."""

    def __init__(self, *scope: object) -> None:
        base = "\x1f".join(map(str, scope)) + "\x1e"
        # hashed once: each id copies this state and adds its position and name
        self._prefix = hashlib.blake2b(base.encode("utf-8", "surrogatepass"), digest_size=16)
        self._position = 0

    def __call__(self, name: str) -> str:
        return self.take([name])[0]

    def take(self, names: list[str]) -> list[str]:
        """The ids of the next events, named ``names``."""
        ids = []
        prefix, start = self._prefix, self._position
        self._position += len(names)
        for offset, name in enumerate(names):
            digest = prefix.copy()
            digest.update(b"%d\x1e%s" % (start + offset, name.encode()))
            ids.append(digest.hexdigest())
        return ids


def stamp(events: list[E], *scope: object) -> list[E]:
    """The events with their ``event_id`` (``EventIds(*scope)``, by position in the list);
    an event that has one keeps it."""
    made = EventIds(*scope).take([event.EVENT for event in events])
    return [
        event if event.event_id is not ABSENT else replace(event, event_id=new)
        for event, new in zip(events, made, strict=True)
    ]


def check_encodable(events: list[Event]) -> None:
    """Raise (TypeError, orjson.JSONEncodeError) if a sink could not render an event, so that
    the message is quarantined instead of failing at the sink forever. Every value is
    checked, in one call (``eventbase.values``)."""
    orjson.dumps(values(events), default=str)


def submitter_of(report: Report, meta: MailMeta) -> str | None:
    if meta.submitter:
        return meta.submitter
    return mail_domain(report.contact_info)


def _no_id() -> Absent:
    return ABSENT


def report_events(
    report: Report,
    meta: MailMeta,
    *,
    archive_id: str,
    source: str,
    duplicate: bool,
    dkim: DkimVerdict | None = None,
    ids: EventIds | None = None,
) -> list[Event]:
    """One tlsrpt.report event, then (unless a duplicate) its policies and failures.
    ``ids``: their event_ids, given as they are made (as ``stamp`` would, without a copy)."""
    ref = report_ref(report, archive_id, source)
    new_id: Callable[[], str | Absent] = _no_id
    if ids is not None:
        names = [ReportReceived.EVENT]
        for p in () if duplicate else report.policies:
            names += [PolicyReported.EVENT] + [FailureReported.EVENT] * len(p.failure_details)
        new_id = iter(ids.take(names)).__next__
    events: list[Event] = [
        ReportReceived(
            event_id=new_id(),
            report=ref,
            contact_info=report.contact_info,
            report_domain=meta.report_domain,
            submitter=submitter_of(report, meta),
            policy_count=len(report.policies),
            total_successful_session_count=report.total_successful_session_count,
            total_failure_session_count=report.total_failure_session_count,
            duplicate=duplicate,
            warnings=tuple(report.warnings),
            dkim_result=dkim.result.value if dkim else None,
            dkim_domain=dkim.domain if dkim else None,
            dkim_aligned=dkim.aligned if dkim else None,
            dkim_reason=dkim.reason if dkim else None,
        )
    ]
    if duplicate:
        return events
    for p in report.policies:
        events.append(
            PolicyReported(
                event_id=new_id(),
                report=ref,
                policy_type=p.policy_type,
                policy_domain=p.policy_domain,
                policy_string=tuple(p.policy_string),
                mx_host=tuple(p.mx_host),
                total_successful_session_count=p.total_successful_session_count,
                total_failure_session_count=p.total_failure_session_count,
            )
        )
        policy = PolicyRef(p.policy_type, p.policy_domain)
        events.extend(
            FailureReported(event_id=new_id(), report=ref, policy=policy, detail=d)
            for d in p.failure_details
        )
    return events


def invalid_event(
    reason: str,
    meta: MailMeta,
    *,
    archive_id: str | None,
    source: str,
    report: Report | None = None,
    dkim: DkimVerdict | None = None,
    warnings: tuple[str, ...] = (),
) -> Invalid:
    """``report`` and ``dkim``: a report refused by ``[dkim] policy = "enforce"``;
    ``warnings``: what had to be changed in the mail's headers (``text-replaced``, ...)."""
    return Invalid(
        report=report_ref(report, archive_id, source),
        reason=reason,
        from_=meta.from_,
        subject=meta.subject,
        message_id=meta.message_id,
        warnings=tuple(warnings),
        dkim_result=dkim.result.value if dkim else ABSENT,
        dkim_domain=dkim.domain if dkim else ABSENT,
        dkim_aligned=dkim.aligned if dkim else ABSENT,
        dkim_reason=dkim.reason if dkim else ABSENT,
    )
