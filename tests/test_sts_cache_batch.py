"""The policy cache writes fetched policies in batches inside an event loop (one transaction
per batch, issue 14 item 1) and at once outside one; reads see a batch before it is written,
and close() writes it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tlsrpt_lmtp.sts import cache as cache_module
from tlsrpt_lmtp.sts.cache import Entry, PolicyCache
from tlsrpt_lmtp.sts.policy import parse_policy

NOW = 1_800_000_000.0


def entry(domain: str, policy_id: str = "1") -> Entry:
    body = f"version: STSv1\nmode: enforce\nmx: mx1.{domain}\nmax_age: 86400\n".encode()
    return Entry(domain, policy_id, parse_policy(body), body, NOW, NOW, NOW, NOW + 60)


def persisted(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT domain, policy_id FROM sts_policies").fetchall())


def test_outside_a_loop_each_policy_is_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    cache = PolicyCache(path)
    cache.put(entry("a.test"))
    assert persisted(path) == {"a.test": "1"}
    cache.close()


def test_inside_a_loop_policies_are_written_as_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"

    async def run() -> tuple[dict[str, str], dict[str, str]]:
        cache = PolicyCache(path)
        for i in range(5):
            cache.put(entry(f"d{i}.test"))
        before = persisted(path)
        got = cache.get("d3.test")
        assert got is not None and got.body  # read before it is written, body and all
        await asyncio.sleep(cache_module.FLUSH_DELAY + 0.5)  # the batch's timer
        after = persisted(path)
        held = cache.peek("d3.test")
        assert held is not None and held.body == b""  # memory no longer keeps the body
        cache.close()
        return before, after

    before, after = asyncio.run(run())
    assert before == {}
    assert after == {f"d{i}.test": "1" for i in range(5)}


def test_a_full_batch_is_written_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"

    async def run() -> int:
        cache = PolicyCache(path)
        for i in range(cache_module.FLUSH_COUNT):
            cache.put(entry(f"d{i}.test"))
        count = len(persisted(path))
        cache.close()
        return count

    assert asyncio.run(run()) == cache_module.FLUSH_COUNT


def test_close_writes_the_batch_and_a_restart_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"

    async def run() -> None:
        cache = PolicyCache(path)
        cache.put(entry("kept.test", "v1"))
        cache.put(entry("dropped.test"))
        cache.drop("dropped.test")
        cache.looked_up(entry("kept.test", "v1"), NOW + 5)
        cache.close()

    asyncio.run(run())
    assert persisted(path) == {"kept.test": "v1"}
    again = PolicyCache(path)
    got = again.get("kept.test")
    assert got is not None and got.policy_id == "v1" and got.looked_up_at == NOW + 5
    assert again.get("dropped.test") is None
    again.close()


def test_refresh_listing_sees_unwritten_policies(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"

    async def run() -> list[str]:
        cache = PolicyCache(path)
        cache.put(entry("fresh.test"))
        domains = [e.domain for e in cache.entries()]
        cache.close()
        return domains

    assert asyncio.run(run()) == ["fresh.test"]
