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

Deletion runs in small batches, each its own short transaction (at most ``BATCH`` rows: the
store's ``prune_messages`` / ``prune_reports``, store/prune.py), so the LMTP server keeps
archiving meanwhile. A stopped prune loses nothing: the next run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.core.retention import Counts, Cutoffs, PruneResult, Retention, prune_event

BATCH = 500  # rows deleted per transaction
SCHEDULE_SECONDS = 3600.0  # the server prunes once an hour when retention is set
SLICE_BATCHES = 20  # the server's batches between two looks at the pending queue


class PruneBackend(Protocol):
    """What a prune needs of the store (store/base.py implements it on every backend)."""

    def prune_messages(self, before: str, limit: int) -> Counts: ...

    def prune_reports(self, before: str, limit: int) -> Counts: ...

    def count_prunable(self, cutoffs: Cutoffs) -> tuple[Counts, int]: ...


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
