"""The embedded SQLite store: the dedup index and the normalised reports.

The raw archive is the durable record (fsynced before any 250); this store can be rebuilt
from it with ``tlsrpt-lmtp reprocess``, so it runs with ``synchronous=NORMAL`` in WAL mode,
which costs no fsync per delivery.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from tlsrpt_lmtp.model import MailMeta, Report

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    archive_id   TEXT PRIMARY KEY,
    received_at  TEXT NOT NULL,
    source       TEXT NOT NULL,
    status       TEXT NOT NULL,          -- 'report', 'invalid'
    reason       TEXT,
    from_addr    TEXT,
    subject      TEXT,
    message_id   TEXT
);
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


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record_message(
        self,
        archive_id: str,
        *,
        received_at: str,
        source: str,
        status: str,
        reason: str | None,
        meta: MailMeta,
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO messages VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(archive_id) DO UPDATE"
                " SET status=excluded.status, reason=excluded.reason",
                (
                    archive_id,
                    received_at,
                    source,
                    status,
                    reason,
                    meta.from_,
                    meta.subject,
                    meta.message_id,
                ),
            )

    def add_report(
        self, report: Report, *, meta: MailMeta, archive_id: str, received_at: str
    ) -> bool:
        """Store a report; False if it is a duplicate (same org, id and date range)."""
        org, rid, start, end = report.dedup_key
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                cur = db.execute(
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
                if cur.rowcount == 0:
                    db.execute("ROLLBACK")
                    return False
                report_pk = cur.lastrowid
                for p in report.policies:
                    pcur = db.execute(
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
                    db.executemany(
                        "INSERT INTO failures (policy, result_type, sending_mta_ip,"
                        " receiving_mx_hostname, receiving_mx_helo, receiving_ip,"
                        " failed_session_count, additional_information, failure_reason_code)"
                        " VALUES (?,?,?,?,?,?,?,?,?)",
                        [
                            (
                                pcur.lastrowid,
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
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return True

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """Read-only access for views and tests."""
        with self._lock:
            self._db.row_factory = sqlite3.Row
            try:
                return list(self._db.execute(sql, params))
            finally:
                self._db.row_factory = None
