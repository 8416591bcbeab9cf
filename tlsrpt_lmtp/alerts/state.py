"""The alerts' SQLite side, in the store's file: history look-ups and the repeat window.

The table ``alert_state`` (its own; the store's tables are only read) remembers, per domain
and cause, when an alert was last sent and at which severity, so a restart does not alert
again. ``should_send`` is the pure decision; ``AlertState.claim`` checks and records in one
transaction, so two processes sharing the store cannot both send.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from tlsrpt_lmtp.alerts.config import SEVERITIES
from tlsrpt_lmtp.alerts.rules import Alert, History
from tlsrpt_lmtp.model import Report

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_state (
    domain      TEXT NOT NULL,
    cause       TEXT NOT NULL,      -- a result type, 'unattributed' or 'failure-rate'
    severity    TEXT NOT NULL,
    rule        TEXT NOT NULL,
    last_sent   TEXT NOT NULL,      -- UTC ISO 8601
    sent        INTEGER NOT NULL,   -- alerts sent for this domain and cause
    suppressed  INTEGER NOT NULL,   -- repeats held back since the last one sent
    PRIMARY KEY (domain, cause)
)
"""


@dataclass(frozen=True, slots=True)
class LastSent:
    severity: str
    at: datetime
    suppressed: int


def should_send(last: LastSent | None, severity: str, now: datetime, window: timedelta) -> bool:
    """Send unless the same cause was sent, at least as severe, less than ``window`` ago."""
    if last is None or now - last.at >= window or now < last.at:
        return True
    return SEVERITIES.index(severity) > SEVERITIES.index(last.severity)


class AlertState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def claim(self, alert: Alert, now: datetime, window: timedelta) -> int | None:
        """Record the alert and return the repeats suppressed before it, or None to hold it."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT severity, last_sent, suppressed FROM alert_state"
                    " WHERE domain = ? AND cause = ?",
                    (alert.domain, alert.cause),
                ).fetchone()
                last = LastSent(row[0], datetime.fromisoformat(row[1]), row[2]) if row else None
                if not should_send(last, alert.severity, now, window):
                    db.execute(
                        "UPDATE alert_state SET suppressed = suppressed + 1"
                        " WHERE domain = ? AND cause = ?",
                        (alert.domain, alert.cause),
                    )
                    db.execute("COMMIT")
                    return None
                db.execute(
                    "INSERT INTO alert_state VALUES (?, ?, ?, ?, ?, 1, 0)"
                    " ON CONFLICT (domain, cause) DO UPDATE SET severity = excluded.severity,"
                    " rule = excluded.rule, last_sent = excluded.last_sent, sent = sent + 1,"
                    " suppressed = 0",
                    (alert.domain, alert.cause, alert.severity, alert.rule, now.isoformat()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return last.suppressed if last else 0

    def history(self, report: Report) -> History:
        """Result types seen per domain before this report; sessions per domain that day."""
        domains = sorted({p.policy_domain for p in report.policies if p.policy_domain})
        day = report.date_range_start.date()
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM reports WHERE organization_name = ? AND report_id = ?"
                " AND date_range_start = ? AND date_range_end = ?",
                report.dedup_key,
            ).fetchone()
            stored = row is not None
            before = row[0] if stored else 2**62
            seen = {
                d: frozenset(
                    r[0]
                    for r in self._db.execute(
                        "SELECT DISTINCT f.result_type FROM failures AS f"
                        " JOIN policies AS p ON p.id = f.policy"
                        " WHERE p.policy_domain = ? AND p.report < ?",
                        (d, before),
                    )
                )
                for d in domains
            }
            days = {(d, day): self._day(d, day) for d in domains}
        if not stored:  # not in the store (yet): count it in its day, by the counting rule
            units: dict[str, tuple[int, int]] = {}
            for p in report.policies:
                if p.policy_domain:
                    sessions, failed = units.get(p.policy_domain, (0, 0))
                    units[p.policy_domain] = (
                        max(
                            sessions,
                            _cap(p.total_successful_session_count)
                            + _cap(p.total_failure_session_count),
                        ),
                        max(failed, _cap(p.total_failure_session_count)),
                    )
            for d, (sessions, failed) in units.items():
                ok_before, failed_before = days[(d, day)]
                days[(d, day)] = (ok_before + sessions - failed, failed_before + failed)
        return History(seen, days)

    def _day(self, domain: str, day: date) -> tuple[int, int]:
        """The domain's sessions that day, counted as the views count them (docs/summary.md):
        per report the maximum over the domain's policies, counts clamped to 10**12."""
        ok, failed = self._db.execute(
            "SELECT COALESCE(SUM(s - f), 0), COALESCE(SUM(f), 0) FROM ("
            f" SELECT MAX({_C.format('p.total_successful_session_count')}"
            f" + {_C.format('p.total_failure_session_count')}) AS s,"
            f" MAX({_C.format('p.total_failure_session_count')}) AS f"
            " FROM policies AS p JOIN reports AS r ON r.id = p.report"
            " WHERE p.policy_domain = ? AND date(r.date_range_start) = ? GROUP BY p.report)",
            (domain, day.isoformat()),
        ).fetchone()
        return int(ok), int(failed)


_CAP = 10**12
_C = "MIN(MAX({}, 0), 1000000000000)"


def _cap(n: int) -> int:
    return min(max(n, 0), _CAP)
