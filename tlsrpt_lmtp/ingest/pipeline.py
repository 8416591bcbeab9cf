"""The one ingest pipeline every entry point uses (LMTP, milter, file import, reprocess).

Stage 1, ``archive``: raw bytes → the durable archive (one fsynced commit, possibly for a
whole batch). Only this stage may fail a delivery (ArchiveError → the MTA retries).

Stage 2, ``process_many``: for a chunk of messages (bounded by count and by weight, so memory
stays bounded whatever arrives)

1. extract the reports (MIME → decompress → parse), message by message, then verify DKIM
   for the chunk (all key lookups at once);
2. in one transaction, one savepoint per message: store the reports (dedup) and build and
   check the events;
3. write the events to the sink (``Delivery``: retried until the sink takes them);
4. in one transaction, mark each message finished (``report`` or ``invalid``).

Anything that raises in steps 1-2 for one message rolls back that message only and ends it
in quarantine with a ``tlsrpt.invalid`` event saying why; the others go on. A message is
finished only after its events were written, so a crash or a sink failure in between leaves
it ``pending``: it is processed again later and writes the same events, with the same
``event_id`` s (at least once). A message whose processing was interrupted ``MAX_ATTEMPTS``
times is quarantined as poison without being parsed again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tlsrpt_lmtp.core.aggregate import DEFAULT_MAX_FAILURE_DETAILS
from tlsrpt_lmtp.core.decompress import DEFAULT_LIMIT
from tlsrpt_lmtp.core.events import (
    Event,
    EventIds,
    check_encodable,
    invalid_event,
    iso,
    report_events,
    stamp,
    submitter_of,
)
from tlsrpt_lmtp.core.mime import extract
from tlsrpt_lmtp.core.model import Extracted, MailMeta, Report
from tlsrpt_lmtp.ingest.delivery import Delivery, Emit, SinkError
from tlsrpt_lmtp.ingest.dkim import DkimChecker, DkimVerdict, MessageVerdict
from tlsrpt_lmtp.store import DB_NAME, Store, open_store, target_of
from tlsrpt_lmtp.store.base import (
    MAX_ATTEMPTS,
    ArchiveError,
    Pending,
    Status,
    StoreUnavailable,
    Tx,
)

__all__ = ["DB_NAME", "ArchiveError", "IngestResult", "Pipeline", "SinkError"]

# Called once per newly stored (non-duplicate) report; returns further events (e.g. alerts).
ReportHook = Callable[[Report, MailMeta, str, DkimVerdict | None], Iterable[Event]]
# Parsed messages (Extracted.size_hint) held at once before they are stored and written.
CHUNK_WEIGHT = 32 * 1024 * 1024
_ALWAYS = "~"  # sorts after every ISO 8601 time: everything is a recovery


@dataclass(frozen=True, slots=True)
class IngestResult:
    archive_id: str
    reports: int
    duplicates: int
    errors: tuple[str, ...]
    failures: int = 0  # failure sessions in the reports stored (duplicates included)
    dkim: tuple[DkimVerdict, ...] = ()  # one per report found (empty when DKIM is off)
    refused: int = 0  # reports kept in quarantine by [dkim] policy = "enforce"

    @property
    def valid(self) -> bool:
        return self.reports > 0


class Pipeline:
    def __init__(
        self,
        store: Store,
        emit: Emit,
        *,
        max_decompressed: int = DEFAULT_LIMIT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        hooks: Sequence[ReportHook] = (),
        dkim: DkimChecker | None = None,
        delivery: Delivery | None = None,
        max_failure_details: int = DEFAULT_MAX_FAILURE_DETAILS,
    ) -> None:
        self.store = store
        self.dkim = dkim
        self.emit = emit
        self.delivery = delivery or Delivery(emit)
        self.max_decompressed = max_decompressed
        self.max_failure_details = max_failure_details
        self._clock = clock
        self.hooks = list(hooks)

    @classmethod
    def open(
        cls,
        data_dir: Path,
        emit: Emit,
        *,
        max_decompressed: int = DEFAULT_LIMIT,
        hooks: Sequence[ReportHook] = (),
        dkim: DkimChecker | None = None,
        delivery: Delivery | None = None,
        max_failure_details: int = DEFAULT_MAX_FAILURE_DETAILS,
        database: str | None = None,
    ) -> Pipeline:
        """The pipeline on ``database`` (a URL or path: store.open_store), by default the
        SQLite file in ``data_dir``."""
        return cls(
            open_store(target_of(database, data_dir)),
            emit,
            max_decompressed=max_decompressed,
            hooks=hooks,
            dkim=dkim,
            delivery=delivery,
            max_failure_details=max_failure_details,
        )

    def close(self) -> None:
        self.store.close()

    def ingest(self, raw: bytes, *, source: str) -> IngestResult:
        """Both stages for one message (raises ArchiveError if it cannot be stored, SinkError
        if its events cannot be written: it then stays pending for the next run)."""
        [archive_id] = self.archive_many([(raw, source)])
        return self.process(raw, archive_id, source=source)

    def archive_many(self, items: Sequence[tuple[bytes, str]]) -> list[str]:
        """Stage 1 for a batch of (raw, source): one durable commit for all of them."""
        return self.store.put(items, iso(self._clock()))

    def process(self, raw: bytes, archive_id: str, *, source: str) -> IngestResult:
        """Stage 2 for one message; never raises for bad input."""
        return self.process_many([Pending(raw, archive_id, source)])[0]

    def process_many(
        self, items: Sequence[Pending], *, recovery_before: str = ""
    ) -> list[IngestResult]:
        """Stage 2 for messages, in chunks bounded by weight; never raises for bad input.

        A message archived before ``recovery_before`` (or taken up before) was left behind by
        an earlier run: its events say ``source: "recovery"``."""
        results: list[IngestResult] = []
        chunk: list[_Judged] = []
        weight = 0
        for item in items:
            recovered = item.interrupted or item.received_at < recovery_before
            judged = self._judge(item, "recovery" if recovered else item.source)
            chunk.append(judged)
            weight += judged.weight
            if weight >= CHUNK_WEIGHT:
                results += self._finish(chunk)
                chunk, weight = [], 0
        if chunk:
            results += self._finish(chunk)
        return results

    def process_pending(self, batch: int = 64, batch_bytes: int = 8 << 20) -> list[IngestResult]:
        """Finish messages archived but not processed (the process stopped in between)."""
        results: list[IngestResult] = []
        while claimed := self.store.claim(batch, batch_bytes):
            results += self.process_many(claimed, recovery_before=_ALWAYS)
        return results

    def _judge(self, item: Pending, source: str) -> _Judged:
        judged = _Judged(item.archive_id, source, Extracted(MailMeta(), (), ()), len(item.raw))
        if item.attempts >= MAX_ATTEMPTS:
            judged.fail(
                f"poison: processing this message was interrupted {item.attempts} times"
                " (the process died); kept in quarantine, not parsed again"
            )
            return judged
        try:
            judged.extracted = extract(
                item.raw,
                limit=self.max_decompressed,
                max_failure_details=self.max_failure_details,
            )
            judged.weight += judged.extracted.size_hint
            judged.raw = item.raw
        except Exception as exc:  # a parser bug must not stop the queue or lose the message
            judged.fail(f"internal error while reading the message: {exc!r}"[:1000])
        return judged

    def _verify(self, chunk: list[_Judged]) -> None:
        """DKIM for every message of the chunk that holds reports, all key lookups at once
        (dkim/batch.py: bounded by time budgets, failures remembered)."""
        todo = [m for m in chunk if m.raw is not None and m.extracted.reports]
        verdicts: list[MessageVerdict | None] = [None] * len(todo)
        if self.dkim is not None and todo:
            try:
                verdicts = list(self.dkim.verify_many([m.raw or b"" for m in todo]))
            except Exception as exc:  # documented never to raise; a bug must not pass reports
                for m in todo:
                    m.fail(f"internal error while checking DKIM: {exc!r}"[:1000])
                return
        for m, message in zip(todo, verdicts, strict=True):
            m.raw = None
            try:
                self._sort_by_dkim(m, message)
            except Exception as exc:
                m.fail(f"internal error while checking DKIM: {exc!r}"[:1000])

    def _sort_by_dkim(self, judged: _Judged, message: MessageVerdict | None) -> None:
        ex = judged.extracted
        verdicts: list[DkimVerdict | None] = [None] * len(ex.reports)
        if message is not None:
            verdicts = [message.for_submitter(submitter_of(r, ex.meta)) for r in ex.reports]
        enforcing = self.dkim is not None and self.dkim.enforcing
        for report, verdict in zip(ex.reports, verdicts, strict=True):
            if enforcing and verdict is not None and not verdict.authentic:
                reason = f"{verdict.describe()} [dkim policy enforce]"
                judged.refused.append((report, verdict, reason))
            else:
                judged.kept.append((report, verdict))

    def _finish(self, chunk: list[_Judged]) -> list[IngestResult]:
        self._verify(chunk)
        received = iso(self._clock())
        with self.store.transaction(durable=False) as c:
            self.store.reserve(c, [r.dedup_key for m in chunk for r, _ in m.kept])
            for m in chunk:
                self._store_one(c, m, received)
        for m in chunk:
            self.delivery.write(m.events)
            self.delivery.write(self._hook_events(m))
        self.delivery.flush()
        with self.store.transaction(durable=False) as c:
            self.store.finish_messages(
                c,
                [
                    (
                        m.archive_id,
                        Status.REPORT if m.kept else Status.INVALID,
                        "; ".join(m.errors) or None,
                        m.extracted.meta,
                    )
                    for m in chunk
                ],
            )
        return [m.result() for m in chunk]

    def _store_one(self, c: Tx, m: _Judged, received: str) -> None:
        """Store one message's reports and build its events, all or nothing. The store being
        unreachable or busy is no fault of the message: the whole chunk is retried later."""
        try:
            with self.store.savepoint(c):
                for report, _ in m.kept:
                    m.fresh.append(
                        self.store.add_report(
                            c,
                            report,
                            meta=m.extracted.meta,
                            archive_id=m.archive_id,
                            received_at=received,
                        )
                    )
                m.events = self._events(m)
                check_encodable(m.events)
        except StoreUnavailable:
            raise
        except Exception as exc:
            m.fail(f"internal error while storing the message: {exc!r}"[:1000])
            m.events = self._events(m)  # the reason, and the mail's (sanitised) headers

    def _events(self, m: _Judged) -> list[Event]:
        meta, key, source = m.extracted.meta, m.archive_id, m.source
        events: list[Event] = []
        for (report, verdict), is_new in zip(m.kept, m.fresh, strict=True):
            events += report_events(
                report,
                meta,
                archive_id=key,
                source=source,
                duplicate=not is_new,
                dkim=verdict,
                ids=EventIds(key, *report.dedup_key),
            )
        warnings = m.extracted.warnings
        invalid = [
            invalid_event(
                reason,
                meta,
                archive_id=key,
                source=source,
                report=report,
                dkim=verdict,
                warnings=warnings,
            )
            for report, verdict, reason in m.refused
        ]
        invalid += [
            invalid_event(reason, meta, archive_id=key, source=source, warnings=warnings)
            for reason in (*m.extracted.errors, *m.failures)
        ]
        return events + stamp(invalid, key, "invalid")

    def _hook_events(self, m: _Judged) -> list[Event]:
        """Alerts and other hooks, for newly stored reports; a failing hook loses only its own
        events (the report is stored and its events written)."""
        events: list[Event] = []
        for (report, verdict), is_new in zip(m.kept, m.fresh, strict=True):
            if not is_new:
                continue
            for hook in self.hooks:
                try:
                    made = list(hook(report, m.extracted.meta, m.archive_id, verdict))
                    check_encodable(made)
                except Exception as exc:
                    self.delivery.warn(f"report hook failed for {m.archive_id}: {exc!r}")
                    continue
                events += stamp(made, m.archive_id, *report.dedup_key, "hook")
        return events


@dataclass
class _Judged:
    """One message between reading (and DKIM) and finishing."""

    archive_id: str
    source: str
    extracted: Extracted
    weight: int
    kept: list[tuple[Report, DkimVerdict | None]] = field(default_factory=list)
    refused: list[tuple[Report, DkimVerdict, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # our own errors, not the sender's
    fresh: list[bool] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    raw: bytes | None = None  # until DKIM has seen it

    def fail(self, reason: str) -> None:
        """Quarantine the whole message: nothing of it is stored."""
        self.failures.append(reason)
        self.refused.clear()
        self.kept.clear()
        self.fresh.clear()

    @property
    def errors(self) -> tuple[str, ...]:
        return (
            *self.extracted.errors,
            *(reason for _, _, reason in self.refused),
            *self.failures,
        )

    def result(self) -> IngestResult:
        return IngestResult(
            self.archive_id,
            len(self.fresh),
            self.fresh.count(False),
            self.errors,
            failures=sum(report.total_failure_session_count for report, _ in self.kept),
            dkim=tuple(v for _, v in self.kept if v is not None)
            + tuple(v for _, v, _ in self.refused),
            refused=len(self.refused),
        )
