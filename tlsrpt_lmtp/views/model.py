"""The summary as values: built from query.py's rows by pure functions (grouping, sorting).

Every string in here that came from a report (domains, organisation names, IPs, MX names,
result types) is untrusted: renderers must escape it for their format.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeVar

from tlsrpt_lmtp.alerts.absence import Finding
from tlsrpt_lmtp.views.period import Period
from tlsrpt_lmtp.views.query import Rows

T = TypeVar("T")


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
class DomainSummary(_Sessions):
    """One policy domain, counted by the rule (the maximum over its policies per report)."""

    domain: str
    reports: int
    organizations: int
    successful: int
    failed: int
    unattributed: int
    over_detailed: int
    first: datetime
    last: datetime
    policies: tuple[str, ...]  # 'sts/enforce', 'tlsa', ...
    result_types: tuple[Count, ...]  # filled for the detailed (top N) domains only


@dataclass(frozen=True, slots=True)
class Source:
    """Failure details of one organisation's sending MTA towards one receiving MX."""

    organization: str
    sending_ip: str
    receiving_mx: str
    failed: int
    reports: int
    result_types: tuple[Count, ...]
    first: datetime
    last: datetime


@dataclass(frozen=True, slots=True)
class OrgSummary(_Sessions):
    organization: str
    reports: int
    domains: int
    successful: int
    failed: int
    unattributed: int  # summary failures that no failure detail accounts for
    over_detailed: int  # failure-detail sessions beyond the summaries
    first: datetime
    last: datetime


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
class ReportLine(_Sessions):
    """One stored report, as counted for the drilled-down domain."""

    organization: str
    report_id: str
    start: datetime
    end: datetime
    archive_id: str
    successful: int
    failed: int


@dataclass(frozen=True, slots=True)
class Rest:
    """What a top-N list leaves out."""

    count: int
    reports: int = 0
    sessions: int = 0
    failed: int = 0


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
    top: int  # 0: no bound
    totals: Totals
    domains: tuple[DomainSummary, ...]  # every domain, worst first
    groups: tuple[ResultGroup, ...]  # policies of the detailed domains, worst first
    orgs: tuple[OrgSummary, ...]  # every organisation, most failures first
    sources: tuple[Source, ...]  # the top N by failed sessions
    sources_rest: Rest
    daily: tuple[DomainSeries, ...]  # the detailed domains
    overall: DomainSeries  # every domain together
    reports: tuple[ReportLine, ...]  # with a domain: its reports, failing and newest first
    reports_rest: Rest
    findings: tuple[Finding, ...] = ()

    def shown(self, items: tuple[T, ...]) -> tuple[T, ...]:
        return items if self.top <= 0 else items[: self.top]

    def rest(self, items: Sequence[_Sessions]) -> Rest:
        """The items a top-N list leaves out, as one line."""
        left = items[self.top :] if self.top > 0 else ()
        return Rest(
            len(left),
            sum(getattr(x, "reports", 0) for x in left),
            sum(x.sessions for x in left),
            sum(x.failed for x in left),
        )


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _counts(rows: Iterable[tuple[str, int, int]]) -> tuple[Count, ...]:
    merged: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, sessions, reports in rows:
        merged[name][0] += sessions
        merged[name][1] += reports
    counts = (Count(name, s, n) for name, (s, n) in merged.items())
    return tuple(sorted(counts, key=lambda c: (-c.sessions, c.result_type)))


def _worst_first(g: ResultGroup) -> tuple[object, ...]:
    r = g.success_rate
    return (r is None, r if r is not None else 0.0, -g.failed, g.domain == "", g.domain, g.policy)


def build(
    rows: Rows,
    *,
    period: Period,
    domain: str | None,
    now: datetime,
    top: int = 20,
    findings: Sequence[Finding] = (),
) -> Summary:
    types: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for t in rows.result_types:
        types[t.domain].append((t.result_type, t.sessions, t.reports))
    domains = tuple(
        DomainSummary(
            d.domain,
            d.reports,
            d.organizations,
            d.successful,
            d.failed,
            d.unattributed,
            d.over_detailed,
            _dt(d.first_start),
            _dt(d.last_end),
            tuple(x for x in d.policies.split(",") if x),
            _counts(types.get(d.domain, ())),
        )
        for d in rows.domains
    )
    groups = [
        ResultGroup(
            g.domain,
            g.policy_type,
            g.mode,
            g.reports,
            g.successful,
            g.failed,
            (),
            g.unattributed,
            g.over_detailed,
        )
        for g in rows.groups
    ]
    orgs = sorted(
        (
            OrgSummary(
                o.organization,
                o.reports,
                o.domains,
                o.successful,
                o.failed,
                o.unattributed,
                o.over_detailed,
                _dt(o.first_start),
                _dt(o.last_end),
            )
            for o in rows.orgs
        ),
        key=lambda o: (-o.failed, -o.sessions, o.organization),
    )
    return Summary(
        generated_at=now,
        period=period,
        domain=domain,
        top=top,
        totals=_totals(rows),
        domains=domains,
        groups=tuple(sorted(groups, key=_worst_first)),
        orgs=tuple(orgs),
        sources=_sources(rows),
        sources_rest=Rest(rows.sources_rest.count, failed=rows.sources_rest.failed),
        daily=_daily(rows, rows.detailed),
        overall=_daily(rows, ("*",))[0] if rows.days else DomainSeries("*", ()),
        reports=tuple(
            ReportLine(
                r.organization,
                r.report_id,
                _dt(r.start),
                _dt(r.end),
                r.archive_id,
                r.successful,
                r.failed,
            )
            for r in rows.reports
        ),
        reports_rest=Rest(rows.reports_rest.count, failed=rows.reports_rest.failed),
        findings=tuple(findings),
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


def _sources(rows: Rows) -> tuple[Source, ...]:
    types: dict[tuple[str, str, str], list[tuple[str, int, int]]] = defaultdict(list)
    for t in rows.source_types:
        types[(t.organization, t.sending_ip, t.receiving_mx)].append(
            (t.result_type, t.sessions, t.reports)
        )
    return tuple(
        Source(
            s.organization,
            s.sending_ip,
            s.receiving_mx,
            s.failed,
            s.reports,
            _counts(types[(s.organization, s.sending_ip, s.receiving_mx)]),
            _dt(s.first_start),
            _dt(s.last_end),
        )
        for s in rows.sources
    )


def _daily(rows: Rows, order: Sequence[str]) -> tuple[DomainSeries, ...]:
    points: dict[str, list[DayPoint]] = defaultdict(list)
    for d in rows.days:
        points[d.domain].append(
            DayPoint(date.fromisoformat(d.day), d.reports, d.successful, d.failed)
        )
    return tuple(
        DomainSeries(name, tuple(sorted(points[name], key=lambda p: p.day)))
        for name in order
        if name in points
    )
