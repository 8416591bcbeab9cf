"""The durable archive of raw messages: nothing is acknowledged before it is on disk.

A message is stored under its SHA-256 (``archive_id``), so storing the same bytes twice is
a no-op and the key is stable across re-imports. It starts as ``pending``; processing marks
it ``report`` or ``invalid`` (the quarantine). A crash in between leaves it ``pending``, and
the next start processes it.
"""

from __future__ import annotations

import errno
import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from enum import StrEnum

from tlsrpt_lmtp.db import Database


class ArchiveError(OSError):
    """The message could not be stored durably; the MTA must retry."""


class Status(StrEnum):
    PENDING = "pending"
    REPORT = "report"
    INVALID = "invalid"  # the quarantine


class Archive:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def key(raw: bytes) -> str:
        return hashlib.sha256(raw).hexdigest()

    def put(self, items: Sequence[tuple[bytes, str]], received_at: str) -> list[str]:
        """Store (raw, source) pairs in one fsynced commit; raise ArchiveError if impossible."""
        keys = [self.key(raw) for raw, _ in items]
        rows = [(k, received_at, src, raw) for k, (raw, src) in zip(keys, items, strict=True)]
        try:
            with self.db.transaction(durable=True) as c:
                c.executemany(
                    "INSERT INTO messages (archive_id, received_at, source, status, raw)"
                    " VALUES (?,?,?,'pending',?) ON CONFLICT DO NOTHING",
                    rows,
                )
        except sqlite3.Error as exc:
            code = errno.ENOSPC if "full" in str(exc) else errno.EIO
            raise ArchiveError(code, f"cannot archive message: {exc}") from exc
        return keys

    def get(self, archive_id: str) -> bytes | None:
        rows = self.db.query("SELECT raw FROM messages WHERE archive_id=?", (archive_id,))
        return bytes(rows[0]["raw"]) if rows else None

    def status(self, archive_id: str) -> Status | None:
        rows = self.db.query("SELECT status FROM messages WHERE archive_id=?", (archive_id,))
        return Status(rows[0]["status"]) if rows else None

    def pending(self, limit: int) -> list[tuple[bytes, str, str]]:
        """Up to `limit` (raw, archive_id, source) awaiting processing, oldest first."""
        rows = self.db.query(
            "SELECT raw, archive_id, source FROM messages WHERE status='pending'"
            " ORDER BY received_at LIMIT ?",
            (limit,),
        )
        return [(bytes(r["raw"]), r["archive_id"], r["source"]) for r in rows]

    def scan(self, status: Status) -> Iterator[tuple[str, bytes]]:
        keys = self.db.query(
            "SELECT archive_id FROM messages WHERE status=? ORDER BY received_at", (status,)
        )
        for row in keys:
            raw = self.get(row["archive_id"])
            if raw is not None:
                yield row["archive_id"], raw
