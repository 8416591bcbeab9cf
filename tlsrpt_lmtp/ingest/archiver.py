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
from tlsrpt_lmtp.store import Store, open_store, target_of


class Archiver:
    def __init__(
        self, store: Store, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self._clock = clock

    @classmethod
    def open(cls, data_dir: Path, database: str | None = None) -> Archiver:
        """On ``database`` (a URL or path), by default the SQLite file in ``data_dir``."""
        return cls(open_store(target_of(database, data_dir)))

    @property
    def url(self) -> str:
        """Where the store is (the metrics read stage 2's backlog from it)."""
        return self.store.url

    def put(self, items: Sequence[tuple[bytes, str]]) -> list[str]:
        """Stage 1 for a batch of (raw, source): one durable commit for all of them (raises
        ArchiveError when they are not stored: the MTA must retry)."""
        return self.store.put(items, iso(self._clock()))

    def close(self) -> None:
        self.store.close()
