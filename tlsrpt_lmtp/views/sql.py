"""The views' SQL statements, for each store dialect, written once (store/dialect.py holds the
few fragments that differ). How they count is said in query.py; they only build the two
temporary tables ``unit`` and ``ufail`` and aggregate them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from tlsrpt_lmtp.store.dialect import Dialect, sts_mode

CAP = 10**12


# replaced by the conditions in force, so that an index on reports(date_range_start) or
# policies(policy_domain) can drive the query: its cost follows the rows the period selects
PERIOD = "/*period*/ 1=1"


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement of the views, for one dialect (written once: see store/dialect.py)."""

    build: tuple[str, ...]
    drop: tuple[str, ...]
    domains: str
    orgs: str
    groups: str
    result_types: str
    days: str
    all_days: str
    source_keys: str
    source_all: str
    source_types: str
    reports: str
    reports_all: str


TEMP = ("ufail", "fsum", "unit", "topsrc")


@functools.cache
def statements(d: Dialect) -> Statements:
    mode = sts_mode(d, "p", "''")
    ok = d.clamp("p.total_successful_session_count", CAP)
    bad = d.clamp("p.total_failure_session_count", CAP)
    label = f"CASE WHEN p.policy_type = 'sts' THEN 'sts/' || {mode} ELSE p.policy_type END"
    build = (
        f"""CREATE TEMP TABLE ufail AS
    SELECT rid, org, start, stop, domain, rt, ip, mx, MAX(n) AS n FROM (
        SELECT p.report AS rid, r.organization_name AS org, r.date_range_start AS start,
               r.date_range_end AS stop, COALESCE(p.policy_domain, '') AS domain,
               f.result_type AS rt,
               COALESCE(f.sending_mta_ip, '') AS ip,
               COALESCE(NULLIF(f.receiving_mx_hostname, ''), f.receiving_ip, '') AS mx,
               SUM({d.clamp("f.failed_session_count", CAP)}) AS n
        FROM reports AS r JOIN policies AS p ON p.report = r.id
        JOIN failures AS f ON f.policy = p.id
        WHERE {PERIOD}
        GROUP BY f.policy, p.report, r.organization_name, r.date_range_start,
                 r.date_range_end, COALESCE(p.policy_domain, ''), f.result_type,
                 COALESCE(f.sending_mta_ip, ''),
                 COALESCE(NULLIF(f.receiving_mx_hostname, ''), f.receiving_ip, '')) AS per_policy
    GROUP BY rid, org, start, stop, domain, rt, ip, mx""",
        d.temp_index("ufail_source", "ufail", "org, ip, mx"),
        """CREATE TEMP TABLE fsum AS SELECT rid, domain, SUM(n) AS n FROM ufail
    GROUP BY rid, domain""",
        d.unique_temp_index("fsum_unit", "fsum", "rid, domain"),
        f"""CREATE TEMP TABLE unit AS
    SELECT p.report AS rid, r.organization_name AS org, r.date_range_start AS start,
           r.date_range_end AS stop, COALESCE(p.policy_domain, '') AS domain,
           MAX({ok} + {bad}) - MAX({bad}) AS ok, MAX({bad}) AS failed,
           COALESCE(MAX(d.n), 0) AS detailed,
           {d.concat_distinct(label)} AS labels
    FROM reports AS r JOIN policies AS p ON p.report = r.id
    LEFT JOIN fsum AS d ON d.rid = p.report AND d.domain = COALESCE(p.policy_domain, '')
    WHERE {PERIOD}
    GROUP BY p.report, r.organization_name, r.date_range_start, r.date_range_end,
             COALESCE(p.policy_domain, '')""",
        "CREATE TEMP TABLE topsrc (org TEXT, ip TEXT, mx TEXT)",
    )
    # unattributed / beyond-summary per unit, summed: one report's excess never hides another's
    gaps = f"SUM({d.positive('failed - detailed')}), SUM({d.positive('detailed - failed')})"
    top = d.json_values("top")
    src = """SELECT org, ip, mx, SUM(n) AS n, COUNT(DISTINCT rid) AS reports, MIN(start),
    MAX(stop) FROM ufail GROUP BY org, ip, mx"""
    return Statements(
        build=build,
        drop=tuple(f"DROP TABLE IF EXISTS {d.temp(t)}" for t in TEMP),
        domains=f"""SELECT domain, COUNT(*), COUNT(DISTINCT org), SUM(ok), SUM(failed), {gaps},
    MIN(start), MAX(stop), {d.concat_distinct("labels")} FROM unit GROUP BY domain""",
        orgs=f"""SELECT org, COUNT(DISTINCT rid), COUNT(DISTINCT domain), SUM(ok), SUM(failed),
    {gaps}, MIN(start), MAX(stop) FROM unit GROUP BY org""",
        groups=f"""SELECT domain, ptype, mode, COUNT(DISTINCT rid), SUM(ok), SUM(bad),
    SUM({d.positive("bad - detailed")}), SUM({d.positive("detailed - bad")}) FROM (
        SELECT COALESCE(p.policy_domain, '') AS domain, p.policy_type AS ptype, {mode} AS mode,
               p.report AS rid, {ok} AS ok, {bad} AS bad,
               (SELECT COALESCE(SUM({d.clamp("f.failed_session_count", CAP)}), 0) FROM failures AS f
                WHERE f.policy = p.id) AS detailed
        FROM policies AS p JOIN reports AS r ON r.id = p.report
        WHERE {PERIOD} AND COALESCE(p.policy_domain, '') IN {top}) AS per_policy
    GROUP BY domain, ptype, mode""",
        result_types=f"""SELECT domain, rt, SUM(n), COUNT(DISTINCT rid) FROM ufail
    WHERE domain IN {top} GROUP BY domain, rt""",
        days=f"""SELECT domain, substr(start, 1, 10), COUNT(*), SUM(ok), SUM(failed) FROM unit
    WHERE domain IN {top} GROUP BY domain, substr(start, 1, 10)""",
        all_days="""SELECT substr(start, 1, 10), COUNT(DISTINCT rid), SUM(ok), SUM(failed)
    FROM unit GROUP BY substr(start, 1, 10)""",
        source_keys=f"SELECT * FROM ({src}) AS s ORDER BY n DESC, org, ip, mx LIMIT :limit",
        source_all=f"SELECT COUNT(*), COALESCE(SUM(n), 0) FROM ({src}) AS s",
        source_types="""SELECT f.org, f.ip, f.mx, f.rt, SUM(f.n), COUNT(DISTINCT f.rid)
    FROM topsrc AS t JOIN ufail AS f ON f.org = t.org AND f.ip = t.ip AND f.mx = t.mx
    GROUP BY f.org, f.ip, f.mx, f.rt""",
        reports="""SELECT u.rid, u.org, r.report_id, u.start, u.stop, r.archive_id, u.ok,
    u.failed FROM unit AS u JOIN reports AS r ON r.id = u.rid WHERE u.domain = :domain
    ORDER BY CASE WHEN u.failed > 0 THEN 0 ELSE 1 END, u.start DESC, u.failed DESC, u.rid DESC
    LIMIT :limit""",
        reports_all="SELECT COUNT(*), COALESCE(SUM(failed), 0) FROM unit WHERE domain = :domain",
    )
