"""The one SQLite database: the raw-message archive and the normalised reports.

WAL mode. A transaction is `durable` (synchronous=FULL: the WAL is fsynced at commit) when
it stores raw messages that are about to be acknowledged; everything derived from them is
written with synchronous=NORMAL, because it can always be derived again from the archive.
One fsynced commit may carry a whole batch of messages (group commit).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

SCHEMA_VERSION = 3

# The views select reports by period (views/query.py); without it a short period scans them all.
REPORTS_START_INDEX = "CREATE INDEX IF NOT EXISTS reports_start ON reports(date_range_start)"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    archive_id   TEXT PRIMARY KEY,       -- SHA-256 of raw
    received_at  TEXT NOT NULL,
    source       TEXT NOT NULL,
    status       TEXT NOT NULL,          -- 'pending', 'report', 'invalid' (quarantine)
    reason       TEXT,
    from_addr    TEXT,
    subject      TEXT,
    message_id   TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,  -- times stage 2 took it up (crash-loop guard)
    raw          BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_status ON messages(status);
CREATE TABLE IF NOT EXISTS reports (
    id                 INTEGER PRIMARY KEY,
    organization_name  TEXT NOT NULL,
    report_id          TEXT NOT NULL,
    date_range_start   TEXT NOT NULL,
    date_range_end     TEXT NOT NULL,
    contact_info       TEXT,
    report_domain      TEXT,
    submitter          TEXT,
    archive_id         TEXT NOT NULL,
    received_at        TEXT NOT NULL,
    warnings           TEXT NOT NULL,     -- JSON list of codes
    total_successful_session_count INTEGER NOT NULL,
    total_failure_session_count    INTEGER NOT NULL,
    UNIQUE (organization_name, report_id, date_range_start, date_range_end)
);
CREATE TABLE IF NOT EXISTS policies (
    id                INTEGER PRIMARY KEY,
    report            INTEGER NOT NULL REFERENCES reports(id) ON DELETE CASCADE,
    policy_type       TEXT NOT NULL,
    policy_domain     TEXT,
    policy_string     TEXT NOT NULL,      -- JSON list
    mx_host           TEXT NOT NULL,      -- JSON list
    total_successful_session_count INTEGER NOT NULL,
    total_failure_session_count    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS policies_report ON policies(report);
CREATE INDEX IF NOT EXISTS policies_domain ON policies(policy_domain);
CREATE TABLE IF NOT EXISTS failures (
    id                     INTEGER PRIMARY KEY,
    policy                 INTEGER NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
    result_type            TEXT NOT NULL,
    sending_mta_ip         TEXT,
    receiving_mx_hostname  TEXT,
    receiving_mx_helo      TEXT,
    receiving_ip           TEXT,
    failed_session_count   INTEGER NOT NULL,
    additional_information TEXT,
    failure_reason_code    TEXT
);
CREATE INDEX IF NOT EXISTS failures_policy ON failures(policy);
"""


@contextmanager
def _umask(bits: int) -> Iterator[None]:
    """Add ``bits`` to the process umask for the block (never loosening it)."""
    old = os.umask(0o077)
    os.umask(old | bits)
    try:
        yield
    finally:
        os.umask(old)


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._durable: bool | None = None
        # SQLite gives -wal and -shm (raw mail) the mode of the database file, so the file must
        # be 0640 from the first byte: a chmod after the schema would come too late for them.
        with _umask(0o027):
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._db.execute(REPORTS_START_INDEX)
        self._migrate()
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):  # stores made before
            with suppress(FileNotFoundError):
                name.chmod(0o640)

    def _migrate(self) -> None:
        """Forward migrations of stores made by older versions."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
        if "attempts" not in columns:  # schema 2 → 3
            self._db.execute("ALTER TABLE messages ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self, *, durable: bool) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            if durable is not self._durable:  # most processes only ever use one of the two
                db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """Read-only access for views and tests."""
        with self._lock:
            cur = self._db.execute(sql, params)
            cur.row_factory = sqlite3.Row
            return list(cur)
