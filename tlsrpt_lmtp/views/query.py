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
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlsrpt_lmtp.views.period import Period

CAP = 10**12


def _c(expr: str) -> str:
    return f"MIN(MAX(COALESCE({expr}, 0), 0), {CAP})"


# The STS mode from the normalised policy-string lines ("mode: enforce"); '' for other types.
_MODE = """CASE WHEN p.policy_type <> 'sts' THEN ''
    WHEN instr(p.policy_string, '"mode: enforce"') THEN 'enforce'
    WHEN instr(p.policy_string, '"mode: testing"') THEN 'testing'
    WHEN instr(p.policy_string, '"mode: none"') THEN 'none' ELSE 'unknown' END"""

# replaced by the conditions in force, so that an index on reports(date_range_start) or
# policies(policy_domain) can drive the query: its cost follows the rows the period selects
_PERIOD = "/*period*/ 1"
_LABEL = f"CASE WHEN p.policy_type = 'sts' THEN 'sts/' || {_MODE} ELSE p.policy_type END"

_BUILD = (
    f"""CREATE TEMP TABLE ufail AS
    SELECT rid, org, start, stop, domain, rt, ip, mx, MAX(n) AS n FROM (
        SELECT p.report AS rid, r.organization_name AS org, r.date_range_start AS start,
               r.date_range_end AS stop, COALESCE(p.policy_domain, '') AS domain,
               f.result_type AS rt,
               COALESCE(f.sending_mta_ip, '') AS ip,
               COALESCE(NULLIF(f.receiving_mx_hostname, ''), f.receiving_ip, '') AS mx,
               SUM({_c("f.failed_session_count")}) AS n
        FROM reports AS r JOIN policies AS p ON p.report = r.id
        JOIN failures AS f ON f.policy = p.id
        WHERE {_PERIOD}
        GROUP BY f.policy, rt, ip, mx)
    GROUP BY rid, domain, rt, ip, mx""",
    "CREATE INDEX temp.ufail_source ON ufail(org, ip, mx)",
    """CREATE TEMP TABLE fsum AS SELECT rid, domain, SUM(n) AS n FROM ufail
    GROUP BY rid, domain""",
    "CREATE UNIQUE INDEX temp.fsum_unit ON fsum(rid, domain)",
    f"""CREATE TEMP TABLE unit AS
    SELECT p.report AS rid, r.organization_name AS org, r.date_range_start AS start,
           r.date_range_end AS stop, COALESCE(p.policy_domain, '') AS domain,
           MAX({_c("p.total_successful_session_count")} + {_c("p.total_failure_session_count")})
             - MAX({_c("p.total_failure_session_count")}) AS ok,
           MAX({_c("p.total_failure_session_count")}) AS failed,
           COALESCE(MAX(d.n), 0) AS detailed,
           group_concat(DISTINCT {_LABEL}) AS labels
    FROM reports AS r JOIN policies AS p ON p.report = r.id
    LEFT JOIN fsum AS d ON d.rid = p.report AND d.domain = COALESCE(p.policy_domain, '')
    WHERE {_PERIOD}
    GROUP BY p.report, COALESCE(p.policy_domain, '')""",
    "CREATE TEMP TABLE topsrc (org TEXT, ip TEXT, mx TEXT)",
)
_DROP = tuple(f"DROP TABLE IF EXISTS temp.{t}" for t in ("ufail", "fsum", "unit", "topsrc"))

# unattributed / beyond-summary per unit, summed: one report's excess never hides another's gap
_GAPS = "SUM(MAX(failed - detailed, 0)), SUM(MAX(detailed - failed, 0))"
_DOMAINS = f"""SELECT domain, COUNT(*), COUNT(DISTINCT org), SUM(ok), SUM(failed), {_GAPS},
    MIN(start), MAX(stop), group_concat(DISTINCT labels) FROM unit GROUP BY domain"""
_ORGS = f"""SELECT org, COUNT(DISTINCT rid), COUNT(DISTINCT domain), SUM(ok), SUM(failed),
    {_GAPS}, MIN(start), MAX(stop) FROM unit GROUP BY org"""
_TOP = "(SELECT value FROM json_each(:top))"
_GROUPS = f"""SELECT domain, ptype, mode, COUNT(DISTINCT rid), SUM(ok), SUM(bad),
    SUM(MAX(bad - detailed, 0)), SUM(MAX(detailed - bad, 0)) FROM (
        SELECT COALESCE(p.policy_domain, '') AS domain, p.policy_type AS ptype, {_MODE} AS mode,
               p.report AS rid, {_c("p.total_successful_session_count")} AS ok,
               {_c("p.total_failure_session_count")} AS bad,
               (SELECT COALESCE(SUM({_c("f.failed_session_count")}), 0) FROM failures AS f
                WHERE f.policy = p.id) AS detailed
        FROM policies AS p JOIN reports AS r ON r.id = p.report
        WHERE {_PERIOD} AND COALESCE(p.policy_domain, '') IN {_TOP})
    GROUP BY domain, ptype, mode"""
_RESULT_TYPES = f"""SELECT domain, rt, SUM(n), COUNT(DISTINCT rid) FROM ufail
    WHERE domain IN {_TOP} GROUP BY domain, rt"""
_DAYS = f"""SELECT domain, substr(start, 1, 10), COUNT(*), SUM(ok), SUM(failed) FROM unit
    WHERE domain IN {_TOP} GROUP BY 1, 2"""
_ALL_DAYS = """SELECT substr(start, 1, 10), COUNT(DISTINCT rid), SUM(ok), SUM(failed) FROM unit
    GROUP BY 1"""
_SRC = """SELECT org, ip, mx, SUM(n) AS n, COUNT(DISTINCT rid) AS reports, MIN(start),
    MAX(stop) FROM ufail GROUP BY org, ip, mx"""
_SOURCE_KEYS = f"SELECT * FROM ({_SRC}) ORDER BY n DESC, org, ip, mx LIMIT :limit"
_SOURCE_ALL = f"SELECT COUNT(*), COALESCE(SUM(n), 0) FROM ({_SRC})"
_SOURCE_TYPES = """SELECT f.org, f.ip, f.mx, f.rt, SUM(f.n), COUNT(DISTINCT f.rid)
    FROM topsrc AS t JOIN ufail AS f ON f.org = t.org AND f.ip = t.ip AND f.mx = t.mx
    GROUP BY f.org, f.ip, f.mx, f.rt"""
_REPORTS = """SELECT u.rid, u.org, r.report_id, u.start, u.stop, r.archive_id, u.ok, u.failed
    FROM unit AS u JOIN reports AS r ON r.id = u.rid WHERE u.domain = :domain
    ORDER BY u.failed > 0 DESC, u.start DESC, u.failed DESC, u.rid DESC LIMIT :limit"""
_REPORTS_ALL = "SELECT COUNT(*), COALESCE(SUM(failed), 0) FROM unit WHERE domain = :domain"


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


def open_readonly(path: Path) -> sqlite3.Connection:
    """The store, read-only (the server may be writing it: WAL lets both run)."""
    if not path.is_file():
        raise FileNotFoundError(f"no report store at {path} (wrong --data-dir or --config?)")
    # mode=ro: nothing is written to the store; the temporary tables live in temp storage
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)


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
    db: sqlite3.Connection,
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
    params["where"] = where or "1"
    params["plan"] = _plan(db, params)
    for sql in (*_DROP, *_BUILD):
        db.execute(_bind(sql, params), params if _PERIOD in sql else {})
    try:
        return _collect(db, params, domain, top, detail_domains)
    finally:
        for sql in _DROP:
            db.execute(sql)


def _bind(sql: str, params: dict[str, Any]) -> str:
    """The statement with the period's conditions and the join order ``params["plan"]`` chose:
    'index' (the reports drive the join through their start index: CROSS JOIN fixes SQLite's
    join order) or 'scan' (a unary + keeps SQLite off that index, which costs more than a
    scan when the period selects most reports)."""
    sql = sql.replace(_PERIOD, params["where"])
    if params.get("plan") == "index":
        for table in ("policies AS p", "failures AS f"):
            sql = sql.replace(f" JOIN {table}", f" CROSS JOIN {table}")
    elif params.get("plan") == "scan":
        sql = sql.replace("r.date_range_start >=", "+r.date_range_start >=")
        sql = sql.replace("r.date_range_start <", "+r.date_range_start <")
    return sql


def _plan(db: sqlite3.Connection, params: dict[str, Any]) -> str:
    """'index' when the store has views/indexes.py's index and the period selects under a
    quarter of the reports (counted on the index alone), else 'scan'; '' when the domain's
    policies drive the query anyway."""
    if params["domain"] is not None or not (params["start"] or params["end"]):
        return ""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'reports_start'").fetchone():
        return ""
    where = params["where"].replace("r.", "")
    (selected,) = db.execute(f"SELECT COUNT(*) FROM reports WHERE {where}", params).fetchone()
    (total,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM reports").fetchone()
    return "index" if selected * 4 < total else "scan"


def _collect(
    db: sqlite3.Connection,
    params: dict[str, Any],
    domain: str | None,
    top: int,
    detail_domains: tuple[str, ...] | None,
) -> Rows:
    domains = sorted((_domain(r) for r in db.execute(_DOMAINS)), key=worst_first)
    orgs = tuple(OrgRow(*r) for r in db.execute(_ORGS))
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
    p = {k: v for k, v in params.items() if k not in ("where", "plan")}
    p["top"] = json.dumps(list(detailed))
    limit = {"limit": top if top > 0 else -1}
    shown = [SourceRow(*r) for r in db.execute(_SOURCE_KEYS, limit)]
    db.executemany(
        "INSERT INTO topsrc VALUES (?,?,?)",
        [(s.organization, s.sending_ip, s.receiving_mx) for s in shown],
    )
    n, failed = db.execute(_SOURCE_ALL).fetchone()
    sources_rest = Rest(n - len(shown), failed - sum(s.failed for s in shown))
    reports: list[ReportRow] = []
    reports_rest = Rest(0, 0)
    if domain is not None:
        dl = {"domain": domain, **limit}
        reports = [ReportRow(*r) for r in db.execute(_REPORTS, dl)]
        n, failed = db.execute(_REPORTS_ALL, {"domain": domain}).fetchone()
        reports_rest = Rest(n - len(reports), failed - sum(r.failed for r in reports))
    return Rows(
        totals=totals,
        domains=tuple(domains),
        orgs=orgs,
        detailed=detailed,
        groups=tuple(PolicyGroupRow(*r) for r in db.execute(_bind(_GROUPS, params), p)),
        result_types=tuple(ResultTypeRow(*r) for r in db.execute(_RESULT_TYPES, p)),
        days=(
            *(DayRow(*r) for r in db.execute(_DAYS, p)),
            *(DayRow("*", *r) for r in db.execute(_ALL_DAYS)),
        ),
        sources=tuple(shown),
        source_types=tuple(SourceTypeRow(*r) for r in db.execute(_SOURCE_TYPES)),
        sources_rest=sources_rest,
        reports=tuple(reports),
        reports_rest=reports_rest,
    )
