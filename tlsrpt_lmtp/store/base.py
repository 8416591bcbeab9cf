"""The store interface: what ingest, the alerts and the views need of the database.

Two backends implement it: ``sqlite.py`` (the embedded default: one file, one node) and
``postgres.py`` (one database shared by several nodes). Everything above this package speaks
only to a ``Store``:

- stage 1, ``put``: raw messages into the archive in one durable commit, or ``ArchiveError``
  (the MTA is answered 451 and retries);
- stage 2, ``claim``: take up pending messages (counting the attempt), then in one
  ``transaction`` with a ``savepoint`` per message, ``add_report`` (dedup by the unique
  constraint on organisation, report-id and date range) and ``finish_message``;
- the alerts' state, through ``alert_transaction`` (serialised across processes and nodes);
- the views, through a read-only ``reader``, whose ``dialect`` picks the few SQL fragments
  that differ (``dialect.py``).

The transaction handle is the backend's connection (or a thin wrapper of it): it offers
``execute(sql, params)`` and ``executemany`` with ``?`` placeholders on every backend.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from tlsrpt_lmtp.core.model import MailMeta, Report
from tlsrpt_lmtp.core.retention import Counts, Cutoffs


class ArchiveError(OSError):
    """The message could not be stored durably; the MTA must retry."""


class StoreUnavailable(OSError):
    """The store cannot be reached or is busy (locked, timed out, connection lost): the work
    is retried later, never counted against the message."""


class Status(StrEnum):
    PENDING = "pending"
    REPORT = "report"
    INVALID = "invalid"  # the quarantine


MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Pending:
    """A message taken up by stage 2; ``attempts`` counts the earlier take-ups."""

    raw: bytes
    archive_id: str
    source: str
    attempts: int = 0
    received_at: str = ""

    @property
    def interrupted(self) -> bool:
        """Taken up before without finishing: the process died or was killed meanwhile."""
        return self.attempts > 0


class Tx(Protocol):
    """A transaction handle: ``?`` placeholders (or ``:name`` with a mapping)."""

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, params: Any, /) -> Any: ...


class Reader(Protocol):
    """Read-only access for the views and findings (temporary tables allowed)."""

    @property
    def dialect(self) -> str: ...

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, params: Any, /) -> Any: ...

    def close(self) -> None: ...


def archive_key(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def choose(rows: Sequence[tuple[str, int, int]], max_bytes: int) -> list[str]:
    """Of (archive_id, attempts, size) rows, oldest first, those one claim takes: up to
    ``max_bytes`` of raw mail (at least one message); a message taken up before is taken
    alone, so that the message that killed the process cannot take a batch down with it."""
    chosen: list[str] = []
    total = 0
    for key, attempts, size in rows:
        if chosen and (attempts > 0 or total + size > max_bytes):
            break
        chosen.append(key)
        total += size
        if attempts > 0:
            break
    return chosen


def pack(rows: list[Any], chosen: Sequence[str]) -> list[Pending]:
    """(raw, archive_id, source, attempts, received_at) rows as Pending, in ``chosen``'s order."""
    order = {key: i for i, key in enumerate(chosen)}
    rows = sorted(rows, key=lambda r: order[r[1]])
    return [Pending(bytes(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


class Store(ABC):
    """One report store. Thread-safe: the methods serialise on the store's connection."""

    dialect: str
    url: str  # opens the same store again (open_store(url)): handed to the stage 2 process

    @abstractmethod
    def close(self) -> None: ...

    # --- stage 1 ---------------------------------------------------------------------------

    def put(self, items: Sequence[tuple[bytes, str]], received_at: str) -> list[str]:
        """Store (raw, source) pairs as pending in one durable commit; their archive ids.
        Storing bytes already there is a no-op. Raises ArchiveError if impossible."""
        keys = [archive_key(raw) for raw, _ in items]
        rows = [(k, received_at, src, raw) for k, (raw, src) in zip(keys, items, strict=True)]
        try:
            with self.transaction(durable=True) as c:
                c.executemany(
                    "INSERT INTO messages (archive_id, received_at, source, status, raw)"
                    " VALUES (?,?,?,'pending',?) ON CONFLICT DO NOTHING",
                    rows,
                )
        except (self.driver_error, StoreUnavailable) as exc:
            raise self.archive_error(exc) from exc
        return keys

    # the backend's own exception class: any of them while archiving is an ArchiveError
    driver_error: type[Exception] = Exception

    @abstractmethod
    def archive_error(self, exc: Exception) -> ArchiveError:
        """What to tell the MTA when ``put`` failed (ENOSPC when the store is full)."""

    @staticmethod
    def key(raw: bytes) -> str:
        return archive_key(raw)

    def get(self, archive_id: str) -> bytes | None:
        rows = self.query("SELECT raw FROM messages WHERE archive_id=?", (archive_id,))
        return bytes(rows[0]["raw"]) if rows else None

    def status(self, archive_id: str) -> Status | None:
        rows = self.query("SELECT status FROM messages WHERE archive_id=?", (archive_id,))
        return Status(rows[0]["status"]) if rows else None

    def scan(self, status: Status) -> Iterator[tuple[str, bytes]]:
        """(archive_id, raw) of every message with ``status``, oldest first, one at a time."""
        keys = self.query(
            "SELECT archive_id FROM messages WHERE status=? ORDER BY received_at, archive_id",
            (str(status),),
        )
        for row in keys:
            raw = self.get(row["archive_id"])
            if raw is not None:
                yield row["archive_id"], raw

    def pending_count(self) -> int:
        rows = self.query("SELECT COUNT(*) AS n FROM messages WHERE status='pending'")
        return int(rows[0]["n"])

    # --- stage 2 ---------------------------------------------------------------------------

    @abstractmethod
    def claim(self, max_count: int, max_bytes: int) -> list[Pending]:
        """Take up pending messages, oldest first, and count the attempt durably: at most
        ``max_count`` messages and ``max_bytes`` of raw mail (at least one); one taken up
        before (``interrupted``) is taken alone. On a shared store, a message another live
        node is working on is not taken. Raises StoreUnavailable."""

    @abstractmethod
    def transaction(self, *, durable: bool) -> AbstractContextManager[Any]:
        """A transaction (committed at the end of the block, rolled back on an exception);
        ``durable=False`` for derived data, which can always be derived again from the
        archive. Raises StoreUnavailable when it cannot begin or commit."""

    @contextmanager
    def savepoint(self, c: Tx) -> Iterator[None]:
        """A block undone alone when it raises (the exception goes on)."""
        c.execute("SAVEPOINT message")
        try:
            yield
        except BaseException:
            c.execute("ROLLBACK TO SAVEPOINT message")
            c.execute("RELEASE SAVEPOINT message")
            raise
        c.execute("RELEASE SAVEPOINT message")

    @abstractmethod
    def reserve(self, c: Tx, keys: Sequence[tuple[str, str, str, str]]) -> None:
        """Lock these report keys for the transaction, in one global order, before adding
        them (several nodes adding the same reports then never deadlock)."""

    def insert_id(self, c: Tx, sql: str, params: Sequence[object]) -> int | None:
        """Run an INSERT; the new row's id, or None when it inserted nothing (a conflict)."""
        row = c.execute(sql + " RETURNING id", params).fetchone()
        return None if row is None else int(row[0])

    def add_report(
        self, c: Tx, report: Report, *, meta: MailMeta, archive_id: str, received_at: str
    ) -> bool:
        """Store a report; False if it is a duplicate (same org, id and date range).

        A report stored before by this same message while the message is still pending
        (its processing was interrupted before its events were written) is not a duplicate:
        its events are still owed, and they must be the same as the first time.
        """
        org, rid, start, end = report.dedup_key
        report_pk = self.insert_id(
            c,
            "INSERT INTO reports (organization_name, report_id, date_range_start,"
            " date_range_end, contact_info, report_domain, submitter, archive_id,"
            " received_at, warnings, total_successful_session_count,"
            " total_failure_session_count) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT DO NOTHING",
            (
                org,
                rid,
                start,
                end,
                report.contact_info,
                meta.report_domain,
                meta.submitter,
                archive_id,
                received_at,
                json.dumps(report.warnings),
                report.total_successful_session_count,
                report.total_failure_session_count,
            ),
        )
        if report_pk is None:
            owner = c.execute(
                "SELECT r.archive_id, m.status FROM reports r JOIN messages m"
                " ON m.archive_id = r.archive_id WHERE r.organization_name=?"
                " AND r.report_id=? AND r.date_range_start=? AND r.date_range_end=?",
                (org, rid, start, end),
            ).fetchone()
            return owner is not None and tuple(owner) == (archive_id, "pending")
        for p in report.policies:
            policy_pk = self.insert_id(
                c,
                "INSERT INTO policies (report, policy_type, policy_domain, policy_string,"
                " mx_host, total_successful_session_count, total_failure_session_count)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    report_pk,
                    p.policy_type,
                    p.policy_domain,
                    json.dumps(p.policy_string),
                    json.dumps(p.mx_host),
                    p.total_successful_session_count,
                    p.total_failure_session_count,
                ),
            )
            if p.failure_details:
                c.executemany(
                    "INSERT INTO failures (policy, result_type, sending_mta_ip,"
                    " receiving_mx_hostname, receiving_mx_helo, receiving_ip,"
                    " failed_session_count, additional_information, failure_reason_code)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            policy_pk,
                            d.result_type,
                            d.sending_mta_ip,
                            d.receiving_mx_hostname,
                            d.receiving_mx_helo,
                            d.receiving_ip,
                            d.failed_session_count,
                            d.additional_information,
                            d.failure_reason_code,
                        )
                        for d in p.failure_details
                    ],
                )
        return True

    @staticmethod
    def finish_message(
        c: Tx, archive_id: str, *, status: str, reason: str | None, meta: MailMeta
    ) -> None:
        Store.finish_messages(c, [(archive_id, status, reason, meta)])

    @staticmethod
    def finish_messages(c: Tx, items: Sequence[tuple[str, str, str | None, MailMeta]]) -> None:
        """``finish_message`` for (archive_id, status, reason, meta) items, in one batch."""
        c.executemany(
            "UPDATE messages SET status=?, reason=?, from_addr=?, subject=?, message_id=?"
            " WHERE archive_id=?",
            [
                (str(status), reason, meta.from_, meta.subject, meta.message_id, archive_id)
                for archive_id, status, reason, meta in items
            ],
        )

    # --- retention (store/prune.py) --------------------------------------------------------

    def prune_messages(self, before: str, limit: int) -> Counts:
        """Delete at most ``limit`` finished messages (``report`` or ``invalid``, never
        ``pending``) received before ``before``, oldest first, in one short transaction."""
        from tlsrpt_lmtp.store import prune

        return prune.messages(self, before, limit)

    def prune_reports(self, before: str, limit: int) -> Counts:
        """Delete whole reports whose date range ended before ``before`` (with their policies
        and failures): about ``limit`` rows in all, at least one report, one transaction."""
        from tlsrpt_lmtp.store import prune

        return prune.reports(self, before, limit)

    def count_prunable(self, cutoffs: Cutoffs) -> tuple[Counts, int]:
        """What a prune would delete now, and the pending messages older than the cut-off."""
        from tlsrpt_lmtp.store import prune

        return prune.count(self, cutoffs)

    @contextmanager
    def erasing(self, c: Tx) -> Iterator[None]:
        """Around the deletion of personal data: the backend overwrites what it frees."""
        yield

    # --- alerts and views ------------------------------------------------------------------

    @abstractmethod
    def alert_transaction(self) -> AbstractContextManager[Tx]:
        """A transaction for the alert state, serialised with every other process or node
        deciding an alert on this store (so two of them cannot both send it)."""

    @abstractmethod
    def reader(self) -> Reader:
        """A new read-only session for the views (the caller closes it)."""

    @abstractmethod
    def query(
        self, sql: str, params: Sequence[object] | Mapping[str, object] = ()
    ) -> list[Mapping[str, Any]]:
        """Rows by column name, outside any transaction (``?`` placeholders)."""
