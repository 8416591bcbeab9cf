"""The shared policy cache on PostgreSQL (psycopg 3, one asynchronous connection).

Tables ``sts_shared_policy`` (one row per domain: the record, its fetched_at and expires_at;
an upsert replaces it only with a record fetched later, ``ON CONFLICT ... WHERE``) and
``sts_shared_failure`` (back-off markers, expiring on the server's clock), created on first
use under a transaction-scoped advisory lock so that nodes starting together do not race.
The fetch lease is a session advisory lock on a hash of the domain: a node that dies (or
loses its connection) lets go of it at once.
"""

from __future__ import annotations

import contextlib
import time
from urllib.parse import urlsplit

import psycopg

from tlsrpt_lmtp.sts.shared.base import (
    MAX_RECORD,
    MAX_SKEW,
    Backend,
    BackendError,
    SharedPolicy,
)

_SCHEMA_LOCK = 8461_0001  # pg_advisory_xact_lock key while creating the tables
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sts_shared_policy (domain text PRIMARY KEY,"
    " record bytea NOT NULL, fetched_at double precision NOT NULL,"
    " expires_at double precision NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sts_shared_failure (domain text NOT NULL,"
    " policy_id text NOT NULL, until timestamptz NOT NULL, PRIMARY KEY (domain, policy_id))",
)
_PUT = (
    "INSERT INTO sts_shared_policy AS p (domain, record, fetched_at, expires_at)"
    " VALUES (%s, %s, %s, %s) ON CONFLICT (domain) DO UPDATE SET record = EXCLUDED.record,"
    " fetched_at = EXCLUDED.fetched_at, expires_at = EXCLUDED.expires_at"
    " WHERE p.fetched_at < EXCLUDED.fetched_at OR p.fetched_at > %s"
)
_LEASE_KEY = "hashtextextended('tlsrpt-lmtp:sts:' || %s, 0)"
PURGE_EVERY = 3600.0


class PostgresBackend(Backend):
    kind = "postgresql"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.server = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
        self._url = url
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._purged = 0.0

    async def _db(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in _SCHEMA:
                    await conn.execute(statement)
            self._conn = conn
        return self._conn

    async def get(self, domain: str) -> bytes | None:
        try:
            db = await self._db()
            cur = await db.execute(
                "SELECT substring(record FROM 1 FOR %s) FROM sts_shared_policy WHERE domain = %s",
                (MAX_RECORD + 1, domain),
            )
            row = await cur.fetchone()
        except (psycopg.Error, OSError) as exc:
            raise BackendError(_why(exc)) from exc
        return bytes(row[0]) if row is not None and isinstance(row[0], bytes) else None

    async def put(self, policy: SharedPolicy, record: bytes, now: float) -> bool:
        try:
            db = await self._db()
            cur = await db.execute(
                _PUT,
                (policy.domain, record, policy.fetched_at, policy.expires_at, now + MAX_SKEW),
            )
            stored = cur.rowcount == 1
            if time.monotonic() - self._purged >= PURGE_EVERY:
                self._purged = time.monotonic()
                await db.execute("DELETE FROM sts_shared_policy WHERE expires_at < %s", (now,))
                await db.execute("DELETE FROM sts_shared_failure WHERE until < clock_timestamp()")
        except (psycopg.Error, OSError) as exc:
            raise BackendError(_why(exc)) from exc
        return stored

    async def failed(self, domain: str, policy_id: str) -> bool:
        try:
            db = await self._db()
            cur = await db.execute(
                "SELECT 1 FROM sts_shared_failure WHERE domain = %s AND policy_id = %s"
                " AND until > clock_timestamp()",
                (domain, policy_id),
            )
            return await cur.fetchone() is not None
        except (psycopg.Error, OSError) as exc:
            raise BackendError(_why(exc)) from exc

    async def mark_failed(self, domain: str, policy_id: str, seconds: float) -> None:
        try:
            db = await self._db()
            await db.execute(
                "INSERT INTO sts_shared_failure VALUES"
                " (%s, %s, clock_timestamp() + make_interval(secs => %s))"
                " ON CONFLICT (domain, policy_id) DO UPDATE SET until = EXCLUDED.until",
                (domain, policy_id, seconds),
            )
        except (psycopg.Error, OSError) as exc:
            raise BackendError(_why(exc)) from exc

    async def claim(self, domain: str, token: str, seconds: float) -> bool:
        try:
            db = await self._db()
            cur = await db.execute(f"SELECT pg_try_advisory_lock({_LEASE_KEY})", (domain,))
            row = await cur.fetchone()
        except (psycopg.Error, OSError) as exc:
            raise BackendError(_why(exc)) from exc
        return bool(row and row[0])

    async def release(self, domain: str, token: str) -> None:
        try:
            db = await self._db()
            await db.execute(f"SELECT pg_advisory_unlock({_LEASE_KEY})", (domain,))
        except (psycopg.Error, OSError) as exc:
            raise BackendError(_why(exc)) from exc

    async def reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def close(self) -> None:
        await self.reset()


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300].replace("\n", " ")
