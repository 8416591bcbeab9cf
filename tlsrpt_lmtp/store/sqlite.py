"""The embedded store: one SQLite file (the default; one node).

WAL mode. A transaction is ``durable`` (synchronous=FULL: the WAL is fsynced at commit) when
it stores raw messages that are about to be acknowledged; everything derived from them is
written with synchronous=NORMAL, because it can always be derived again from the archive.
One fsynced commit may carry a whole batch of messages (group commit). The file and its
-wal and -shm companions (raw mail) are mode 0640 from the first byte.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tlsrpt_lmtp.store import schema
from tlsrpt_lmtp.store.base import (
    ArchiveError,
    Pending,
    Store,
    StoreUnavailable,
    Tx,
    choose,
    pack,
)


@contextmanager
def _umask(bits: int) -> Iterator[None]:
    """Add ``bits`` to the process umask for the block (never loosening it)."""
    old = os.umask(0o077)
    os.umask(old | bits)
    try:
        yield
    finally:
        os.umask(old)


class SqliteStore(Store):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:{path}"
        self._lock = threading.RLock()
        self._durable: bool | None = None
        # SQLite gives -wal and -shm (raw mail) the mode of the database file, so the file must
        # be 0640 from the first byte: a chmod after the schema would come too late for them.
        with _umask(0o027):
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            schema.migrate(self._db, "sqlite")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):  # stores made before
            with suppress(FileNotFoundError):
                name.chmod(0o640)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self, *, durable: bool) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            try:
                if durable is not self._durable:  # most processes only ever use one of the two
                    db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                    self._durable = durable
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"database error: {exc}") from exc
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise StoreUnavailable(f"database error: {exc}") from exc

    driver_error = sqlite3.Error

    def archive_error(self, exc: Exception) -> ArchiveError:
        code = errno.ENOSPC if "full" in str(exc) else errno.EIO
        return ArchiveError(code, f"cannot archive message: {exc}")

    def claim(self, max_count: int, max_bytes: int) -> list[Pending]:
        try:
            rows = self.query(
                "SELECT archive_id, attempts, length(raw) AS size FROM messages"
                " WHERE status='pending' ORDER BY received_at, archive_id LIMIT ?",
                (max_count,),
            )
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        chosen = choose([(r["archive_id"], r["attempts"], r["size"]) for r in rows], max_bytes)
        if not chosen:
            return []
        marks = ",".join("?" * len(chosen))
        with self.transaction(durable=False) as c:
            found = c.execute(
                f"SELECT raw, archive_id, source, attempts, received_at FROM messages"
                f" WHERE status='pending' AND archive_id IN ({marks})",
                chosen,
            ).fetchall()
            c.execute(
                f"UPDATE messages SET attempts=attempts+1 WHERE archive_id IN ({marks})", chosen
            )
        return pack(found, chosen)

    def reserve(self, c: Tx, keys: Sequence[tuple[str, str, str, str]]) -> None:
        """One writer at a time (BEGIN IMMEDIATE): nothing to lock."""

    def insert_id(self, c: Tx, sql: str, params: Sequence[object]) -> int | None:
        # lastrowid: RETURNING costs a fetch per row (~2 us a report on the small-report path)
        cur = c.execute(sql, params)
        return int(cur.lastrowid) if cur.rowcount > 0 else None

    @contextmanager
    def erasing(self, c: Tx) -> Iterator[None]:
        """secure_delete: deleted mail is overwritten, not left in the file's free pages."""
        (before,) = c.execute("PRAGMA secure_delete").fetchone()
        c.execute("PRAGMA secure_delete=ON")
        try:
            yield
        finally:
            c.execute(f"PRAGMA secure_delete={int(before)}")

    @contextmanager
    def alert_transaction(self) -> Iterator[sqlite3.Connection]:
        with self.transaction(durable=False) as c:
            yield c

    def reader(self) -> SqliteReader:
        return open_reader(self.path)

    def query(
        self, sql: str, params: Sequence[object] | Mapping[str, object] = ()
    ) -> list[Mapping[str, Any]]:
        """Read-only access for views and tests."""
        with self._lock:
            cur = self._db.execute(sql, params)
            cur.row_factory = sqlite3.Row
            return list(cur)


class SqliteReader:
    """A read-only connection to the store file (the server may be writing it: WAL lets both
    run); the temporary tables of the views live in temp storage."""

    dialect = "sqlite"

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, params: Any = (), /) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def executemany(self, sql: str, params: Any, /) -> sqlite3.Cursor:
        return self.db.executemany(sql, params)

    def close(self) -> None:
        self.db.close()


def open_reader(path: Path) -> SqliteReader:
    if not path.is_file():
        raise FileNotFoundError(f"no report store at {path} (wrong --data-dir or --config?)")
    return SqliteReader(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10))
