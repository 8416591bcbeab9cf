"""Keeping alerts scarce and trustworthy (pure): whose domains, which reports, how many.

Anyone can mail a report claiming to be anyone, about any domain. So, before the rules:
``screen`` keeps the policies of the operator's own domains (``[alerts] domains``) and, with
``require_dkim_aligned``, only reports whose DKIM verdict is authentic (RFC 8460 §3). After
the rules, the hook sends at most ``max_alerts_per_report`` per report (``by_priority``: the
most severe, then the most failed sessions) and ``max_alerts_per_period`` per period and
bucket; what is held back is counted in ``tlsrpt.alert_held`` (event log only) and, when a
cap is reached, in ONE summary alert (``summary_event``), delivered like an alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from tlsrpt_lmtp.alerts.advice import name, quoted
from tlsrpt_lmtp.alerts.config import SEVERITIES, AlertsConfig
from tlsrpt_lmtp.alerts.events import AlertHeld, AlertRaised
from tlsrpt_lmtp.alerts.rules import Alert
from tlsrpt_lmtp.core.events import iso, report_ref
from tlsrpt_lmtp.core.model import Report

if TYPE_CHECKING:
    from tlsrpt_lmtp.core.dkim import DkimVerdict

CAP_RULE = "alert-cap"
SHOWN_DOMAINS = 20  # domains listed in an event; the count says how many there were


def domain_matches(domain: str, patterns: Sequence[str]) -> bool:
    """``example.org`` matches itself; ``*.example.org`` every name below it (not itself)."""
    d = domain.strip().lower().rstrip(".")
    return any(d.endswith(p[1:]) if p.startswith("*.") else d == p for p in patterns)


def bucket(dkim: DkimVerdict | None) -> str:
    """Whose budget an alert spends: unsigned reports can never spend the signed ones'."""
    return "dkim-aligned" if dkim is not None and dkim.authentic else "other"


@dataclass(frozen=True, slots=True)
class Screened:
    report: Report  # the policies alerts may be raised for
    not_ours: tuple[str, ...] = ()  # failing policy domains outside [alerts] domains
    not_aligned: tuple[str, ...] = ()  # failing domains of a report that is not DKIM-aligned


def screen(report: Report, config: AlertsConfig, dkim: DkimVerdict | None) -> Screened:
    failing = {
        p.policy_domain
        for p in report.policies
        if p.policy_domain and p.total_failure_session_count > 0
    }
    not_ours: set[str] = set()
    if config.domains:
        not_ours = {d for d in failing if not domain_matches(d, config.domains)}
    unaligned = config.require_dkim_aligned and bucket(dkim) != "dkim-aligned"
    not_aligned = failing - not_ours if unaligned else set()
    kept = () if unaligned else report.policies
    if not_ours:
        kept = tuple(p for p in kept if p.policy_domain not in not_ours)
    return Screened(
        replace(report, policies=kept), tuple(sorted(not_ours)), tuple(sorted(not_aligned))
    )


def by_priority(alerts: Sequence[Alert]) -> list[Alert]:
    return sorted(
        alerts,
        key=lambda a: (-SEVERITIES.index(a.severity), -a.failed_session_count, a.domain),
    )


@dataclass(slots=True)
class Held:
    """What one report did not alert for, and why."""

    not_ours: tuple[str, ...] = ()
    not_aligned: tuple[str, ...] = ()
    over_report_cap: list[Alert] = field(default_factory=list)
    over_period_cap: list[Alert] = field(default_factory=list)

    @property
    def capped(self) -> list[Alert]:
        return self.over_report_cap + self.over_period_cap

    def __bool__(self) -> bool:
        return bool(self.not_ours or self.not_aligned or self.capped)


def _domains(names: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(set(names))[:SHOWN_DOMAINS])


def held_event(
    report: Report, archive_id: str, source: str, held: Held, dkim: DkimVerdict | None
) -> AlertHeld:
    """tlsrpt.alert_held: the event log's record of what was not alerted (never delivered)."""
    capped = [a.domain for a in held.capped]
    reasons = {
        "not-our-domain": len(held.not_ours),
        "not-dkim-aligned": len(held.not_aligned),
        "over-report-cap": len(held.over_report_cap),
        "over-period-cap": len(held.over_period_cap),
    }
    return AlertHeld(
        report=report_ref(report, archive_id, source),
        reasons={k: v for k, v in reasons.items() if v},
        not_our_domains=_domains(held.not_ours),
        not_aligned_domains=_domains(held.not_aligned),
        capped_domains=_domains(capped),
        dkim_authentic=None if dkim is None else dkim.authentic,
    )


def summary_event(
    report: Report,
    archive_id: str,
    source: str,
    held: Held,
    config: AlertsConfig,
    *,
    kind: str,
    period_end: datetime,
) -> AlertRaised:
    """The one tlsrpt.alert (rule alert-cap) sent when a cap is reached."""
    capped = held.capped
    severity = max((a.severity for a in capped), key=SEVERITIES.index, default="warning")
    domains = sorted({a.domain for a in capped})
    shown = ", ".join(name(d) for d in domains[:5])
    more = f" and {len(domains) - 5} more" if len(domains) > 5 else ""
    limits = []
    if held.over_report_cap:
        limits.append(
            f"{len(held.over_report_cap)} over the limit of {config.max_alerts_per_report}"
            " per report"
        )
    if held.over_period_cap:
        limits.append(
            f"{len(held.over_period_cap)} over the limit of {config.max_alerts_per_period}"
            f" per {_duration(config.alert_period)} for {kind} reports, which lasts until"
            f" {iso(period_end)}"
        )
    message = (
        f"Alert cap reached: {len(capped)} alerts held back ({'; '.join(limits)}), for"
        f" {shown}{more}, from a report by {quoted(report.organization_name, 60)}"
        f" ({kind}). Every report is stored: see the tlsrpt.alert_held events and"
        " `tlsrpt-lmtp summary`. Many alerts at once from one reporter can be a spray of"
        " forged reports: consider [alerts] domains and require_dkim_aligned."
    )
    return AlertRaised(
        report=report_ref(report, archive_id, source),
        severity=severity,
        rule=CAP_RULE,
        rules=(CAP_RULE,),
        domain=None,
        result_type=None,
        message=message,
        failed_session_count=sum(a.failed_session_count for a in capped),
        receiving_mx=(),
        policy_type=None,
        policy_mode=None,
        repeats_suppressed=0,
        held_count=len(capped),
        held_domains=tuple(domains[:SHOWN_DOMAINS]),
    )


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
