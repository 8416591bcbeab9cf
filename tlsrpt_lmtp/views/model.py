"""The summary as values: built from query.py's rows by pure functions (grouping, sorting).

Every string in here that came from a report (domains, organisation names, IPs, MX names,
result types) is untrusted: renderers must escape it for their format.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from tlsrpt_lmtp.views.period import Period
from tlsrpt_lmtp.views.query import ResultTypeRow, Rows, SourceRow


def rate(successful: int, failed: int) -> float | None:
    """Share of successful sessions; None when there were no sessions."""
    total = successful + failed
    return successful / total if total else None


class _Sessions:
    """Sessions and success rate of anything with ``successful`` and ``failed`` counts."""

    __slots__ = ()
    successful: int
    failed: int

    @property
    def sessions(self) -> int:
        return self.successful + self.failed

    @property
    def success_rate(self) -> float | None:
        return rate(self.successful, self.failed)


@dataclass(frozen=True, slots=True)
class Count:
    """Failed sessions of one result type, and in how many reports it appeared."""

    result_type: str
    sessions: int
    reports: int


@dataclass(frozen=True, slots=True)
class ResultGroup(_Sessions):
    """One policy domain under one policy type and mode."""

    domain: str  # '' when the report named none
    policy_type: str
    mode: str  # STS mode ('enforce', 'testing', 'none'), '' for other types
    reports: int
    successful: int
    failed: int  # the senders' summaries
    result_types: tuple[Count, ...]  # the senders' failure details
    unattributed: int  # failures in summaries that no detail accounts for
    over_detailed: int  # failures in details beyond what the summaries count

    @property
    def policy(self) -> str:
        if self.policy_type == "sts":
            return f"sts/{self.mode or 'unknown'}"
        return self.policy_type


@dataclass(frozen=True, slots=True)
class Source:
    """Failure details of one sending MTA towards one receiving MX (name, else its IP)."""

    sending_ip: str
    receiving_mx: str
    failed: int
    result_types: tuple[Count, ...]
    first: datetime
    last: datetime


@dataclass(frozen=True, slots=True)
class OrgSummary(_Sessions):
    organization: str
    reports: int
    successful: int
    failed: int
    unattributed: int  # summary failures that no failure detail accounts for
    over_detailed: int  # failure-detail sessions beyond the summaries
    first: datetime
    last: datetime
    sources: tuple[Source, ...]


@dataclass(frozen=True, slots=True)
class DayPoint(_Sessions):
    """Reports whose date range starts on ``day`` (UTC)."""

    day: date
    reports: int
    successful: int
    failed: int


@dataclass(frozen=True, slots=True)
class DomainSeries:
    domain: str
    points: tuple[DayPoint, ...]


@dataclass(frozen=True, slots=True)
class Totals(_Sessions):
    reports: int
    organizations: int
    domains: int
    successful: int
    failed: int
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True, slots=True)
class Summary:
    generated_at: datetime
    period: Period
    domain: str | None
    totals: Totals
    by_result: tuple[ResultGroup, ...]
    by_source: tuple[OrgSummary, ...]
    daily: tuple[DomainSeries, ...]


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _counts(rows: Iterable[ResultTypeRow | SourceRow]) -> tuple[Count, ...]:
    merged: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        merged[r.result_type][0] += r.sessions
        merged[r.result_type][1] += r.reports
    counts = (Count(name, s, n) for name, (s, n) in merged.items())
    return tuple(sorted(counts, key=lambda c: (-c.sessions, c.result_type)))


def _worst_first(g: ResultGroup) -> tuple[object, ...]:
    r = g.success_rate
    return (r is None, r if r is not None else 0.0, -g.failed, g.domain == "", g.domain, g.policy)


def build(rows: Rows, *, period: Period, domain: str | None, now: datetime) -> Summary:
    types: dict[tuple[str, str, str], list[ResultTypeRow]] = defaultdict(list)
    for t in rows.result_types:
        types[(t.domain, t.policy_type, t.mode)].append(t)
    groups = [
        ResultGroup(
            g.domain,
            g.policy_type,
            g.mode,
            g.reports,
            g.successful,
            g.failed,
            _counts(types[(g.domain, g.policy_type, g.mode)]),
            g.unattributed,
            g.over_detailed,
        )
        for g in rows.groups
    ]
    return Summary(
        generated_at=now,
        period=period,
        domain=domain,
        totals=_totals(rows),
        by_result=tuple(sorted(groups, key=_worst_first)),
        by_source=_orgs(rows),
        daily=_daily(rows),
    )


def _totals(rows: Rows) -> Totals:
    t = rows.totals
    return Totals(
        t.reports,
        t.organizations,
        t.domains,
        t.successful,
        t.failed,
        _dt(t.first_start) if t.first_start else None,
        _dt(t.last_end) if t.last_end else None,
    )


def _orgs(rows: Rows) -> tuple[OrgSummary, ...]:
    by_key: dict[str, dict[tuple[str, str], list[SourceRow]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for s in rows.sources:
        by_key[s.organization][(s.sending_ip, s.receiving_mx)].append(s)
    orgs = []
    for o in rows.orgs:
        sources = [
            Source(
                ip,
                mx,
                sum(s.sessions for s in items),
                _counts(items),
                min(_dt(s.first_start) for s in items),
                max(_dt(s.last_end) for s in items),
            )
            for (ip, mx), items in by_key[o.organization].items()
        ]
        sources.sort(key=lambda s: (-s.failed, s.sending_ip, s.receiving_mx))
        orgs.append(
            OrgSummary(
                o.organization,
                o.reports,
                o.successful,
                o.failed,
                o.unattributed,
                o.over_detailed,
                _dt(o.first_start),
                _dt(o.last_end),
                tuple(sources),
            )
        )
    orgs.sort(key=lambda o: (-o.failed, -o.sessions, o.organization))
    return tuple(orgs)


def _daily(rows: Rows) -> tuple[DomainSeries, ...]:
    points: dict[str, list[DayPoint]] = defaultdict(list)
    for d in rows.days:
        points[d.domain].append(
            DayPoint(date.fromisoformat(d.day), d.reports, d.successful, d.failed)
        )
    return tuple(
        DomainSeries(name, tuple(sorted(pts, key=lambda p: p.day)))
        for name, pts in sorted(points.items(), key=lambda kv: (kv[0] == "", kv[0]))
    )
