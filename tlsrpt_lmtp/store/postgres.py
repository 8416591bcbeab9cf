"""The shared store: one PostgreSQL database for several nodes (psycopg 3).

- Stage 1 commits the raw messages on the receiving node (synchronous_commit on: durable);
  when the database cannot be reached the MTA is answered 451 and retries.
- Stage 2 on any node claims pending messages with ``FOR UPDATE SKIP LOCKED``: two nodes
  never take the same message. A claim records the claiming session (``claimed_by``, its
  backend pid) and time; a message whose session is gone (the node died: its connection
  closed) or whose claim is older than ``lease`` seconds (a node hung) is taken again, alone,
  with its attempt counted, as after a crash on one node.
- ``reserve`` takes transaction-scoped advisory locks on the chunk's report keys in one
  global order, so two nodes storing the same reports wait for each other instead of
  deadlocking; the unique constraint then stores a report once (``ON CONFLICT DO NOTHING``)
  and the other node logs it as a duplicate.
- Alert decisions run under one advisory lock, so two nodes never both send an alert.
- The schema is created or migrated on open under an advisory lock (nodes starting at once).

Every wait is bounded: connect_timeout, statement_timeout, lock_timeout.
"""

from __future__ import annotations

import errno
import hashlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tlsrpt_lmtp.store import schema
from tlsrpt_lmtp.store.base import (
    ArchiveError,
    Pending,
    Store,
    StoreUnavailable,
    Tx,
    archive_key,
    choose,
    pack,
)
from tlsrpt_lmtp.store.dialect import pyformat

CONNECT_TIMEOUT = 10  # seconds
STATEMENT_TIMEOUT_MS = 60_000
READER_STATEMENT_TIMEOUT_MS = 600_000  # a summary over years of reports
LOCK_TIMEOUT_MS = 30_000
LEASE = 600.0  # seconds a claim holds while its session lives (a hung node's work is freed)
# advisory lock keys (pg_advisory_xact_lock's bigint space; report keys hash elsewhere in it)
_MIGRATE_LOCK = 0x746C7372_70740001
_ALERT_LOCK = 0x746C7372_70740002


def connect(
    url: str, *, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS
) -> psycopg.Connection[Any]:
    """A connection with every wait bounded, or StoreUnavailable."""
    options = f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={LOCK_TIMEOUT_MS}"
    try:
        return psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            options=options,
            application_name="tlsrpt-lmtp",
        )
    except psycopg.Error as exc:
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {_short(exc)}") from exc


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


class PgTx:
    """The transaction handle: ``?`` / ``:name`` placeholders, as on SQLite. A lost connection
    or a timeout is StoreUnavailable (the work is retried, not blamed on the message)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = (), /) -> psycopg.Cursor[Any]:
        try:
            if not params:
                return self.conn.execute(sql.encode())
            return self.conn.execute(pyformat(sql).encode(), params)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"database error: {_short(exc)}") from exc

    def executemany(self, sql: str, params: Any, /) -> psycopg.Cursor[Any]:
        cur = self.conn.cursor()
        try:
            cur.executemany(pyformat(sql).encode(), params)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"database error: {_short(exc)}") from exc
        return cur


class PostgresStore(Store):
    dialect = "postgresql"

    def __init__(self, url: str, *, lease: float = LEASE) -> None:
        self.url = url
        self.lease = lease
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        with self.transaction(durable=True) as c:
            c.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATE_LOCK,))
            schema.migrate(c, "postgresql")

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = connect(self.url)
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def transaction(self, *, durable: bool) -> Iterator[PgTx]:
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    c = PgTx(conn)
                    if not durable:  # derived data: it can be derived again from the archive
                        c.execute("SET LOCAL synchronous_commit = off")
                    yield c
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"database error: {_short(exc)}") from exc

    def put(self, items: Sequence[tuple[bytes, str]], received_at: str) -> list[str]:
        keys = [archive_key(raw) for raw, _ in items]
        rows = [(k, received_at, src, raw) for k, (raw, src) in zip(keys, items, strict=True)]
        try:
            with self.transaction(durable=True) as c:
                c.executemany(
                    "INSERT INTO messages (archive_id, received_at, source, status, raw)"
                    " VALUES (?,?,?,'pending',?) ON CONFLICT DO NOTHING",
                    rows,
                )
        except (psycopg.Error, StoreUnavailable) as exc:
            code = errno.ENOSPC if "space" in str(exc) else errno.EIO
            raise ArchiveError(code, f"cannot archive message: {_short(exc)}") from exc
        return keys

    def claim(self, max_count: int, max_bytes: int) -> list[Pending]:
        with self.transaction(durable=False) as c:
            rows = c.execute(
                "SELECT archive_id, attempts, octet_length(raw) FROM messages AS m"
                " WHERE status = 'pending' AND (claimed_by IS NULL"
                "  OR claimed_by = pg_backend_pid()"
                "  OR CAST(claimed_at AS timestamptz) < now() - make_interval(secs => ?)"
                "  OR NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a WHERE a.pid = m.claimed_by"
                "   AND a.backend_start <= CAST(m.claimed_at AS timestamptz)))"
                " ORDER BY received_at, archive_id LIMIT ? FOR UPDATE SKIP LOCKED",
                (self.lease, max_count),
            ).fetchall()
            chosen = choose([(r[0], r[1], r[2]) for r in rows], max_bytes)
            if not chosen:
                return []
            found = c.execute(
                "UPDATE messages SET attempts = attempts + 1, claimed_by = pg_backend_pid(),"
                " claimed_at = to_char(clock_timestamp() AT TIME ZONE 'UTC',"
                ' \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\')'
                " WHERE archive_id = ANY(?)"
                " RETURNING raw, archive_id, source, attempts - 1, received_at",
                (chosen,),
            ).fetchall()
        return pack(found, chosen)

    def reserve(self, c: Tx, keys: Sequence[tuple[str, str, str, str]]) -> None:
        locks = sorted({_lock_key(k) for k in keys})
        if locks:
            c.execute(
                "SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(? AS bigint[])) AS t(k)",
                (locks,),
            ).fetchall()

    @contextmanager
    def alert_transaction(self) -> Iterator[PgTx]:
        with self.transaction(durable=True) as c:
            c.execute("SELECT pg_advisory_xact_lock(?)", (_ALERT_LOCK,))
            yield c

    def reader(self) -> PgReader:
        return open_reader(self.url)

    def query(
        self, sql: str, params: Sequence[object] | Mapping[str, object] = ()
    ) -> list[Mapping[str, Any]]:
        with self._lock:
            try:
                cur = self._connection().cursor(row_factory=dict_row)
                if params:
                    cur.execute(pyformat(sql).encode(), params)
                else:
                    cur.execute(sql.encode())
                rows: list[Mapping[str, Any]] = [row for row in cur.fetchall()]
                return rows
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"database error: {_short(exc)}") from exc


def _lock_key(key: tuple[str, str, str, str]) -> int:
    digest = hashlib.sha256("\0".join(key).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _ints(cursor: Any) -> Any:
    """Rows as tuples, PostgreSQL's numeric sums as ints (the views sum integers only)."""

    def make(values: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(int(v) if isinstance(v, Decimal) else v for v in values)

    return make


class PgReader:
    """A read-only session for the views: its own connection, parameters bound client-side
    (temporary tables take no server-side parameters), numeric sums as ints."""

    dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = (), /) -> Any:
        cur = psycopg.ClientCursor(self.conn, row_factory=_ints)
        try:
            if not params:
                return cur.execute(sql.encode())
            return cur.execute(pyformat(sql).encode(), params)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot read the store: {_short(exc)}") from exc

    def executemany(self, sql: str, params: Any, /) -> Any:
        cur = psycopg.ClientCursor(self.conn, row_factory=_ints)
        try:
            cur.executemany(pyformat(sql).encode(), params)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot read the store: {_short(exc)}") from exc
        return cur

    def close(self) -> None:
        self.conn.close()


def open_reader(url: str) -> PgReader:
    return PgReader(connect(url, statement_timeout_ms=READER_STATEMENT_TIMEOUT_MS))
