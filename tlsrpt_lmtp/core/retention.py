"""Retention settings and results (pure): how long raw mail and reports are kept, the cut-offs
they give at a moment, what a prune deleted, and its ``tlsrpt.prune`` event (docs/retention.md,
docs/events.md). The deleting is the store's (store/prune.py), the running ingest/retention.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from tlsrpt_lmtp.core.durations import DurationError, parse_duration
from tlsrpt_lmtp.core.events import Event, iso, stamp

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
    except DurationError as exc:
        raise RetentionError(f"{what}: {exc}") from None
    if span <= timedelta(0):
        raise RetentionError(f"{what} must be longer than 0, not {text!r}")
    return span


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """ISO 8601 UTC times, comparable with the store's: older than that is deleted."""

    raw: str | None  # messages received before
    reports: str | None  # reports whose date range ended before


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


@dataclass(frozen=True, slots=True)
class PruneResult:
    cutoffs: Cutoffs
    counts: Counts
    pending_kept: int  # pending messages older than the cut-off (never deleted)
    batches: int
    dry_run: bool
    complete: bool  # False: stopped by max_batches, the rest is for the next run


def whole_reports(rows: list[tuple[int, int]], limit: int) -> tuple[list[int], int]:
    """The first reports of ``rows`` (id, rows it weighs) up to ``limit`` rows, at least one."""
    chosen: list[int] = []
    weight = 0
    for pk, rows_of_report in rows:
        if chosen and weight + rows_of_report > limit:
            break
        chosen.append(pk)
        weight += rows_of_report
    return chosen, weight


@dataclass(frozen=True, slots=True, kw_only=True)
class Pruned(Event):
    """``tlsrpt.prune`` (docs/events.md): what a prune deleted, or would have."""

    EVENT: ClassVar[str] = "tlsrpt.prune"

    trigger: str
    dry_run: bool
    raw_before: str | None
    reports_before: str | None
    messages: int
    quarantined: int
    raw_bytes: int
    reports: int
    rows: int
    pending_kept: int
    batches: int


def prune_event(result: PruneResult, *, trigger: str, now: datetime) -> Pruned:
    """``tlsrpt.prune`` (docs/events.md)."""
    c = result.counts
    event = Pruned(
        trigger=trigger,
        dry_run=result.dry_run,
        raw_before=result.cutoffs.raw,
        reports_before=result.cutoffs.reports,
        messages=c.messages,
        quarantined=c.quarantined,
        raw_bytes=c.raw_bytes,
        reports=c.reports,
        rows=c.rows,
        pending_kept=result.pending_kept,
        batches=result.batches,
    )
    return stamp([event], "prune", trigger, iso(now))[0]
