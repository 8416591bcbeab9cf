"""The one ingest pipeline every entry point uses (LMTP, milter, file import, reprocess).

raw bytes → durable archive → extract reports from MIME → decompress → parse → dedup/store
→ events. Only the first step may fail the delivery (ArchiveError → the MTA retries); every
later failure ends in quarantine and a ``tlsrpt.invalid`` event, because a retry of the same
bytes would fail the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tlsrpt_lmtp.archive import Archive, ArchiveError, Area
from tlsrpt_lmtp.decompress import DEFAULT_LIMIT
from tlsrpt_lmtp.events import Event, invalid_event, iso, report_events
from tlsrpt_lmtp.mime import extract
from tlsrpt_lmtp.model import Extracted, MailMeta, Report
from tlsrpt_lmtp.store import Store

__all__ = ["ArchiveError", "IngestResult", "Pipeline"]

Emit = Callable[[Event], None]
# Called once per newly stored (non-duplicate) report; returns further events (e.g. alerts).
ReportHook = Callable[[Report, MailMeta, str], Iterable[Event]]


@dataclass(frozen=True, slots=True)
class IngestResult:
    archive_id: str
    reports: int
    duplicates: int
    errors: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return self.reports > 0


class Pipeline:
    def __init__(
        self,
        archive: Archive,
        store: Store,
        emit: Emit,
        *,
        max_decompressed: int = DEFAULT_LIMIT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        hooks: Sequence[ReportHook] = (),
    ) -> None:
        self.archive = archive
        self.store = store
        self.emit = emit
        self.max_decompressed = max_decompressed
        self._clock = clock
        self.hooks = list(hooks)

    @classmethod
    def open(cls, data_dir: Path, emit: Emit, *, max_decompressed: int = DEFAULT_LIMIT) -> Pipeline:
        return cls(
            Archive(data_dir),
            Store(data_dir / "tlsrpt.sqlite3"),
            emit,
            max_decompressed=max_decompressed,
        )

    def close(self) -> None:
        self.store.close()

    def ingest(self, raw: bytes, *, source: str) -> IngestResult:
        """Archive durably (raises ArchiveError if impossible), then process."""
        archive_id = self.archive.put(raw)
        return self.process(raw, archive_id, source=source)

    def process(self, raw: bytes, archive_id: str, *, source: str) -> IngestResult:
        """Everything after the archive; never raises for bad input."""
        try:
            extracted = extract(raw, limit=self.max_decompressed)
        except Exception as exc:  # a parser bug must not lose or bounce the message
            extracted = Extracted(MailMeta(), (), (f"internal error while parsing: {exc!r}",))
        return self._store_and_emit(extracted, archive_id, source)

    def _store_and_emit(self, ex: Extracted, archive_id: str, source: str) -> IngestResult:
        received = iso(self._clock())
        fresh = duplicates = 0
        for report in ex.reports:
            is_new = self.store.add_report(
                report, meta=ex.meta, archive_id=archive_id, received_at=received
            )
            fresh += is_new
            duplicates += not is_new
            for event in report_events(
                report, ex.meta, archive_id=archive_id, source=source, duplicate=not is_new
            ):
                self.emit(event)
            if is_new:
                for hook in self.hooks:
                    for event in hook(report, ex.meta, archive_id):
                        self.emit(event)
        for reason in ex.errors:
            self.emit(invalid_event(reason, ex.meta, archive_id=archive_id, source=source))
        status = "report" if ex.reports else "invalid"
        self.store.record_message(
            archive_id,
            received_at=received,
            source=source,
            status=status,
            reason="; ".join(ex.errors) or None,
            meta=ex.meta,
        )
        self.archive.move(archive_id, Area.ARCHIVE if ex.reports else Area.QUARANTINE)
        return IngestResult(archive_id, fresh + duplicates, duplicates, ex.errors)
