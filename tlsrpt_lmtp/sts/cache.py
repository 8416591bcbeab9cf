"""The policy cache: bounded in memory, persisted in SQLite so a restart keeps every policy.

Only fetched policies are persisted; "no policy" answers are kept in memory for a short
while (they are cheap to learn again and there can be very many of them). The memory side is
bounded in entries and in bytes (an estimate of what each entry holds), so attacker-made
domains with large policies evict each other instead of growing the process; the policy body
itself lives only in SQLite.

Inside an event loop, fetched policies are written in batches, one transaction at most
FLUSH_DELAY after the first (or at FLUSH_COUNT / FLUSH_BYTES): a commit per policy blocked
the loop for a third of a millisecond of file I/O on each new domain. Reads see the batch
before it is written; a crash loses at most that second of fetches (fetched again later).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, TypeVar

from tlsrpt_lmtp.sts.policy import PolicyError, StsPolicy, parse_policy
from tlsrpt_lmtp.sts.reply import Answer, Kind


@dataclass(frozen=True, slots=True)
class Entry:
    domain: str
    policy_id: str
    policy: StsPolicy
    body: bytes
    fetched_at: float
    checked_at: float
    looked_up_at: float = 0.0  # last time a lookup used it (privacy-aware refresh)
    recheck_at: float = 0.0  # when the TXT id is next re-checked (its TTL, bounded)
    # The answer cache hits give (sts.service), built with the entry and gone with it, so
    # that the cache's own bounds cover it and the replies framed on it (MEMO_COST).
    answer: Answer = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        answer = Answer(Kind.POLICY, self.domain, self.policy, self.policy_id)
        object.__setattr__(self, "answer", answer)  # frozen: set once, here

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.policy.max_age


K = TypeVar("K")
V = TypeVar("V")
FLUSH_DELAY = 1.0  # seconds from the first unwritten policy to the batch's commit
FLUSH_COUNT = 256
FLUSH_BYTES = 1024 * 1024
_INSERT = "INSERT OR REPLACE INTO sts_policies VALUES (?,?,?,?,?,?)"


# What Entry.answer holds besides the policy: the Answer, its dict and at most two framed
# replies of up to sts.server.Replies.KEEP_SIZE (512) bytes each; typically about 1 KiB.
MEMO_COST = 1800


def entry_cost(entry: Entry) -> int:
    """Roughly the bytes an in-memory entry holds (str objects carry ~50 bytes of header)."""
    policy = entry.policy
    text = sum(len(x) for x in policy.lines) + sum(len(x) for x in policy.mx)
    return 400 + MEMO_COST + len(entry.body) + text + 60 * (len(policy.lines) + len(policy.mx))


class Lru(Generic[K, V]):
    """A dict bounded to `size` entries, least recently used out first; with a `cost`
    function also to `max_cost` in total (an entry costing more is not kept at all)."""

    def __init__(
        self, size: int, *, max_cost: int = 0, cost: Callable[[V], int] | None = None
    ) -> None:
        self._d: OrderedDict[K, V] = OrderedDict()
        self._size = size
        self._cost = cost
        self._costs: dict[K, int] = {}
        self.max_cost = max_cost
        self.total_cost = 0
        self.evicted = False  # has anything left by the bounds (not by pop)?

    def get(self, key: K) -> V | None:
        value = self._d.get(key)
        if value is not None:
            self._d.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if self._cost is not None:
            cost = self._cost(value)
            self.pop(key)
            if cost > self.max_cost:
                self.evicted = True
                return
            self._costs[key] = cost
            self.total_cost += cost
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self._size or self.total_cost > self.max_cost > 0:
            old, _ = self._d.popitem(last=False)
            self.evicted = True
            self.total_cost -= self._costs.pop(old, 0)

    def peek(self, key: K) -> V | None:
        """Like get, without making the entry recently used."""
        return self._d.get(key)

    def pop(self, key: K) -> None:
        if self._d.pop(key, None) is not None:
            self.total_cost -= self._costs.pop(key, 0)

    def __len__(self) -> int:
        return len(self._d)


class PolicyCache:
    def __init__(
        self, path: Path | None, *, size: int = 10_000, max_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self.size = size
        self._mem: Lru[str, Entry] = Lru(size, max_cost=max_bytes, cost=entry_cost)
        # SQLite can only hold a policy that memory does not if the file had rows at start
        # or something left memory by its bounds; until then a miss (every new domain)
        # needs no SELECT.
        self._had_rows = False
        self._negative: Lru[str, float] = Lru(size)
        self._pending: dict[str, Entry] = {}  # fetched, not yet written
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS sts_policies (domain TEXT PRIMARY KEY,"
                " policy_id TEXT NOT NULL, body BLOB NOT NULL, fetched_at REAL NOT NULL,"
                " expires_at REAL NOT NULL, looked_up_at REAL NOT NULL DEFAULT 0)"
            )
            self._had_rows = (
                self._db.execute("SELECT 1 FROM sts_policies LIMIT 1").fetchone() is not None
            )
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(sts_policies)")]
            if "looked_up_at" not in columns:  # a cache written by an older version
                self._db.execute(
                    "ALTER TABLE sts_policies ADD COLUMN looked_up_at REAL NOT NULL DEFAULT 0"
                )

    def close(self) -> None:
        if self._db is not None:
            self.flush()
            self._db.close()

    def flush(self) -> None:
        """Write the fetched policies not written yet, in one transaction."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending or self._db is None:
            return
        pending, self._pending, self._pending_bytes = self._pending, {}, 0
        rows = [
            (e.domain, e.policy_id, e.body, e.fetched_at, e.expires_at, e.looked_up_at)
            for e in pending.values()
        ]
        self._db.execute("BEGIN")
        try:
            self._db.executemany(_INSERT, rows)
        except sqlite3.Error:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        for domain, entry in pending.items():
            held = self._mem.peek(domain)
            if held is not None and held.body and held.fetched_at == entry.fetched_at:
                self._mem.put(domain, replace(held, body=b""))  # the persisted copy is enough

    def peek(self, domain: str) -> Entry | None:
        """Memory only: no SQLite on the hot path."""
        return self._mem.get(domain)

    def get(self, domain: str) -> Entry | None:
        entry = self._mem.get(domain)
        if entry is None and (entry := self._pending.get(domain)) is not None:
            self._mem.put(domain, entry)
            return entry
        if entry is None and self._db is not None and (self._had_rows or self._mem.evicted):
            row = self._db.execute(
                "SELECT policy_id, body, fetched_at, looked_up_at FROM sts_policies WHERE domain=?",
                (domain,),
            ).fetchone()
            if row is not None:
                entry = _entry(domain, *row)
                if entry is not None:
                    entry = replace(entry, body=b"")
                    self._mem.put(domain, entry)
        return entry

    @property
    def memory_bytes(self) -> int:
        """The estimated bytes held by the in-memory policies."""
        return self._mem.total_cost

    def put(self, entry: Entry) -> None:
        self._mem.put(entry.domain, entry)
        self._negative.pop(entry.domain)
        if self._db is None:
            return
        self._pending_bytes += len(entry.body)
        self._pending[entry.domain] = entry
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if (
            loop is None
            or len(self._pending) >= FLUSH_COUNT
            or (self._pending_bytes >= FLUSH_BYTES)
        ):
            self.flush()
        elif self._timer is None or self._timer_loop is not loop:
            self._timer = loop.call_later(FLUSH_DELAY, self.flush)
            self._timer_loop = loop

    def update(self, entry: Entry) -> None:
        """Replace the in-memory entry (timestamps only; nothing persisted)."""
        self._mem.put(entry.domain, entry)

    def checked(self, entry: Entry, now: float, recheck_at: float) -> Entry:
        """Record a TXT check that found the same id (memory only: cheap and frequent)."""
        updated = replace(entry, checked_at=now, recheck_at=recheck_at)
        self._mem.put(entry.domain, updated)
        return updated

    def looked_up(self, entry: Entry, now: float) -> None:
        """Record that a lookup used the entry (the caller does so only now and then)."""
        self._mem.put(entry.domain, replace(entry, looked_up_at=now))
        pending = self._pending.get(entry.domain)
        if pending is not None:
            self._pending[entry.domain] = replace(pending, looked_up_at=now)
        elif self._db is not None:
            self._db.execute(
                "UPDATE sts_policies SET looked_up_at=? WHERE domain=?", (now, entry.domain)
            )

    def drop(self, domain: str) -> None:
        self._mem.pop(domain)
        self._pending.pop(domain, None)
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
        self.flush()
        rows = self._db.execute(
            "SELECT domain, policy_id, body, fetched_at, looked_up_at FROM sts_policies"
        ).fetchall()
        for domain, policy_id, body, fetched_at, looked_up_at in rows:
            entry = self._mem.peek(domain) or _entry(
                domain, policy_id, body, fetched_at, looked_up_at
            )
            if entry is not None:
                yield entry

    def purge_expired(self, now: float) -> int:
        if self._db is None:
            return 0
        self.flush()
        return self._db.execute("DELETE FROM sts_policies WHERE expires_at < ?", (now,)).rowcount


def _entry(
    domain: str, policy_id: str, body: bytes, fetched_at: float, looked_up_at: float
) -> Entry | None:
    try:
        policy = parse_policy(body)
    except PolicyError:
        return None
    return Entry(domain, policy_id, policy, body, fetched_at, 0.0, looked_up_at)
