"""The one ingest pipeline every entry point uses (LMTP, milter, file import, reprocess).

Stage 1, ``archive``: raw bytes → the durable archive (one fsynced commit, possibly for a
whole batch). Only this stage may fail a delivery (ArchiveError → the MTA retries).
Stage 2, ``process``: extract the reports from MIME → decompress → parse → dedup and store
→ events. Bad input never raises here: it ends in quarantine with a ``tlsrpt.invalid``
event, because a retry of the same bytes would fail the same way. A message whose stage 2
was interrupted (crash) stays ``pending`` and is processed at the next start.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tlsrpt_lmtp.archive import Archive, ArchiveError, Status
from tlsrpt_lmtp.db import Database
from tlsrpt_lmtp.decompress import DEFAULT_LIMIT
from tlsrpt_lmtp.dkim import DkimChecker, DkimVerdict
from tlsrpt_lmtp.events import Event, invalid_event, iso, report_events, submitter_of
from tlsrpt_lmtp.mime import extract
from tlsrpt_lmtp.model import Extracted, MailMeta, Report
from tlsrpt_lmtp.store import Store

__all__ = ["ArchiveError", "IngestResult", "Pipeline"]

Emit = Callable[[Event], None]
# Called once per newly stored (non-duplicate) report; returns further events (e.g. alerts).
ReportHook = Callable[[Report, MailMeta, str], Iterable[Event]]
DB_NAME = "tlsrpt.sqlite3"


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
        db: Database,
        emit: Emit,
        *,
        max_decompressed: int = DEFAULT_LIMIT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        hooks: Sequence[ReportHook] = (),
        dkim: DkimChecker | None = None,
    ) -> None:
        self.db = db
        self.dkim = dkim
        self.archive = Archive(db)
        self.store = Store(db)
        self.emit = emit
        self.max_decompressed = max_decompressed
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
    ) -> Pipeline:
        return cls(
            Database(data_dir / DB_NAME),
            emit,
            max_decompressed=max_decompressed,
            hooks=hooks,
            dkim=dkim,
        )

    def close(self) -> None:
        self.db.close()

    def ingest(self, raw: bytes, *, source: str) -> IngestResult:
        """Both stages for one message (raises ArchiveError if it cannot be stored)."""
        [archive_id] = self.archive_many([(raw, source)])
        return self.process(raw, archive_id, source=source)

    def archive_many(self, items: Sequence[tuple[bytes, str]]) -> list[str]:
        """Stage 1 for a batch of (raw, source): one durable commit for all of them."""
        return self.archive.put(items, iso(self._clock()))

    def process(self, raw: bytes, archive_id: str, *, source: str) -> IngestResult:
        """Stage 2 for one message; never raises for bad input."""
        return self.process_many([(raw, archive_id, source)])[0]

    def process_many(self, items: Sequence[tuple[bytes, str, str]]) -> list[IngestResult]:
        """Stage 2 for (raw, archive_id, source) items: one transaction stores them all."""
        judged = [self._judge(raw, key, source) for raw, key, source in items]
        received = iso(self._clock())
        with self.db.transaction(durable=False) as c:
            for message in judged:
                self._store(c, message, received)
        return [self._emit(message) for message in judged]

    def process_pending(self) -> list[IngestResult]:
        """Finish messages archived but not processed (the process stopped in between)."""
        return [
            self.process(raw, key, source="recovery")
            for key, raw in self.archive.scan(Status.PENDING)
        ]

    def _judge(self, raw: bytes, archive_id: str, source: str) -> _Judged:
        try:
            ex = extract(raw, limit=self.max_decompressed)
        except Exception as exc:  # a parser bug must not lose or bounce the message
            ex = Extracted(MailMeta(), (), (f"internal error while parsing: {exc!r}",))
        judged = _Judged(archive_id, source, ex)
        enforcing = self.dkim is not None and self.dkim.enforcing
        for report, verdict in zip(ex.reports, self._verdicts(raw, ex), strict=True):
            if enforcing and verdict is not None and not verdict.authentic:
                reason = f"{verdict.describe()} [dkim policy enforce]"
                judged.refused.append((report, verdict, reason))
            else:
                judged.kept.append((report, verdict))
        return judged

    def _verdicts(self, raw: bytes, ex: Extracted) -> list[DkimVerdict | None]:
        """One DKIM verdict per report (None when DKIM is off); verification never raises."""
        if self.dkim is None or not ex.reports:
            return [None] * len(ex.reports)
        message = self.dkim.verify(raw)
        return [message.for_submitter(submitter_of(r, ex.meta)) for r in ex.reports]

    def _store(self, c: sqlite3.Connection, m: _Judged, received: str) -> None:
        meta = m.extracted.meta
        for report, _ in m.kept:
            m.fresh.append(
                self.store.add_report(
                    c, report, meta=meta, archive_id=m.archive_id, received_at=received
                )
            )
        self.store.finish_message(
            c,
            m.archive_id,
            status=Status.REPORT if m.kept else Status.INVALID,
            reason="; ".join(m.errors) or None,
            meta=meta,
        )

    def _emit(self, m: _Judged) -> IngestResult:
        meta, key, source = m.extracted.meta, m.archive_id, m.source
        for (report, verdict), is_new in zip(m.kept, m.fresh, strict=True):
            for event in report_events(
                report, meta, archive_id=key, source=source, duplicate=not is_new, dkim=verdict
            ):
                self.emit(event)
            if is_new:
                for hook in self.hooks:
                    for event in hook(report, meta, key):
                        self.emit(event)
        for report, verdict, reason in m.refused:
            self.emit(
                invalid_event(
                    reason, meta, archive_id=key, source=source, report=report, dkim=verdict
                )
            )
        for reason in m.extracted.errors:
            self.emit(invalid_event(reason, meta, archive_id=key, source=source))
        return IngestResult(
            key,
            len(m.fresh),
            m.fresh.count(False),
            m.errors,
            failures=sum(report.total_failure_session_count for report, _ in m.kept),
            dkim=tuple(v for _, v in m.kept if v is not None) + tuple(v for _, v, _ in m.refused),
            refused=len(m.refused),
        )


@dataclass
class _Judged:
    """One message between parsing (and DKIM) and storing."""

    archive_id: str
    source: str
    extracted: Extracted
    kept: list[tuple[Report, DkimVerdict | None]] = field(default_factory=list)
    refused: list[tuple[Report, DkimVerdict, str]] = field(default_factory=list)
    fresh: list[bool] = field(default_factory=list)

    @property
    def errors(self) -> tuple[str, ...]:
        return (*self.extracted.errors, *(reason for _, _, reason in self.refused))
