"""The policy cache: bounded in memory, persisted in SQLite so a restart keeps every policy.

Only fetched policies are persisted; "no policy" answers are kept in memory for a short
while (they are cheap to learn again and there can be very many of them).
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar

from tlsrpt_lmtp.sts.policy import PolicyError, StsPolicy, parse_policy


@dataclass(frozen=True, slots=True)
class Entry:
    domain: str
    policy_id: str
    policy: StsPolicy
    body: bytes
    fetched_at: float
    checked_at: float

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.policy.max_age


K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A dict bounded to `size` entries, least recently used out first."""

    def __init__(self, size: int) -> None:
        self._d: OrderedDict[K, V] = OrderedDict()
        self._size = size

    def get(self, key: K) -> V | None:
        value = self._d.get(key)
        if value is not None:
            self._d.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        if len(self._d) > self._size:
            self._d.popitem(last=False)

    def pop(self, key: K) -> None:
        self._d.pop(key, None)

    def __len__(self) -> int:
        return len(self._d)


class PolicyCache:
    def __init__(self, path: Path | None, *, size: int = 10_000) -> None:
        self.size = size
        self._mem: Lru[str, Entry] = Lru(size)
        self._negative: Lru[str, float] = Lru(size)
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS sts_policies (domain TEXT PRIMARY KEY,"
                " policy_id TEXT NOT NULL, body BLOB NOT NULL, fetched_at REAL NOT NULL,"
                " expires_at REAL NOT NULL)"
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def peek(self, domain: str) -> Entry | None:
        """Memory only: no SQLite on the hot path."""
        return self._mem.get(domain)

    def get(self, domain: str) -> Entry | None:
        entry = self._mem.get(domain)
        if entry is None and self._db is not None:
            row = self._db.execute(
                "SELECT policy_id, body, fetched_at FROM sts_policies WHERE domain=?", (domain,)
            ).fetchone()
            if row is not None:
                entry = _entry(domain, *row)
                if entry is not None:
                    self._mem.put(domain, entry)
        return entry

    def put(self, entry: Entry) -> None:
        self._mem.put(entry.domain, entry)
        self._negative.pop(entry.domain)
        if self._db is not None:
            self._db.execute(
                "INSERT OR REPLACE INTO sts_policies VALUES (?,?,?,?,?)",
                (entry.domain, entry.policy_id, entry.body, entry.fetched_at, entry.expires_at),
            )

    def checked(self, entry: Entry, now: float) -> Entry:
        """Record a TXT check that found the same id (memory only: cheap and frequent)."""
        updated = replace(entry, checked_at=now)
        self._mem.put(entry.domain, updated)
        return updated

    def drop(self, domain: str) -> None:
        self._mem.pop(domain)
        if self._db is not None:
            self._db.execute("DELETE FROM sts_policies WHERE domain=?", (domain,))

    def no_policy_until(self, domain: str) -> float | None:
        return self._negative.get(domain)

    def set_no_policy(self, domain: str, until: float) -> None:
        self._negative.put(domain, until)

    def entries(self) -> Iterator[Entry]:
        """Every persisted policy (for proactive refresh)."""
        if self._db is None:
            return
        rows = self._db.execute(
            "SELECT domain, policy_id, body, fetched_at FROM sts_policies"
        ).fetchall()
        for domain, policy_id, body, fetched_at in rows:
            entry = self._mem.get(domain) or _entry(domain, policy_id, body, fetched_at)
            if entry is not None:
                yield entry

    def purge_expired(self, now: float) -> int:
        if self._db is None:
            return 0
        return self._db.execute("DELETE FROM sts_policies WHERE expires_at < ?", (now,)).rowcount


def _entry(domain: str, policy_id: str, body: bytes, fetched_at: float) -> Entry | None:
    try:
        policy = parse_policy(body)
    except PolicyError:
        return None
    return Entry(domain, policy_id, policy, body, fetched_at, checked_at=0.0)
