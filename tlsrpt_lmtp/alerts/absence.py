"""Findings about what the reports do *not* say: silence, and policies ready to change.

A report can only raise an alert when it arrives; these rules look at the store as of a
moment (``now``) instead, so they run from ``tlsrpt-lmtp digest`` and appear in ``summary``:

- reporter-silent (warning): an organisation reported a domain on at least K of the M days
  up to its last report, and has not reported it for more than D days since;
- domain-silent (warning): the same for a domain and all organisations together;
- ready-for-enforce (info): every report of the last 30 days saw the domain's MTA-STS policy
  in mode testing, they cover those 30 days (the first within 3 days of their start), and
  none had a failed session;
- mode-none (info): the domain's latest MTA-STS policy has mode none (senders ignore it).

Only reports that started within the last ``lookback`` days are read (defaults: K=5, M=14,
D=3, lookback 45 days: a silence older than that is no longer listed; its alert went out
when it began), with aggregate queries; the rules themselves are pure.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from tlsrpt_lmtp.alerts.events import AlertRaised
from tlsrpt_lmtp.alerts.guard import domain_matches
from tlsrpt_lmtp.alerts.hook import AlertHook
from tlsrpt_lmtp.alerts.rules import Alert
from tlsrpt_lmtp.core.events import ReportRef
from tlsrpt_lmtp.store import Reader
from tlsrpt_lmtp.store.dialect import Dialect, of, sts_mode

ABSENCE_RULES = ("reporter-silent", "domain-silent", "ready-for-enforce", "mode-none")


@dataclass(frozen=True, slots=True)
class AbsenceConfig:
    active_days: int = 5  # K
    window_days: int = 14  # M
    silent_days: int = 3  # D
    ready_days: int = 30
    lookback_days: int = 45


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # 'reporter-silent', 'domain-silent', 'ready-for-enforce', 'mode-none'
    severity: str
    domain: str
    organization: str | None
    message: str
    since: date | None  # the last day reported (silence), or the first day seen (readiness)


@dataclass(frozen=True, slots=True)
class Activity:
    """Reports of one domain (from one organisation, or from all when organization is None)."""

    domain: str
    organization: str | None
    last_day: date
    active_days: int  # distinct report days among the window_days up to last_day


@dataclass(frozen=True, slots=True)
class Readiness:
    domain: str
    latest_mode: str  # of the newest STS policy in the lookback
    recent_first_day: date | None  # first report day in the ready window
    recent_testing: int  # STS policies in mode testing in the ready window
    recent_other: int  # STS policies in any other mode in the ready window
    recent_failed: int


@functools.cache
def _sql(d: Dialect) -> tuple[str, str, str]:
    """(recent, activity, ready) for one dialect (written once: store/dialect.py)."""
    recent = f"""CREATE TEMP TABLE absence_pol AS
    SELECT r.organization_name AS org, COALESCE(p.policy_domain, '') AS domain,
           substr(r.date_range_start, 1, 10) AS day, r.date_range_start AS start,
           {sts_mode(d, "p", "NULL")} AS mode,
           {d.clamp("p.total_failure_session_count", 10**12)} AS bad
    FROM reports AS r JOIN policies AS p ON p.report = r.id
    WHERE r.date_range_start >= :since
      AND (CAST(:domain AS TEXT) IS NULL OR p.policy_domain = :domain)"""
    activity = f"""WITH d AS (SELECT {{key}}, day FROM absence_pol GROUP BY {{key}}, day),
    l AS (SELECT {{key}}, MAX(day) AS last FROM d GROUP BY {{key}}
          HAVING MAX(day) < :silent_before)
    SELECT {{lkey}}, l.last, COUNT(*) FROM l JOIN d ON {{join}}
      AND d.day > {d.days_before("l.last", "window")}
    GROUP BY {{lkey}}, l.last HAVING COUNT(*) >= :active"""
    ready = """SELECT domain,
    MAX(CASE WHEN mode IS NOT NULL THEN start || ' ' || mode END),
    MIN(CASE WHEN start >= :ready THEN day END),
    SUM(CASE WHEN start >= :ready AND mode = 'testing' THEN 1 ELSE 0 END),
    SUM(CASE WHEN start >= :ready AND mode IS NOT NULL AND mode <> 'testing' THEN 1 ELSE 0 END),
    SUM(CASE WHEN start >= :ready THEN bad ELSE 0 END)
    FROM absence_pol WHERE domain <> '' GROUP BY domain HAVING COUNT(mode) > 0"""
    return recent, activity, ready


def read(
    db: Reader, now: datetime, config: AbsenceConfig, domain: str | None = None
) -> tuple[list[Activity], list[Readiness]]:
    """The aggregates the rules need, from the store as of ``now`` (for one domain, or all)."""
    today = now.date()
    since = datetime.combine(today - timedelta(days=config.lookback_days), datetime.min.time())
    ready = datetime.combine(today - timedelta(days=config.ready_days), datetime.min.time())
    d = of(db.dialect)
    recent, activity_sql, ready_sql = _sql(d)
    silent = {
        "window": config.window_days,
        "silent_before": (today - timedelta(days=config.silent_days)).isoformat(),
        "active": config.active_days,
    }
    drop = f"DROP TABLE IF EXISTS {d.temp('absence_pol')}"
    db.execute(drop)
    if domain is not None and d.sqlite:  # its policies drive the query (their index)
        recent = recent.replace("r.date_range_start >= :since", "+r.date_range_start >= :since")
    db.execute(recent, {"since": since.isoformat(), "domain": domain})
    try:
        db.execute(d.temp_index("absence_pol_domain", "absence_pol", "domain, org, day"))
        activity = [
            Activity(domain, org, date.fromisoformat(last), n)
            for org, domain, last, n in db.execute(
                activity_sql.format(
                    key="domain, org",
                    lkey="l.org, l.domain",
                    join="d.org = l.org AND d.domain = l.domain",
                ),
                silent,
            )
        ]
        activity += [
            Activity(domain, None, date.fromisoformat(last), n)
            for domain, last, n in db.execute(
                activity_sql.format(key="domain", lkey="l.domain", join="d.domain = l.domain"),
                silent,
            )
        ]
        readiness = [
            Readiness(
                domain,
                latest.rsplit(" ", 1)[-1],  # the mode of the newest STS policy
                date.fromisoformat(first) if first else None,
                testing or 0,
                other or 0,
                failed or 0,
            )
            for domain, latest, first, testing, other, failed in db.execute(
                ready_sql, {"ready": ready.isoformat()}
            )
        ]
    finally:
        db.execute(drop)
    return activity, readiness


def evaluate(
    activity: Iterable[Activity],
    readiness: Iterable[Readiness],
    now: datetime,
    config: AbsenceConfig = AbsenceConfig(),
    ignore: Iterable[str] = (),
) -> list[Finding]:
    """The findings, most severe first (pure)."""
    today, skip = now.date(), set(ignore)
    found = []
    for a in activity:
        silent = (today - a.last_day).days - 1
        if a.domain in skip or not a.domain or a.active_days < config.active_days:
            continue
        if silent < config.silent_days:
            continue
        who = f"{a.organization} has sent" if a.organization else "The domain has received"
        found.append(
            Finding(
                "reporter-silent" if a.organization else "domain-silent",
                "warning",
                a.domain,
                a.organization,
                f"{who} no report for {a.domain} for {silent} days (last: {a.last_day},"
                f" after reports on {a.active_days} of the {config.window_days} days before)",
                a.last_day,
            )
        )
    for r in readiness:
        if r.domain in skip:
            continue
        if r.latest_mode == "none":
            found.append(
                Finding(
                    "mode-none",
                    "info",
                    r.domain,
                    None,
                    f"The MTA-STS policy of {r.domain} is in mode none: senders ignore it",
                    None,
                )
            )
        start = today - timedelta(days=config.ready_days)
        if (
            r.recent_testing > 0
            and r.recent_other == 0
            and r.recent_first_day is not None
            and r.recent_first_day <= start + timedelta(days=3)
            and r.recent_failed == 0
        ):
            found.append(
                Finding(
                    "ready-for-enforce",
                    "info",
                    r.domain,
                    None,
                    f"{r.domain} has been in MTA-STS testing for {config.ready_days} days"
                    " without a failed session: ready for mode enforce",
                    r.recent_first_day,
                )
            )
    order = {"warning": 0, "info": 1}
    found.sort(key=lambda f: (order.get(f.severity, 2), f.kind, f.domain, f.organization or ""))
    return found


def find(
    db: Reader,
    now: datetime,
    config: AbsenceConfig = AbsenceConfig(),
    ignore: Iterable[str] = (),
    *,
    domain: str | None = None,
) -> list[Finding]:
    activity, readiness = read(db, now, config, domain)
    return evaluate(activity, readiness, now, config, ignore)


@dataclass(frozen=True, slots=True)
class AbsenceAlert(Alert):
    """An alert from a finding; deduplicated per (domain, kind and organisation)."""

    key: str = ""

    @property
    def cause(self) -> str:
        return self.key


def _alert_fields(f: Finding) -> dict[str, Any]:
    """What an alert for a finding says, as the alert state and as the event (no report)."""
    return {
        "severity": f.severity,
        "rule": f.kind,
        "rules": (f.kind,),
        "domain": f.domain,
        "result_type": None,
        "message": f.message,
        "failed_session_count": 0,
        "receiving_mx": (),
        "policy_mode": {"ready-for-enforce": "testing", "mode-none": "none"}.get(f.kind),
    }


def _about_policy(f: Finding) -> bool:
    return f.kind in ("ready-for-enforce", "mode-none")


def as_alert(f: Finding) -> AbsenceAlert:
    return AbsenceAlert(
        **_alert_fields(f),
        policy_type="sts" if _about_policy(f) else "",
        key=f"{f.kind}:{f.organization}" if f.organization else f.kind,
    )


def finding_event(f: Finding, *, source: str, repeats_suppressed: int = 0) -> AlertRaised:
    """A tlsrpt.alert event for a finding: no report caused it, so the report fields are null."""
    return AlertRaised(
        report=ReportRef(None, f.organization, None, None, None, source),
        **_alert_fields(f),
        policy_type="sts" if _about_policy(f) else None,
        since=f.since.isoformat() if f.since else None,
        repeats_suppressed=repeats_suppressed,
    )


def raise_alerts(hook: AlertHook, found: Iterable[Finding], *, source: str) -> list[AlertRaised]:
    """Send the findings (most severe first, as ``evaluate`` orders them) through the hook's
    channels, deduplicated like every alert (one per domain, kind and organisation within the
    repeat window). Returns the events sent."""
    if not hook.config.enabled or hook.state is None:
        return []
    now = hook.clock()
    config = hook.config
    # Reports can be forged: only the operator's domains ([alerts] domains) may alert, and one
    # run sends at most max_alerts_per_period, most severe first (the digest lists them all).
    kept = [
        f
        for f in found
        if f.kind in config.rules
        and f.domain not in config.ignore_domains
        and (not config.domains or domain_matches(f.domain, config.domains))
    ]
    events = []
    for f in kept[: config.max_alerts_per_period]:
        held = hook.state.claim(as_alert(f), now, hook.config.repeat_window)
        if held is None:
            continue
        event = finding_event(f, source=source, repeats_suppressed=held)
        events.append(event)
        hook.deliver(event, now)
    return events
