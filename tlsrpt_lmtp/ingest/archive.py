"""The durable archive of raw messages: nothing is acknowledged before it is on disk.

A message is stored under its SHA-256 (``archive_id``), so storing the same bytes twice is
a no-op and the key is stable across re-imports. It starts as ``pending``; processing marks
it ``report`` or ``invalid`` (the quarantine) once its events are written. A crash in between
leaves it ``pending``, and the next start processes it again. Each time stage 2 takes a
message up, its ``attempts`` count grows: a message taken up before is processed alone, and
one taken up ``MAX_ATTEMPTS`` times without finishing is quarantined as poison, so a message
that kills the process cannot form a crash loop.
"""

from __future__ import annotations

import errno
import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from tlsrpt_lmtp.ingest.db import Database


class ArchiveError(OSError):
    """The message could not be stored durably; the MTA must retry."""


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

    def claim(self, max_count: int, max_bytes: int) -> list[Pending]:
        """Take up pending messages, oldest first, and count the attempt durably.

        The batch stops at ``max_count`` messages or ``max_bytes`` of raw mail (at least one
        message is taken). A message taken up before (``interrupted``) is always taken alone,
        so that the message that killed the process cannot take a whole batch down with it.
        """
        rows = self.db.query(
            "SELECT archive_id, attempts, length(raw) AS size FROM messages"
            " WHERE status='pending' ORDER BY received_at, archive_id LIMIT ?",
            (max_count,),
        )
        chosen: list[str] = []
        total = 0
        for row in rows:
            if chosen and (row["attempts"] > 0 or total + row["size"] > max_bytes):
                break
            chosen.append(row["archive_id"])
            total += row["size"]
            if row["attempts"] > 0:
                break
        if not chosen:
            return []
        marks = ",".join("?" * len(chosen))
        with self.db.transaction(durable=False) as c:
            found = c.execute(
                f"SELECT raw, archive_id, source, attempts, received_at FROM messages"
                f" WHERE status='pending' AND archive_id IN ({marks})",
                chosen,
            ).fetchall()
            c.execute(
                f"UPDATE messages SET attempts=attempts+1 WHERE archive_id IN ({marks})", chosen
            )
        order = {key: i for i, key in enumerate(chosen)}
        found.sort(key=lambda r: order[r[1]])
        return [Pending(bytes(r[0]), r[1], r[2], r[3], r[4]) for r in found]

    def scan(self, status: Status) -> Iterator[tuple[str, bytes]]:
        keys = self.db.query(
            "SELECT archive_id FROM messages WHERE status=? ORDER BY received_at", (status,)
        )
        for row in keys:
            raw = self.get(row["archive_id"])
            if raw is not None:
                yield row["archive_id"], raw
