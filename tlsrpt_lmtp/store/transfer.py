"""`tlsrpt-lmtp db migrate`: copy one store into another (SQLite → PostgreSQL, or back).

Everything is copied: the archive (pending messages included, with their attempt counts),
the quarantine, the reports with their policies and failure details, and the alert state.
Each table is walked in key order, in batches (bounded in rows and in bytes of raw mail),
each batch one transaction on the destination. Before a batch is written the destination is
asked which of its keys it holds already (a message's SHA-256, a report's organisation,
report-id and date range, the alert state's keys): those are skipped, and raw mail is read
from the source only for the messages still missing. So a second run copies nothing, and a
run that was stopped (kill -9 included) is simply started again: what was committed stays,
the rest follows. Reports get new ids on the destination, in the source's order; the
destination may already hold reports of its own (a report in both is kept once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tlsrpt_lmtp.store.base import Store

BATCH_ROWS = 500  # messages, or report rows (a report with its policies and failures)
BATCH_BYTES = 16 * 1024 * 1024  # raw mail per batch (at least one message)

_MESSAGE_COLUMNS = (
    "archive_id, received_at, source, status, reason, from_addr, subject, message_id, attempts, raw"
)
_REPORT_COLUMNS = (
    "organization_name, report_id, date_range_start, date_range_end, contact_info,"
    " report_domain, submitter, archive_id, received_at, warnings,"
    " total_successful_session_count, total_failure_session_count"
)
_POLICY_COLUMNS = (
    "policy_type, policy_domain, policy_string, mx_host, total_successful_session_count,"
    " total_failure_session_count"
)
_FAILURE_COLUMNS = (
    "result_type, sending_mta_ip, receiving_mx_hostname, receiving_mx_helo, receiving_ip,"
    " failed_session_count, additional_information, failure_reason_code"
)
# A report's rows: itself, its policies, their failure details.
_REPORT_ROWS = (
    "1 + (SELECT count(*) FROM policies p WHERE p.report = r.id)"
    " + (SELECT count(*) FROM failures f JOIN policies p ON f.policy = p.id"
    " WHERE p.report = r.id)"
)
# The alert state: table → its key columns, its other columns.
_KEYED = {
    "alert_state": (("domain", "cause"), ("severity", "rule", "last_sent", "sent", "suppressed")),
    "alert_budget": (("bucket", "period"), ("sent", "held")),
}


@dataclass(frozen=True, slots=True)
class Copied:
    table: str
    total: int  # rows in the source
    copied: int  # rows written to the destination by this run
    skipped: int  # rows the destination held already


# (table, rows done so far, total rows) after each batch
OnProgress = Callable[[str, int, int], None]


def migrate(
    source: Store,
    dest: Store,
    *,
    batch_rows: int = BATCH_ROWS,
    batch_bytes: int = BATCH_BYTES,
    progress: OnProgress | None = None,
) -> list[Copied]:
    """Copy every table of ``source`` into ``dest``; what each table gave."""
    report = progress or (lambda _t, _d, _n: None)
    return [
        _messages(source, dest, batch_rows, batch_bytes, report),
        _reports(source, dest, batch_rows, report),
        *(_keyed(source, dest, table, batch_rows, report) for table in _KEYED),
    ]


def _count(store: Store, table: str) -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table}")[0]["n"])


def _marks(n: int, width: int = 1) -> str:
    one = "(" + ",".join("?" * width) + ")" if width > 1 else "?"
    return ",".join([one] * n)


def _messages(
    source: Store, dest: Store, rows: int, max_bytes: int, progress: OnProgress
) -> Copied:
    total = _count(source, "messages")
    done = copied = 0
    last = ""
    names = _column_names(_MESSAGE_COLUMNS)  # raw last
    while True:
        keys = source.query(
            "SELECT archive_id, length(raw) AS size FROM messages WHERE archive_id > ?"
            " ORDER BY archive_id LIMIT ?",
            (last, rows),
        )
        if not keys:
            break
        last = keys[-1]["archive_id"]
        held = {
            r["archive_id"]
            for r in dest.query(
                f"SELECT archive_id FROM messages WHERE archive_id IN ({_marks(len(keys))})",
                [k["archive_id"] for k in keys],
            )
        }
        missing = [(k["archive_id"], int(k["size"])) for k in keys if k["archive_id"] not in held]
        for part in _by_bytes(missing, max_bytes):
            found = source.query(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE archive_id IN"
                f" ({_marks(len(part))}) ORDER BY archive_id",
                part,
            )
            with dest.transaction(durable=True) as c:
                c.executemany(
                    f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES ({_marks(len(names))})"
                    " ON CONFLICT DO NOTHING",
                    [[*(r[k] for k in names[:-1]), bytes(r["raw"])] for r in found],
                )
            copied += len(found)
        done += len(keys)
        progress("messages", done, total)
    return Copied("messages", total, copied, total - copied)


def _by_bytes(items: Sequence[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """Keys in runs of at most ``max_bytes`` of raw mail (a larger message alone)."""
    runs: list[list[str]] = []
    size = 0
    for key, length in items:
        if not runs or (size + length > max_bytes and runs[-1]):
            runs.append([])
            size = 0
        runs[-1].append(key)
        size += length
    return runs


def _column_names(columns: str) -> list[str]:
    return [c.strip() for c in columns.split(",")]


def _reports(source: Store, dest: Store, rows: int, progress: OnProgress) -> Copied:
    total = _count(source, "reports")
    done = copied = 0
    last = 0
    names = _column_names(_REPORT_COLUMNS)
    while True:
        weights = source.query(
            f"SELECT r.id AS id, {_REPORT_ROWS} AS w FROM reports r WHERE r.id > ?"
            " ORDER BY r.id LIMIT ?",
            (last, rows),
        )
        if not weights:
            break
        chosen: list[int] = []
        weight = 0
        for w in weights:
            if chosen and weight + int(w["w"]) > rows:
                break
            chosen.append(int(w["id"]))
            weight += int(w["w"])
        last = chosen[-1]
        found = source.query(
            f"SELECT id, {_REPORT_COLUMNS} FROM reports WHERE id IN ({_marks(len(chosen))})"
            " ORDER BY id",
            chosen,
        )
        keys = [_report_key(r) for r in found]
        held = {
            _report_key(r)
            for r in dest.query(
                "SELECT organization_name, report_id, date_range_start, date_range_end"
                " FROM reports WHERE (organization_name, report_id, date_range_start,"
                f" date_range_end) IN (VALUES {_marks(len(keys), 4)})",
                [v for k in keys for v in k],
            )
        }
        todo = [r for r in found if _report_key(r) not in held]
        if todo:
            copied += _copy_reports(source, dest, todo, names)
        done += len(found)
        progress("reports", done, total)
    return Copied("reports", total, copied, total - copied)


def _report_key(row: Any) -> tuple[str, str, str, str]:
    return (
        row["organization_name"],
        row["report_id"],
        row["date_range_start"],
        row["date_range_end"],
    )


def _copy_reports(source: Store, dest: Store, todo: list[Any], names: list[str]) -> int:
    ids = [int(r["id"]) for r in todo]
    policies = source.query(
        f"SELECT id, report, {_POLICY_COLUMNS} FROM policies WHERE report IN"
        f" ({_marks(len(ids))}) ORDER BY id",
        ids,
    )
    policy_ids = [int(p["id"]) for p in policies]
    failures = (
        source.query(
            f"SELECT policy, {_FAILURE_COLUMNS} FROM failures WHERE policy IN"
            f" ({_marks(len(policy_ids))}) ORDER BY id",
            policy_ids,
        )
        if policy_ids
        else []
    )
    policy_names = _column_names(_POLICY_COLUMNS)
    failure_names = _column_names(_FAILURE_COLUMNS)
    copied = 0
    with dest.transaction(durable=False) as c:
        dest.reserve(c, sorted(_report_key(r) for r in todo))
        new_report: dict[int, int] = {}
        for r in todo:
            row = c.execute(
                f"INSERT INTO reports ({_REPORT_COLUMNS}) VALUES ({_marks(len(names))})"
                " ON CONFLICT DO NOTHING RETURNING id",
                [r[k] for k in names],
            ).fetchone()
            if row is not None:  # else stored meanwhile by a node on the destination
                new_report[int(r["id"])] = int(row[0])
                copied += 1
        new_policy: dict[int, int] = {}
        for p in policies:
            parent = new_report.get(int(p["report"]))
            if parent is None:
                continue
            (pk,) = c.execute(
                f"INSERT INTO policies (report, {_POLICY_COLUMNS})"
                f" VALUES ({_marks(len(policy_names) + 1)}) RETURNING id",
                [parent, *(p[k] for k in policy_names)],
            ).fetchone()
            new_policy[int(p["id"])] = int(pk)
        rows = [
            [new_policy[int(f["policy"])], *(f[k] for k in failure_names)]
            for f in failures
            if int(f["policy"]) in new_policy
        ]
        if rows:
            c.executemany(
                f"INSERT INTO failures (policy, {_FAILURE_COLUMNS})"
                f" VALUES ({_marks(len(failure_names) + 1)})",
                rows,
            )
    return copied


def _keyed(source: Store, dest: Store, table: str, rows: int, progress: OnProgress) -> Copied:
    key, rest = _KEYED[table]
    columns = (*key, *rest)
    everything = source.query(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(key)}")
    held = {tuple(r[k] for k in key) for r in dest.query(f"SELECT {', '.join(key)} FROM {table}")}
    todo = [r for r in everything if tuple(r[k] for k in key) not in held]
    for start in range(0, len(todo), rows):
        with dest.transaction(durable=False) as c:
            c.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({_marks(len(columns))})"
                " ON CONFLICT DO NOTHING",
                [[r[k] for k in columns] for r in todo[start : start + rows]],
            )
    progress(table, len(everything), len(everything))
    return Copied(table, len(everything), len(todo), len(everything) - len(todo))
