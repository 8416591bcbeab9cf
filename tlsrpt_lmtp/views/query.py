"""The aggregation SQL over the store (reports, policies, failures), filtered by period/domain.

The counting rule (docs/summary.md, "How the numbers are counted") is applied once, here, in
two temporary tables that every view then aggregates:

- ``unit``: one row per (report, policy domain). Its sessions are the *maximum* over the
  domain's policies in that report, and so are its failed sessions (Microsoft reports each
  session under both ``tlsa`` and ``sts``: adding them would double the domain's sessions);
  successful = sessions - failed.
- ``ufail``: one row per (report, policy domain, result type, sending IP, receiving MX), with
  the failure-detail sessions, again the maximum over the domain's policies in that report.

Every count read from the store is clamped to [0, 10**12] before it is summed, so a hostile
report claiming 2**63-1 sessions cannot overflow SQLite's 64-bit sums (10**12 times
9 million rows still fits). Only aggregates leave SQLite; the number of rows returned is
bounded by the number of domains and organisations, and by ``top`` for everything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlsrpt_lmtp.store import Reader, open_reader
from tlsrpt_lmtp.store.dialect import of
from tlsrpt_lmtp.views.period import Period
from tlsrpt_lmtp.views.sql import PERIOD, Statements, statements


@dataclass(frozen=True, slots=True)
class TotalsRow:
    reports: int
    organizations: int
    domains: int
    successful: int
    failed: int
    first_start: str | None
    last_end: str | None


@dataclass(frozen=True, slots=True)
class DomainRow:
    domain: str
    reports: int
    organizations: int
    successful: int
    failed: int
    unattributed: int
    over_detailed: int
    first_start: str
    last_end: str
    policies: str  # comma-separated labels: sts/enforce, tlsa, no-policy-found ...


@dataclass(frozen=True, slots=True)
class OrgRow:
    organization: str
    reports: int
    domains: int
    successful: int
    failed: int
    unattributed: int
    over_detailed: int
    first_start: str
    last_end: str


@dataclass(frozen=True, slots=True)
class PolicyGroupRow:
    """One policy domain under one policy type and mode: the policies' own numbers."""

    domain: str
    policy_type: str
    mode: str
    reports: int
    successful: int
    failed: int
    unattributed: int
    over_detailed: int


@dataclass(frozen=True, slots=True)
class ResultTypeRow:
    domain: str
    result_type: str
    sessions: int
    reports: int


@dataclass(frozen=True, slots=True)
class SourceRow:
    organization: str
    sending_ip: str
    receiving_mx: str
    failed: int
    reports: int
    first_start: str
    last_end: str


@dataclass(frozen=True, slots=True)
class SourceTypeRow:
    organization: str
    sending_ip: str
    receiving_mx: str
    result_type: str
    sessions: int
    reports: int


@dataclass(frozen=True, slots=True)
class DayRow:
    domain: str  # '*' for all domains together
    day: str
    reports: int
    successful: int
    failed: int


@dataclass(frozen=True, slots=True)
class ReportRow:
    pk: int
    organization: str
    report_id: str
    start: str
    end: str
    archive_id: str
    successful: int
    failed: int


@dataclass(frozen=True, slots=True)
class Rest:
    """What a top-N list leaves out: how many, and their failed sessions."""

    count: int
    failed: int


@dataclass(frozen=True, slots=True)
class Rows:
    totals: TotalsRow
    domains: tuple[DomainRow, ...]  # every domain in the period
    orgs: tuple[OrgRow, ...]  # every organisation in the period
    detailed: tuple[str, ...]  # the domains whose groups, types and days follow
    groups: tuple[PolicyGroupRow, ...]
    result_types: tuple[ResultTypeRow, ...]
    days: tuple[DayRow, ...]
    sources: tuple[SourceRow, ...]  # the top N by failed sessions
    source_types: tuple[SourceTypeRow, ...]
    sources_rest: Rest
    reports: tuple[ReportRow, ...]  # only with a domain: its top N reports
    reports_rest: Rest


def open_readonly(path: Path) -> Reader:
    """The SQLite store at ``path``, read-only (store.open_reader opens any backend)."""
    return open_reader(path)


def worst_first(d: DomainRow) -> tuple[object, ...]:
    total = d.successful + d.failed
    rate = d.successful / total if total else None
    return (rate is None, rate if rate is not None else 0.0, -d.failed, d.domain == "", d.domain)


def _labels(text: str | None) -> str:
    """The distinct policy labels of a domain from its units' comma-separated lists."""
    return ",".join(sorted({x for x in (text or "").split(",") if x}))


def _domain(r: tuple[Any, ...]) -> DomainRow:
    return DomainRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], _labels(r[9]))


def _take(rows: list[Any], top: int) -> tuple[list[Any], list[Any]]:
    return (rows, []) if top <= 0 else (rows[:top], rows[top:])


def fetch(
    db: Reader,
    period: Period,
    domain: str | None,
    *,
    top: int = 20,
    detail_domains: tuple[str, ...] | None = None,
) -> Rows:
    """Every aggregate a view needs. ``top`` bounds the lists (0: no bound); the policy groups,
    result types and daily series are fetched for the worst ``top`` domains (or for
    ``detail_domains`` when given)."""
    params: dict[str, Any] = {
        "start": period.start.isoformat() if period.start else None,
        "end": period.end.isoformat() if period.end else None,
        "domain": domain,
    }
    where = " AND ".join(
        cond
        for cond, key in (
            ("r.date_range_start >= :start", "start"),
            ("r.date_range_start < :end", "end"),
            ("p.policy_domain = :domain", "domain"),
        )
        if params[key] is not None
    )
    params["where"] = where or "1=1"
    sql = statements(of(db.dialect))
    params["plan"] = _plan(db, params)
    for statement in (*sql.drop, *sql.build):
        db.execute(_bind(statement, params), _bound(params) if PERIOD in statement else {})
    try:
        return _collect(db, sql, params, domain, top, detail_domains)
    finally:
        for statement in sql.drop:
            db.execute(statement)


def _bound(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a statement with the period's conditions uses."""
    return {k: v for k, v in params.items() if k in ("start", "end", "domain") and v is not None}


def _bind(sql: str, params: dict[str, Any]) -> str:
    """The statement with the period's conditions and the join order ``params["plan"]`` chose:
    'index' (the reports drive the join through their start index: CROSS JOIN fixes SQLite's
    join order) or 'scan' (a unary + keeps SQLite off that index, which costs more than a
    scan when the period selects most reports)."""
    sql = sql.replace(PERIOD, params["where"])
    if params.get("plan") == "index":
        for table in ("policies AS p", "failures AS f"):
            sql = sql.replace(f" JOIN {table}", f" CROSS JOIN {table}")
    elif params.get("plan") == "scan":
        sql = sql.replace("r.date_range_start >=", "+r.date_range_start >=")
        sql = sql.replace("r.date_range_start <", "+r.date_range_start <")
    return sql


def _plan(db: Reader, params: dict[str, Any]) -> str:
    """'index' when the store has views/indexes.py's index and the period selects under a
    quarter of the reports (counted on the index alone), else 'scan'; '' when the domain's
    policies drive the query anyway, or the planner is not SQLite's."""
    if db.dialect != "sqlite":
        return ""
    if params["domain"] is not None or not (params["start"] or params["end"]):
        return ""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'reports_start'").fetchone():
        return ""
    where = params["where"].replace("r.", "")
    (selected,) = db.execute(
        f"SELECT COUNT(*) FROM reports WHERE {where}", _bound(params)
    ).fetchone()
    (total,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM reports").fetchone()
    return "index" if selected * 4 < total else "scan"


def _collect(
    db: Reader,
    sql: Statements,
    params: dict[str, Any],
    domain: str | None,
    top: int,
    detail_domains: tuple[str, ...] | None,
) -> Rows:
    domains = sorted((_domain(r) for r in db.execute(sql.domains)), key=worst_first)
    orgs = tuple(OrgRow(*r) for r in db.execute(sql.orgs))
    totals = TotalsRow(  # a report has one organisation: its reports add up; Python ints
        sum(o.reports for o in orgs),
        len(orgs),
        len(domains),
        sum(d.successful for d in domains),
        sum(d.failed for d in domains),
        min((o.first_start for o in orgs), default=None),
        max((o.last_end for o in orgs), default=None),
    )
    detailed = detail_domains
    if detailed is None:
        detailed = tuple(d.domain for d in _take(domains, top)[0])
    p = _bound(params)
    p["top"] = json.dumps(list(detailed))
    limit = {"limit": top if top > 0 else of(db.dialect).no_limit}
    shown = [SourceRow(*r) for r in db.execute(sql.source_keys, limit)]
    db.executemany(
        "INSERT INTO topsrc VALUES (?,?,?)",
        [(s.organization, s.sending_ip, s.receiving_mx) for s in shown],
    )
    n, failed = db.execute(sql.source_all).fetchone()
    sources_rest = Rest(n - len(shown), failed - sum(s.failed for s in shown))
    reports: list[ReportRow] = []
    reports_rest = Rest(0, 0)
    if domain is not None:
        dl = {"domain": domain, **limit}
        reports = [ReportRow(*r) for r in db.execute(sql.reports, dl)]
        n, failed = db.execute(sql.reports_all, {"domain": domain}).fetchone()
        reports_rest = Rest(n - len(reports), failed - sum(r.failed for r in reports))
    return Rows(
        totals=totals,
        domains=tuple(domains),
        orgs=orgs,
        detailed=detailed,
        groups=tuple(PolicyGroupRow(*r) for r in db.execute(_bind(sql.groups, params), p)),
        result_types=tuple(
            ResultTypeRow(*r) for r in db.execute(sql.result_types, {"top": p["top"]})
        ),
        days=(
            *(DayRow(*r) for r in db.execute(sql.days, {"top": p["top"]})),
            *(DayRow("*", *r) for r in db.execute(sql.all_days)),
        ),
        sources=tuple(shown),
        source_types=tuple(SourceTypeRow(*r) for r in db.execute(sql.source_types)),
        sources_rest=sources_rest,
        reports=tuple(reports),
        reports_rest=reports_rest,
    )
