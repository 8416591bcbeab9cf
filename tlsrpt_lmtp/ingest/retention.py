"""Retention: delete raw mail (and, if asked, normalised reports) older than a cut-off.

Raw report mail is personal data (the sender's and its reporting address, message ids, the
IP addresses of mail servers, sometimes a person's mailbox in ``contact-info``), kept only
so that a message can be shown (``show``) and processed again (``reprocess``). With
``[storage] retention`` set, messages *received* before ``now - retention`` are deleted once
finished: ``report`` (its reports are stored) or ``invalid`` (the quarantine, same rule).
A ``pending`` message is never deleted, whatever its age: its events are still owed.
Normalised reports (with their policies and failure details) are kept, unless
``[storage] report_retention`` is set too: then reports whose date range *ended* before
``now - report_retention`` are deleted.

Deletion runs in small batches, each its own short transaction (at most ``BATCH`` rows), so
the LMTP server keeps archiving meanwhile (SQLite: WAL, a write lock held for one batch;
PostgreSQL: row locks only). A stopped prune loses nothing: the next run goes on.

The SQL is behind ``PruneBackend``, which another store implements the same way.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tlsrpt_lmtp.core.events import Event, iso, stamp
from tlsrpt_lmtp.ingest.db import Database
from tlsrpt_lmtp.views.period import PeriodError, parse_duration

BATCH = 500  # rows deleted per transaction
SCHEDULE_SECONDS = 3600.0  # the server prunes once an hour when retention is set
SLICE_BATCHES = 20  # the server's batches between two looks at the pending queue
# Shorter report retention would make alerts fire again for result types seen before, the
# absence findings (45 days back) report silence, and a report resent later count twice.
MIN_REPORT_RETENTION = timedelta(days=90)


class RetentionError(ValueError):
    pass


def parse_retention(text: str, *, what: str = "retention") -> timedelta | None:
    """'400d', '12h', '30m', '2w' → a timedelta; '' (or 'off', 'never') → None (keep all)."""
    if text.strip().lower() in ("", "off", "never"):
        return None
    try:
        span = parse_duration(text)
    except PeriodError as exc:
        raise RetentionError(f"{what}: {exc}") from None
    if span <= timedelta(0):
        raise RetentionError(f"{what} must be longer than 0, not {text!r}")
    return span


@dataclass(frozen=True, slots=True)
class Retention:
    """How long raw messages and normalised reports are kept; None: forever."""

    raw: timedelta | None = None
    reports: timedelta | None = None

    @classmethod
    def parse(cls, raw: str, reports: str) -> Retention:
        kept = cls(parse_retention(raw), parse_retention(reports, what="report_retention"))
        if kept.reports is not None and kept.reports < MIN_REPORT_RETENTION:
            raise RetentionError(
                f"report_retention must be at least {MIN_REPORT_RETENTION.days}d (alerts,"
                " absence findings and duplicate detection read older reports)"
            )
        return kept

    @property
    def enabled(self) -> bool:
        return self.raw is not None or self.reports is not None

    def cutoffs(self, now: datetime) -> Cutoffs:
        def before(span: timedelta | None) -> str | None:
            return None if span is None else iso((now - span).astimezone(UTC))

        return Cutoffs(before(self.raw), before(self.reports))


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """ISO 8601 UTC times, comparable with the store's: older than that is deleted."""

    raw: str | None  # messages received before
    reports: str | None  # reports whose date range ended before


@dataclass(frozen=True, slots=True)
class Counts:
    """What one batch (or a whole run) deleted, or would delete (dry run)."""

    messages: int = 0  # finished messages (status report)
    quarantined: int = 0  # quarantined messages (status invalid)
    raw_bytes: int = 0
    reports: int = 0  # normalised reports, each with its policies and failure details
    rows: int = 0  # every row: messages, reports, policies, failures

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.messages + other.messages,
            self.quarantined + other.quarantined,
            self.raw_bytes + other.raw_bytes,
            self.reports + other.reports,
            self.rows + other.rows,
        )


class PruneBackend(Protocol):
    """The store's side. Each delete is one short transaction of at most ``limit`` rows."""

    def prune_messages(self, before: str, limit: int) -> Counts:
        """Delete finished messages received before ``before``, oldest first (never pending)."""
        ...

    def prune_reports(self, before: str, limit: int) -> Counts:
        """Delete reports whose date range ended before ``before`` with their policies and
        failures: whole reports, about ``limit`` rows in all (at least one report)."""
        ...

    def count_prunable(self, cutoffs: Cutoffs) -> tuple[Counts, int]:
        """What a prune would delete now, and the pending messages older than the cut-off."""
        ...


@dataclass(frozen=True, slots=True)
class PruneResult:
    cutoffs: Cutoffs
    counts: Counts
    pending_kept: int  # pending messages older than the cut-off (never deleted)
    batches: int
    dry_run: bool
    complete: bool  # False: stopped by max_batches, the rest is for the next run


class Pruner:
    def __init__(
        self,
        backend: PruneBackend,
        retention: Retention,
        *,
        batch: int = BATCH,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.backend = backend
        self.retention = retention
        self.batch = batch
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    def cutoffs(self) -> Cutoffs:
        return self.retention.cutoffs(self._clock())

    def run(
        self,
        cutoffs: Cutoffs | None = None,
        *,
        dry_run: bool = False,
        max_batches: int | None = None,
        on_batch: Callable[[Counts], None] | None = None,
    ) -> PruneResult:
        """Delete in batches until nothing is left (or ``max_batches`` were done)."""
        cut = cutoffs or self.cutoffs()
        if dry_run:
            counts, pending = self.backend.count_prunable(cut)
            return PruneResult(cut, counts, pending, 0, True, True)
        total, batches = Counts(), 0
        # (a batch, whether a short batch means the end: whole reports may stop short)
        steps: list[tuple[Callable[[], Counts], bool]] = []
        if cut.raw is not None:
            steps.append((lambda: self.backend.prune_messages(cut.raw or "", self.batch), True))
        if cut.reports is not None:
            steps.append((lambda: self.backend.prune_reports(cut.reports or "", self.batch), False))
        for step, short_is_last in steps:
            while True:
                if max_batches is not None and batches >= max_batches:
                    return PruneResult(cut, total, 0, batches, False, False)
                done = step()
                if not done.rows:
                    break
                batches += 1
                total += done
                if on_batch is not None:
                    on_batch(done)
                if short_is_last and done.rows < self.batch:
                    break
        _, pending = self.backend.count_prunable(replace(cut, reports=None))
        return PruneResult(cut, total, pending, batches, False, True)


class Scheduled:
    """The server's prune (stage 2): a pass once every ``every`` seconds, done in slices of
    ``slice_batches`` batches between the looks at the pending queue, so that ingest comes
    first. ``tick`` returns the finished pass's event, if it deleted anything."""

    def __init__(
        self,
        pruner: Pruner,
        *,
        every: float = SCHEDULE_SECONDS,
        slice_batches: int = SLICE_BATCHES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pruner = pruner
        self.every = every
        self.slice_batches = slice_batches
        self._monotonic = monotonic
        self._next = monotonic()  # the first pass right after start
        self._pass: tuple[Cutoffs, Counts, int] | None = None

    @property
    def busy(self) -> bool:
        """A pass is under way: the caller should tick again soon."""
        return self._pass is not None

    def postpone(self) -> None:
        """Drop the pass under way; the next one starts ``every`` seconds from now."""
        self._pass = None
        self._next = self._monotonic() + self.every

    def tick(self) -> Event | None:
        if self._pass is None:
            if self._monotonic() < self._next:
                return None
            self._pass = (self.pruner.cutoffs(), Counts(), 0)
        cut, total, batches = self._pass
        part = self.pruner.run(cut, max_batches=self.slice_batches)
        total, batches = total + part.counts, batches + part.batches
        if not part.complete:
            self._pass = (cut, total, batches)
            return None
        self._pass = None
        self._next = self._monotonic() + self.every
        if not total.rows:
            return None
        done = replace(part, counts=total, batches=batches)
        return prune_event(done, trigger="schedule", now=self.pruner.now())


def prune_event(result: PruneResult, *, trigger: str, now: datetime) -> Event:
    """``tlsrpt.prune`` (docs/events.md)."""
    c = result.counts
    event: Event = {
        "event": "tlsrpt.prune",
        "trigger": trigger,
        "dry_run": result.dry_run,
        "raw_before": result.cutoffs.raw,
        "reports_before": result.cutoffs.reports,
        "messages": c.messages,
        "quarantined": c.quarantined,
        "raw_bytes": c.raw_bytes,
        "reports": c.reports,
        "rows": c.rows,
        "pending_kept": result.pending_kept,
        "batches": result.batches,
    }
    return stamp([event], "prune", trigger, iso(now))[0]


# A report's rows: itself, its policies, their failure details (the cascade deletes them all).
_REPORT_ROWS = (
    "1 + (SELECT count(*) FROM policies p WHERE p.report = r.id)"
    " + (SELECT count(*) FROM failures f JOIN policies p ON f.policy = p.id"
    " WHERE p.report = r.id)"
)
# Through the index on date_range_start (a report's range is a day or so: the end follows).
_OLD_REPORTS = "r.date_range_start < ? AND r.date_range_end < ?"


@contextmanager
def _secure_delete(c: sqlite3.Connection) -> Iterator[None]:
    """Overwrite what is deleted: raw mail must not live on in the file's free pages."""
    (before,) = c.execute("PRAGMA secure_delete").fetchone()
    c.execute("PRAGMA secure_delete=ON")
    try:
        yield
    finally:
        c.execute(f"PRAGMA secure_delete={int(before)}")


class SqlitePrune:
    """``PruneBackend`` on the SQLite store (db.py)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def prune_messages(self, before: str, limit: int) -> Counts:
        with self.db.transaction(durable=False) as c:
            rows = c.execute(
                "SELECT archive_id, status, length(raw) FROM messages INDEXED BY messages_received"
                " WHERE received_at < ? AND status IN ('report', 'invalid')"
                " ORDER BY received_at LIMIT ?",
                (before, limit),
            ).fetchall()
            if not rows:
                return Counts()
            with _secure_delete(c):
                c.executemany("DELETE FROM messages WHERE archive_id=?", [(r[0],) for r in rows])
        invalid = sum(1 for r in rows if r[1] == "invalid")
        return Counts(len(rows) - invalid, invalid, sum(r[2] for r in rows), 0, len(rows))

    def prune_reports(self, before: str, limit: int) -> Counts:
        with self.db.transaction(durable=False) as c:
            rows = c.execute(
                f"SELECT r.id, {_REPORT_ROWS} FROM reports r WHERE {_OLD_REPORTS}"
                " ORDER BY r.date_range_start LIMIT ?",
                (before, before, limit),
            ).fetchall()
            chosen, weight = _whole_reports(rows, limit)
            if chosen:
                with _secure_delete(c):
                    c.executemany("DELETE FROM reports WHERE id=?", [(pk,) for pk in chosen])
        return Counts(reports=len(chosen), rows=weight)

    def count_prunable(self, cutoffs: Cutoffs) -> tuple[Counts, int]:
        counts, pending = Counts(), 0
        if cutoffs.raw is not None:
            by_status = {
                row[0]: (row[1], row[2])
                for row in self.db.query(
                    "SELECT status, count(*), coalesce(sum(length(raw)), 0) FROM messages"
                    " INDEXED BY messages_received WHERE received_at < ? GROUP BY status",
                    (cutoffs.raw,),
                )
            }
            done, invalid = by_status.get("report", (0, 0)), by_status.get("invalid", (0, 0))
            pending = by_status.get("pending", (0, 0))[0]
            counts += Counts(done[0], invalid[0], done[1] + invalid[1], 0, done[0] + invalid[0])
        if cutoffs.reports is not None:
            [row] = self.db.query(
                f"SELECT count(*), coalesce(sum({_REPORT_ROWS}), 0) FROM reports r"
                f" WHERE {_OLD_REPORTS}",
                (cutoffs.reports, cutoffs.reports),
            )
            counts += Counts(reports=row[0], rows=row[1])
        return counts, pending


def _whole_reports(rows: list[tuple[int, int]], limit: int) -> tuple[list[int], int]:
    """The first reports of ``rows`` (id, rows it weighs) up to ``limit`` rows, at least one."""
    chosen: list[int] = []
    weight = 0
    for pk, rows_of_report in rows:
        if chosen and weight + rows_of_report > limit:
            break
        chosen.append(pk)
        weight += rows_of_report
    return chosen, weight
