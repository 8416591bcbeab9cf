"""The alert rules: pure functions from a newly stored report and its history to alerts.

- enforce-failure (critical): failed sessions under an STS policy in mode enforce, where
  senders do not deliver over the failing connection;
- result-type (warning): failures of a configured, actionable result type, in any mode;
- new-result-type (warning): a result type never reported before for the domain;
- failure-rate (warning): the failed share of the domain's sessions that day is above the
  threshold (with enough sessions to mean something).

Alerts of one report with the same (domain, cause) are merged into the most severe one; the
cause is the result type, or ``failure-rate``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from tlsrpt_lmtp.alerts.advice import advice, name, quoted, safe
from tlsrpt_lmtp.alerts.config import SEVERITIES, AlertsConfig
from tlsrpt_lmtp.core.model import Policy, Report

RATE_CAUSE = "failure-rate"
_RULE_ORDER = ("enforce-failure", "result-type", "new-result-type", "failure-rate")


@dataclass(frozen=True, slots=True)
class History:
    """What the store knew: result types seen per domain before this report, and the
    (successful, failed) sessions per (domain, day) including this report."""

    seen: Mapping[str, frozenset[str]] = field(default_factory=dict)
    days: Mapping[tuple[str, date], tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Alert:
    severity: str
    rule: str  # the most severe rule that fired
    rules: tuple[str, ...]  # every rule that fired for this (domain, cause)
    domain: str
    result_type: str | None
    message: str
    failed_session_count: int
    receiving_mx: tuple[str, ...]
    policy_type: str
    policy_mode: str | None
    reasons: tuple[str, ...] = ()  # the sender's failure-reason-codes: data, never in message

    @property
    def cause(self) -> str:
        if self.rule == RATE_CAUSE:
            return RATE_CAUSE
        return self.result_type or "unattributed"


def sts_mode(policy: Policy) -> str | None:
    """The mode line of an STS policy string (normalised to 'mode: value' by the parser)."""
    if policy.policy_type != "sts":
        return None
    for line in policy.policy_string:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "mode":
            return value.strip().lower()
    return None


@dataclass(slots=True)
class _Bucket:
    sessions: int = 0
    mx: set[str] = field(default_factory=set)
    reasons: set[str] = field(default_factory=set)


def _buckets(p: Policy) -> dict[str | None, _Bucket]:
    """Failed sessions per result type; None holds what the summary counts beyond details."""
    out: dict[str | None, _Bucket] = defaultdict(_Bucket)
    for d in p.failure_details:
        b = out[d.result_type]
        b.sessions += d.failed_session_count
        if d.receiving_mx_hostname or d.receiving_ip:
            b.mx.add(d.receiving_mx_hostname or d.receiving_ip or "")
        if d.failure_reason_code:
            b.reasons.add(d.failure_reason_code)
    detailed = sum(b.sessions for b in out.values())
    if p.total_failure_session_count > detailed:
        out[None].sessions += p.total_failure_session_count - detailed
    return out


def _why(rules: Sequence[str], domain: str, mode: str | None) -> str:
    parts = []
    if "enforce-failure" in rules:
        parts.append(
            f"The MTA-STS policy of {domain} is in mode enforce: senders do not deliver over"
            " a failing connection (they try another MX, then keep the mail queued)."
        )
    elif mode == "testing" and "result-type" in rules:
        parts.append(
            "The MTA-STS policy is in mode testing: mail still flows, but would not under enforce."
        )
    if "new-result-type" in rules:
        parts.append(f"This result type was never reported for {domain} before.")
    return " ".join(parts)


def evaluate(report: Report, history: History, config: AlertsConfig) -> list[Alert]:
    found: dict[tuple[str, str | None], Alert] = {}
    org = quoted(report.organization_name, 100)
    for p in report.policies:
        domain = p.policy_domain
        if not domain or domain in config.ignore_domains or p.total_failure_session_count <= 0:
            continue
        mode = sts_mode(p)
        d = name(domain)
        for result_type, b in _buckets(p).items():
            rules = []
            if "enforce-failure" in config.rules and mode == "enforce":
                rules.append("enforce-failure")
            if "result-type" in config.rules and result_type in config.result_types:
                rules.append("result-type")
            if (
                "new-result-type" in config.rules
                and result_type is not None
                and result_type not in history.seen.get(domain, frozenset())
            ):
                rules.append("new-result-type")
            if not rules:
                continue
            what = (
                f"{d}: {b.sessions} failed sessions"
                + (f" with {name(result_type)}" if result_type else " without failure details")
                + f" ({safe(p.policy_type, 30)}{'/' + safe(mode, 20) if mode else ''}"
                f" policy), reported by {org} for {report.date_range_start.date().isoformat()}."
            )
            text = " ".join(
                t
                for t in (
                    what,
                    _why(rules, d, mode),
                    advice(result_type, domain, sorted(b.mx)),
                )
                if t
            )
            alert = Alert(
                severity="critical" if "enforce-failure" in rules else "warning",
                rule=rules[0],
                rules=tuple(rules),
                domain=domain,
                result_type=result_type,
                message=text,
                failed_session_count=b.sessions,
                receiving_mx=tuple(sorted(b.mx)),
                policy_type=p.policy_type,
                policy_mode=mode,
                reasons=_reasons(b.reasons),
            )
            found[(domain, result_type)] = _merge(found.get((domain, result_type)), alert)
    alerts = list(found.values())
    if "failure-rate" in config.rules:
        alerts += _rate_alerts(report, history, config)
    return alerts


def _merge(old: Alert | None, new: Alert) -> Alert:
    """Two policies of one report (sts + tlsa) with the same cause: keep the worse, add up."""
    if old is None:
        return new
    worse, other = (
        (old, new)
        if SEVERITIES.index(old.severity) >= SEVERITIES.index(new.severity)
        else (new, old)
    )
    rules = tuple(r for r in _RULE_ORDER if r in worse.rules or r in other.rules)
    return Alert(
        worse.severity,
        worse.rule,
        rules,
        worse.domain,
        worse.result_type,
        worse.message,
        old.failed_session_count + new.failed_session_count,
        tuple(sorted(set(old.receiving_mx) | set(new.receiving_mx))),
        worse.policy_type,
        worse.policy_mode,
        _reasons({*old.reasons, *new.reasons}),
    )


def _reasons(codes: set[str]) -> tuple[str, ...]:
    """At most 5 of the sender's reason codes, each one bounded printable line."""
    return tuple(sorted({safe(c, 100) for c in codes if c.strip()})[:5])


def _rate_alerts(report: Report, history: History, config: AlertsConfig) -> list[Alert]:
    day = report.date_range_start.date()
    alerts = []
    failing = {
        p.policy_domain
        for p in report.policies
        if p.policy_domain
        and p.total_failure_session_count > 0
        and p.policy_domain not in config.ignore_domains
    }
    for domain in sorted(failing):
        ok, failed = history.days.get((domain, day), (0, 0))
        total = ok + failed
        if (
            total < max(config.failure_rate_min_sessions, 1)
            or failed / total <= config.failure_rate
        ):
            continue
        d = name(domain)
        alerts.append(
            Alert(
                severity="warning",
                rule=RATE_CAUSE,
                rules=(RATE_CAUSE,),
                domain=domain,
                result_type=None,
                message=(
                    f"{d}: {failed} of {total} sessions on {day.isoformat()} failed"
                    f" ({failed / total:.1%}, above the {config.failure_rate:.1%} threshold),"
                    f" counting every report stored so far for that day. The latest came from"
                    f" {quoted(report.organization_name, 100)}; see `tlsrpt-lmtp summary"
                    f" --domain {d}` for the result types."
                ),
                failed_session_count=failed,
                receiving_mx=(),
                policy_type="",
                policy_mode=None,
            )
        )
    return alerts
