"""Retention's SQL (the Store's ``prune_messages``, ``prune_reports``, ``count_prunable``), one
short transaction per call, on either backend.

The batch is chosen through the index on (status, received_at): the oldest finished messages
of each status, without sorting them all (no ORDER BY across the two statuses). SQLite deletes
them with
``secure_delete`` on (``SqliteStore.erasing``) so that the mail does not live on in the
file's free pages. PostgreSQL: one ``DELETE`` of the rows chosen ``FOR UPDATE SKIP LOCKED``,
so nodes pruning at once never wait for each other; the space is reclaimed by (auto)vacuum.
A pending message is never chosen; a report goes whole, with its policies and failures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tlsrpt_lmtp.core.retention import Counts, Cutoffs, whole_reports

if TYPE_CHECKING:
    from tlsrpt_lmtp.store.base import Store

_FINISHED = "status IN ('report', 'invalid')"
# A report's rows: itself, its policies, their failure details (the cascade deletes them all).
REPORT_ROWS = (
    "1 + (SELECT count(*) FROM policies p WHERE p.report = r.id)"
    " + (SELECT count(*) FROM failures f JOIN policies p ON f.policy = p.id"
    " WHERE p.report = r.id)"
)
# Through the index on date_range_start (a report's range is a day or so: the end follows).
_OLD_REPORTS = "r.date_range_start < ? AND r.date_range_end < ?"


def _received(store: Store) -> str:
    return (
        "messages INDEXED BY messages_status_received" if store.dialect == "sqlite" else "messages"
    )


def messages(store: Store, before: str, limit: int) -> Counts:
    with store.transaction(durable=False) as c:
        if store.dialect == "sqlite":
            rows: list[Any] = c.execute(
                f"SELECT archive_id, status, length(raw) FROM {_received(store)}"
                f" WHERE {_FINISHED} AND received_at < ? LIMIT ?",
                (before, limit),
            ).fetchall()
            if rows:
                with store.erasing(c):
                    c.executemany(
                        "DELETE FROM messages WHERE archive_id=?", [(r[0],) for r in rows]
                    )
        else:
            rows = c.execute(
                "WITH doomed AS (SELECT archive_id FROM messages"
                f" WHERE {_FINISHED} AND received_at < ? LIMIT ?"
                " FOR UPDATE SKIP LOCKED)"
                " DELETE FROM messages AS m USING doomed AS d WHERE m.archive_id = d.archive_id"
                " RETURNING m.archive_id, m.status, octet_length(m.raw)",
                (before, limit),
            ).fetchall()
    invalid = sum(1 for r in rows if r[1] == "invalid")
    return Counts(len(rows) - invalid, invalid, sum(int(r[2]) for r in rows), 0, len(rows))


def reports(store: Store, before: str, limit: int) -> Counts:
    with store.transaction(durable=False) as c:
        rows = c.execute(
            f"SELECT r.id, {REPORT_ROWS} FROM reports r WHERE {_OLD_REPORTS}"
            " ORDER BY r.date_range_start LIMIT ?",
            (before, before, limit),
        ).fetchall()
        chosen, weight = whole_reports([(int(r[0]), int(r[1])) for r in rows], limit)
        if chosen:
            with store.erasing(c):
                c.executemany("DELETE FROM reports WHERE id=?", [(pk,) for pk in chosen])
    return Counts(reports=len(chosen), rows=weight)


def count(store: Store, cutoffs: Cutoffs) -> tuple[Counts, int]:
    counts, pending = Counts(), 0
    if cutoffs.raw is not None:
        by_status = {
            row["status"]: (int(row["n"]), int(row["size"]))
            for row in store.query(
                "SELECT status, count(*) AS n, coalesce(sum(length(raw)), 0) AS size"
                f" FROM {_received(store)}"
                " WHERE status IN ('pending', 'report', 'invalid') AND received_at < ?"
                " GROUP BY status",
                (cutoffs.raw,),
            )
        }
        done, invalid = by_status.get("report", (0, 0)), by_status.get("invalid", (0, 0))
        pending = by_status.get("pending", (0, 0))[0]
        counts += Counts(done[0], invalid[0], done[1] + invalid[1], 0, done[0] + invalid[0])
    if cutoffs.reports is not None:
        [row] = store.query(
            f"SELECT count(*) AS n, coalesce(sum({REPORT_ROWS}), 0) AS w FROM reports r"
            f" WHERE {_OLD_REPORTS}",
            (cutoffs.reports, cutoffs.reports),
        )
        counts += Counts(reports=int(row["n"]), rows=int(row["w"]))
    return counts, pending
