"""The aggregation SQL over the store (reports, policies, failures), filtered by period/domain.

Each query groups over ``sel``: one row per stored policy of a report in the period. Policy
counts are summed from ``policies`` alone and failure-detail counts from ``failures`` alone,
so a join never multiplies a count; every report is stored once (the store deduplicates), so
every report is counted once. The rows come back as plain values for model.py.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlsrpt_lmtp.views.period import Period

# The STS mode from the normalised policy-string lines ("mode: enforce"); '' for other types.
_MODE = """CASE WHEN p.policy_type = 'sts' THEN COALESCE((
    SELECT lower(trim(substr(j.value, 6))) FROM json_each(p.policy_string) AS j
    WHERE lower(j.value) LIKE 'mode:%' LIMIT 1), '') ELSE '' END"""

_SEL = f"""
WITH sel AS (
    SELECT p.id AS pid, r.id AS rid, r.organization_name AS org,
           r.date_range_start AS start, r.date_range_end AS stop,
           COALESCE(p.policy_domain, '') AS domain, p.policy_type AS ptype, {_MODE} AS mode,
           p.total_successful_session_count AS ok, p.total_failure_session_count AS failed,
           (SELECT COALESCE(SUM(f.failed_session_count), 0) FROM failures AS f
            WHERE f.policy = p.id) AS detailed
    FROM policies AS p JOIN reports AS r ON r.id = p.report
    WHERE (:start IS NULL OR julianday(r.date_range_start) >= julianday(:start))
      AND (:end IS NULL OR julianday(r.date_range_start) < julianday(:end))
      AND (:domain IS NULL OR p.policy_domain = :domain)
)
"""


@dataclass(frozen=True, slots=True)
class PolicyGroupRow:
    domain: str
    policy_type: str
    mode: str
    reports: int
    successful: int
    failed: int
    unattributed: int  # summary failures beyond the details, summed per policy
    over_detailed: int  # detail failures beyond the summary, summed per policy


@dataclass(frozen=True, slots=True)
class ResultTypeRow:
    domain: str
    policy_type: str
    mode: str
    result_type: str
    sessions: int
    reports: int


@dataclass(frozen=True, slots=True)
class OrgRow:
    organization: str
    reports: int
    successful: int
    failed: int
    unattributed: int
    over_detailed: int
    first_start: str
    last_end: str


@dataclass(frozen=True, slots=True)
class SourceRow:
    organization: str
    sending_ip: str
    receiving_mx: str
    result_type: str
    sessions: int
    reports: int
    first_start: str
    last_end: str


@dataclass(frozen=True, slots=True)
class DayRow:
    domain: str
    day: str
    reports: int
    successful: int
    failed: int


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
class Rows:
    totals: TotalsRow
    groups: tuple[PolicyGroupRow, ...]
    result_types: tuple[ResultTypeRow, ...]
    orgs: tuple[OrgRow, ...]
    sources: tuple[SourceRow, ...]
    days: tuple[DayRow, ...]


_GROUPS = """SELECT domain, ptype, mode, COUNT(DISTINCT rid), SUM(ok), SUM(failed),
    SUM(MAX(failed - detailed, 0)), SUM(MAX(detailed - failed, 0))
    FROM sel GROUP BY domain, ptype, mode"""
_RESULT_TYPES = """SELECT sel.domain, sel.ptype, sel.mode, f.result_type,
    SUM(f.failed_session_count), COUNT(DISTINCT sel.rid)
    FROM sel JOIN failures AS f ON f.policy = sel.pid
    GROUP BY sel.domain, sel.ptype, sel.mode, f.result_type"""
_ORGS = """SELECT org, COUNT(DISTINCT rid), SUM(ok), SUM(failed), SUM(MAX(failed - detailed, 0)),
    SUM(MAX(detailed - failed, 0)), MIN(start), MAX(stop) FROM sel GROUP BY org"""
_SOURCES = """SELECT sel.org, COALESCE(f.sending_mta_ip, ''),
    COALESCE(NULLIF(f.receiving_mx_hostname, ''), f.receiving_ip, ''), f.result_type,
    SUM(f.failed_session_count), COUNT(DISTINCT sel.rid), MIN(sel.start), MAX(sel.stop)
    FROM sel JOIN failures AS f ON f.policy = sel.pid
    GROUP BY 1, 2, 3, 4"""
_DAYS = """SELECT domain, date(start), COUNT(DISTINCT rid), SUM(ok), SUM(failed)
    FROM sel GROUP BY domain, date(start)"""
_TOTALS = """SELECT COUNT(DISTINCT rid), COUNT(DISTINCT org), COUNT(DISTINCT domain),
    COALESCE(SUM(ok), 0), COALESCE(SUM(failed), 0), MIN(start), MAX(stop) FROM sel"""


def open_readonly(path: Path) -> sqlite3.Connection:
    """The store, read-only (the server may be writing it: WAL lets both run)."""
    if not path.is_file():
        raise FileNotFoundError(f"no report store at {path} (wrong --data-dir or --config?)")
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    db.execute("PRAGMA query_only=ON")
    return db


def fetch(db: sqlite3.Connection, period: Period, domain: str | None) -> Rows:
    params = {
        "start": period.start.isoformat() if period.start else None,
        "end": period.end.isoformat() if period.end else None,
        "domain": domain,
    }

    def rows(sql: str) -> list[Any]:
        return list(db.execute(_SEL + sql, params))

    (totals,) = rows(_TOTALS)
    return Rows(
        totals=TotalsRow(*totals),
        groups=tuple(PolicyGroupRow(*r) for r in rows(_GROUPS)),
        result_types=tuple(ResultTypeRow(*r) for r in rows(_RESULT_TYPES)),
        orgs=tuple(OrgRow(*r) for r in rows(_ORGS)),
        sources=tuple(SourceRow(*r) for r in rows(_SOURCES)),
        days=tuple(DayRow(*r) for r in rows(_DAYS)),
    )
