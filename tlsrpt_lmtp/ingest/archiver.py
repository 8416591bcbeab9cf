"""Stage 1 alone: what the LMTP server's process holds.

``put`` stores a batch of raw messages durably (one fsynced commit) as ``pending`` and returns
their archive ids; only then is a delivery acknowledged. Everything after (parse, verify,
store, emit) is stage 2's, in a process of its own (stage2.py) that holds the processor;
the two share the store and the configuration ``serve`` hands over once (``stage2.spawn``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from tlsrpt_lmtp.core.events import iso
from tlsrpt_lmtp.ingest.archive import Archive
from tlsrpt_lmtp.ingest.db import Database
from tlsrpt_lmtp.ingest.pipeline import DB_NAME


class Archiver:
    def __init__(
        self, db: Database, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.db = db
        self._archive = Archive(db)
        self._clock = clock

    @classmethod
    def open(cls, data_dir: Path) -> Archiver:
        return cls(Database(data_dir / DB_NAME))

    @property
    def path(self) -> Path:
        """The store's file (the metrics read stage 2's backlog from it)."""
        return self.db.path

    def put(self, items: Sequence[tuple[bytes, str]]) -> list[str]:
        """Stage 1 for a batch of (raw, source): one durable commit for all of them (raises
        ArchiveError when they are not stored: the MTA must retry)."""
        return self._archive.put(items, iso(self._clock()))

    def close(self) -> None:
        self.db.close()
