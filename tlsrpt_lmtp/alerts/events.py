"""The alert events (docs/alerts.md): ``tlsrpt.alert``, ``tlsrpt.alert_held`` and
``tlsrpt.alert_undelivered``, each one frozen type (see core/eventbase.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from tlsrpt_lmtp.core.events import ABSENT, Absent, ReportEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRaised(ReportEvent):
    """One alert. Some fields are on one sort of alert only: ``failure_reason_codes`` on the
    rules' alerts, ``since`` on the digest's findings, ``held_count`` and ``held_domains`` on
    the summary of a cap (rule ``alert-cap``)."""

    EVENT: ClassVar[str] = "tlsrpt.alert"

    severity: str
    rule: str
    rules: tuple[str, ...]
    domain: str | None
    result_type: str | None
    message: str
    failed_session_count: int
    receiving_mx: tuple[str, ...]
    policy_type: str | None
    policy_mode: str | None
    failure_reason_codes: tuple[str, ...] | Absent = ABSENT
    since: str | Absent | None = ABSENT
    repeats_suppressed: int
    held_count: int | Absent = ABSENT
    held_domains: tuple[str, ...] | Absent = ABSENT


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertHeld(ReportEvent):
    EVENT: ClassVar[str] = "tlsrpt.alert_held"

    reasons: Mapping[str, int]
    not_our_domains: tuple[str, ...]
    not_aligned_domains: tuple[str, ...]
    capped_domains: tuple[str, ...]
    dkim_authentic: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertUndelivered(ReportEvent):
    """An alert a channel gave up on; its report fields are copied from the alert."""

    EVENT: ClassVar[str] = "tlsrpt.alert_undelivered"

    severity: str
    rule: str
    domain: str | None
    result_type: str | None
    channel: str
    reason: str
