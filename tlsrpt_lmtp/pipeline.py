"""The one ingest pipeline every entry point uses (LMTP, milter, file import, reprocess).

Stage 1, ``archive``: raw bytes → the durable archive (one fsynced commit, possibly for a
whole batch). Only this stage may fail a delivery (ArchiveError → the MTA retries).
Stage 2, ``process``: extract the reports from MIME → decompress → parse → dedup and store
→ events. Bad input never raises here: it ends in quarantine with a ``tlsrpt.invalid``
event, because a retry of the same bytes would fail the same way. A message whose stage 2
was interrupted (crash) stays ``pending`` and is processed at the next start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
        """Stage 2; never raises for bad input."""
        try:
            extracted = extract(raw, limit=self.max_decompressed)
        except Exception as exc:  # a parser bug must not lose or bounce the message
            extracted = Extracted(MailMeta(), (), (f"internal error while parsing: {exc!r}",))
        return self._store_and_emit(extracted, archive_id, source, self._verdicts(raw, extracted))

    def _verdicts(self, raw: bytes, ex: Extracted) -> list[DkimVerdict | None]:
        """One DKIM verdict per report (None when DKIM is off); verification never raises."""
        if self.dkim is None or not ex.reports:
            return [None] * len(ex.reports)
        message = self.dkim.verify(raw)
        return [message.for_submitter(submitter_of(r, ex.meta)) for r in ex.reports]

    def process_pending(self) -> list[IngestResult]:
        """Finish messages archived but not processed (the process stopped in between)."""
        return [
            self.process(raw, key, source="recovery")
            for key, raw in self.archive.scan(Status.PENDING)
        ]

    def _store_and_emit(
        self, ex: Extracted, archive_id: str, source: str, verdicts: list[DkimVerdict | None]
    ) -> IngestResult:
        received = iso(self._clock())
        enforcing = self.dkim is not None and self.dkim.enforcing
        kept: list[tuple[Report, DkimVerdict | None]] = []
        refused: list[tuple[Report, DkimVerdict, str]] = []
        for report, verdict in zip(ex.reports, verdicts, strict=True):
            if enforcing and verdict is not None and not verdict.authentic:
                refused.append((report, verdict, f"{verdict.describe()} [dkim policy enforce]"))
            else:
                kept.append((report, verdict))
        errors = (*ex.errors, *(reason for _, _, reason in refused))
        fresh: list[bool] = []
        with self.db.transaction(durable=False) as c:
            for report, _ in kept:
                fresh.append(
                    self.store.add_report(
                        c, report, meta=ex.meta, archive_id=archive_id, received_at=received
                    )
                )
            self.store.finish_message(
                c,
                archive_id,
                status=Status.REPORT if kept else Status.INVALID,
                reason="; ".join(errors) or None,
                meta=ex.meta,
            )
        for (report, verdict), is_new in zip(kept, fresh, strict=True):
            for event in report_events(
                report,
                ex.meta,
                archive_id=archive_id,
                source=source,
                duplicate=not is_new,
                dkim=verdict,
            ):
                self.emit(event)
            if is_new:
                for hook in self.hooks:
                    for event in hook(report, ex.meta, archive_id):
                        self.emit(event)
        for report, verdict, reason in refused:
            self.emit(
                invalid_event(
                    reason,
                    ex.meta,
                    archive_id=archive_id,
                    source=source,
                    report=report,
                    dkim=verdict,
                )
            )
        for reason in ex.errors:
            self.emit(invalid_event(reason, ex.meta, archive_id=archive_id, source=source))
        return IngestResult(
            archive_id,
            len(fresh),
            fresh.count(False),
            errors,
            failures=sum(report.total_failure_session_count for report, _ in kept),
            dkim=tuple(v for v in verdicts if v is not None),
            refused=len(refused),
        )
