"""The alerts' side of the store: history look-ups, repeat window, budget.

The table ``alert_state`` (its own, in store/schema.py; the report tables are only read)
remembers, per domain and cause, when an alert was last sent and at which severity, so a
restart does not alert again. ``should_send`` is the pure decision; ``AlertState.claim``
checks and records in one ``Store.alert_transaction``, so two processes (or two nodes sharing
a PostgreSQL store) cannot both send. ``alert_budget`` counts the
alerts sent per bucket (DKIM-aligned reports, the rest) in the current fixed period, so a
flood of reports cannot send more than ``max_alerts_per_period`` of them, restarts included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from tlsrpt_lmtp.alerts.config import SEVERITIES
from tlsrpt_lmtp.alerts.rules import Alert, History
from tlsrpt_lmtp.core.model import Report
from tlsrpt_lmtp.store import Store, open_store
from tlsrpt_lmtp.store.base import Tx
from tlsrpt_lmtp.store.dialect import clamp


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``cap`` alerts for ``bucket`` in the period starting at ``period``."""

    bucket: str
    period: datetime
    cap: int


# What ``claim`` decided beyond sending: held by the repeat window, or by the budget (the
# first alert held in a period says so: it is the one that triggers the summary alert).
HELD_REPEAT = "repeat"
OVER_BUDGET = "over-budget"
FIRST_OVER_BUDGET = "first-over-budget"


def period_start(now: datetime, length: timedelta) -> datetime:
    """The start of the fixed period (counted from the Unix epoch) that holds ``now``."""
    seconds = length.total_seconds()
    return datetime.fromtimestamp((now.timestamp() // seconds) * seconds, UTC)


@dataclass(frozen=True, slots=True)
class LastSent:
    severity: str
    at: datetime
    suppressed: int


def should_send(last: LastSent | None, severity: str, now: datetime, window: timedelta) -> bool:
    """Send unless the same cause was sent, at least as severe, less than ``window`` ago. A
    last sending stamped a little after ``now`` is recent too: nodes sharing a store take
    ``now`` before they wait for the alert lock, so another node's claim can be newer. Only
    one a window or more in the future (a clock that was wrong then) does not hold it back."""
    if last is None or abs(now - last.at) >= window:
        return True
    return SEVERITIES.index(severity) > SEVERITIES.index(last.severity)


class AlertState:
    def __init__(self, store: Store | Path | str) -> None:
        """On ``store``, or on the store opened at that path or URL (closed with this)."""
        self._owned = not isinstance(store, Store)
        self.store = open_store(store) if not isinstance(store, Store) else store

    def close(self) -> None:
        if self._owned:
            self.store.close()

    def claim(self, alert: Alert, now: datetime, window: timedelta) -> int | None:
        """Record the alert and return the repeats suppressed before it, or None to hold it."""
        outcome = self.claim_within(alert, now, window, None)
        return outcome if isinstance(outcome, int) else None

    def claim_within(
        self, alert: Alert, now: datetime, window: timedelta, budget: Budget | None
    ) -> int | str:
        """As ``claim``, and within ``budget``: the repeats suppressed (sent), HELD_REPEAT,
        OVER_BUDGET or FIRST_OVER_BUDGET (held, not recorded as sent)."""
        with self.store.alert_transaction() as db:
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
                return HELD_REPEAT
            if budget is not None and not self._spend(db, budget):
                first = db.execute(
                    "SELECT held FROM alert_budget WHERE bucket = ? AND period = ?",
                    (budget.bucket, budget.period.isoformat()),
                ).fetchone()[0]
                return FIRST_OVER_BUDGET if first == 1 else OVER_BUDGET
            db.execute(
                "INSERT INTO alert_state VALUES (?, ?, ?, ?, ?, 1, 0)"
                " ON CONFLICT (domain, cause) DO UPDATE SET severity = excluded.severity,"
                " rule = excluded.rule, last_sent = excluded.last_sent,"
                " sent = alert_state.sent + 1, suppressed = 0",
                (alert.domain, alert.cause, alert.severity, alert.rule, now.isoformat()),
            )
        return last.suppressed if last else 0

    @staticmethod
    def _spend(db: Tx, budget: Budget) -> bool:
        """Count one alert against the budget (True), or one held back (False); in the
        caller's transaction. Rows of earlier periods are deleted."""
        period = budget.period.isoformat()
        db.execute(
            "DELETE FROM alert_budget WHERE bucket = ? AND period < ?", (budget.bucket, period)
        )
        db.execute(
            "INSERT INTO alert_budget VALUES (?, ?, 0, 0) ON CONFLICT (bucket, period) DO NOTHING",
            (budget.bucket, period),
        )
        (sent,) = db.execute(
            "SELECT sent FROM alert_budget WHERE bucket = ? AND period = ?", (budget.bucket, period)
        ).fetchone()
        column = "sent" if sent < budget.cap else "held"
        db.execute(
            f"UPDATE alert_budget SET {column} = {column} + 1 WHERE bucket = ? AND period = ?",
            (budget.bucket, period),
        )
        return column == "sent"

    def history(self, report: Report) -> History:
        """Result types seen per domain before this report; sessions per domain that day."""
        domains = sorted({p.policy_domain for p in report.policies if p.policy_domain})
        day = report.date_range_start.date()
        q = self.store.query
        rows = q(
            "SELECT id FROM reports WHERE organization_name = ? AND report_id = ?"
            " AND date_range_start = ? AND date_range_end = ?",
            report.dedup_key,
        )
        stored = bool(rows)
        before = rows[0]["id"] if stored else 2**62
        seen = {
            d: frozenset(
                r["result_type"]
                for r in q(
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
        [row] = self.store.query(_DAY, (domain, day.isoformat()))
        return int(row["ok"]), int(row["failed"])


_CAP = 10**12
_DAY = (  # dates are stored in UTC: the first 10 characters are the day
    "SELECT COALESCE(SUM(s - f), 0) AS ok, COALESCE(SUM(f), 0) AS failed FROM ("
    f" SELECT MAX({clamp('p.total_successful_session_count', _CAP)}"
    f" + {clamp('p.total_failure_session_count', _CAP)}) AS s,"
    f" MAX({clamp('p.total_failure_session_count', _CAP)}) AS f"
    " FROM policies AS p JOIN reports AS r ON r.id = p.report"
    " WHERE p.policy_domain = ? AND substr(r.date_range_start, 1, 10) = ? GROUP BY p.report)"
    " AS per_report"
)


def _cap(n: int) -> int:
    return min(max(n, 0), _CAP)
