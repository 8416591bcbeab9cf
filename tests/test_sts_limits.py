"""Bounds of the policy daemon under abusive clients and attacker-made domains (issue 9 items
2-3, issue 14 items 4 and 6), with the real service on the loopback test internet.

Socketmap: pipelined requests behind a slow lookup are not read beyond `max_pending`;
unread replies stop the reading; a full listener refuses new connections (or replaces one
idle for a while) and idle connections are closed. Exim: a bounded number of connections.
Cache: bounded in bytes, policies beyond the per-policy bounds refused. TXT re-check by its
TTL in [60 s, 1 h] and the privacy-aware refresh window, with a fixed clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from dns.asyncresolver import Resolver as AsyncResolver

from tests.support.events import plain
from tlsrpt_lmtp.net.dns import make_resolver
from tlsrpt_lmtp.sts.cache import Entry, PolicyCache, entry_cost
from tlsrpt_lmtp.sts.dnsclient import DnsClient
from tlsrpt_lmtp.sts.fetch import Fetcher, tls_context
from tlsrpt_lmtp.sts.netstring import Decoder, encode
from tlsrpt_lmtp.sts.policy import parse_policy
from tlsrpt_lmtp.sts.reply import Kind
from tlsrpt_lmtp.sts.server import (
    READ_CHUNK,
    WRITE_HIGH,
    Connections,
    Limits,
    ReplyOptions,
    line_handler,
    listen,
    listen_socketmap,
)
from tlsrpt_lmtp.sts.service import PolicyService, Timing

if TYPE_CHECKING:
    from tests.netsim.fixtures import NetSim

pytest_plugins = ["tests.netsim.fixtures"]

T = TypeVar("T")
DAY = 86400
WAIT = 10.0  # bound on every wait for the server


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def service(
    netsim: NetSim, tmp_path: Path, *, timing: Timing | None = None, clock: Clock | None = None
) -> tuple[PolicyService, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []  # as the event log has them
    dns = DnsClient(make_resolver(AsyncResolver, (netsim.nameserver,), 1.0), None)
    fetcher = Fetcher(dns.addresses, tls_context(str(netsim.ca_file)), allow_private=True)
    cache = PolicyCache(tmp_path / "cache.sqlite3")
    timing = timing or Timing()
    svc = PolicyService(
        dns,
        fetcher,
        cache,
        lambda e: events.append(plain(e)),
        timing=timing,
        clock=clock or Clock(),
    )
    return svc, events


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def read_replies(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    decoder = Decoder(limit=200_000)
    replies: list[bytes] = []
    while len(replies) < count:
        data = await asyncio.wait_for(reader.read(65536), WAIT)
        assert data, f"connection closed after {len(replies)} replies"
        replies += decoder.feed(data)
    return replies


# --- socketmap back-pressure ----------------------------------------------------------------


def test_pipelined_requests_behind_a_slow_lookup_are_not_read(
    netsim: NetSim, tmp_path: Path
) -> None:
    netsim.dns.fail("_mta-sts.slow.test", "timeout")  # the first lookup waits ~1 s
    svc, _ = service(netsim, tmp_path)
    limits = Limits(max_pending=4)
    count = 20_000  # ~380 KB of requests sent at once

    async def abuse() -> tuple[list[tuple[int, int, int]], list[bytes]]:
        table = Connections(limits.max_connections)
        server = await listen_socketmap("127.0.0.1:0", svc, ReplyOptions(), limits, table)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode("sts slow.test") * count)
        backlogs = []
        for _ in range(5):
            await asyncio.sleep(0.1)
            backlogs += [conn.backlog for conn in table.open]
        replies = await read_replies(reader, count)
        writer.close()
        server.close()
        return backlogs, replies

    backlogs, replies = run(abuse())
    assert backlogs and all(q <= 4 and buffered <= READ_CHUNK for q, buffered, _ in backlogs)
    assert len(replies) == count and set(replies) == {b"NOTFOUND "}  # all answered, in order


def test_unread_replies_stop_the_reading(netsim: NetSim, tmp_path: Path) -> None:
    extra = [f"x-ext{i}: {'v' * 200}" for i in range(150)]
    netsim.publish_sts("big.test", extra_lines=extra)
    svc, _ = service(netsim, tmp_path)
    count = 5_000  # replies of ~33 KB each: 165 MB if all were answered

    async def abuse() -> tuple[list[tuple[int, int, int]], int]:
        assert (await svc.lookup("big.test")).kind is Kind.POLICY
        table = Connections(16)
        server = await listen_socketmap("127.0.0.1:0", svc, ReplyOptions(), Limits(), table)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.transport.pause_reading()  # a client that never reads its replies
        writer.write(encode("sts-tlsrpt big.test") * count)
        backlogs = []
        for _ in range(5):
            await asyncio.sleep(0.1)
            backlogs += [conn.backlog for conn in table.open]
        writer.transport.resume_reading()
        replies = await read_replies(reader, count)
        writer.close()
        server.close()
        return backlogs, len(replies)

    backlogs, answered = run(abuse())
    assert backlogs
    assert all(
        buffered <= READ_CHUNK and unread <= WRITE_HIGH + 40_000 for _, buffered, unread in backlogs
    )
    assert answered == count


# --- connection limits and idle timeouts ---------------------------------------------------


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> bytes:
    writer.write(encode(f"sts {key}"))
    [reply] = await read_replies(reader, 1)
    return reply


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(100), WAIT) == b""
    except ConnectionResetError:
        return True


def test_full_socketmap_listener_refuses_new_and_keeps_old(netsim: NetSim, tmp_path: Path) -> None:
    svc, _ = service(netsim, tmp_path)

    async def scenario() -> None:
        table = Connections(3)
        server = await listen_socketmap("127.0.0.1:0", svc, ReplyOptions(), Limits(3), table)
        port = server.sockets[0].getsockname()[1]
        old = [await _connect(port) for _ in range(3)]
        for r, w in old:
            assert await _ask(r, w, "[192.0.2.1]") == b"NOTFOUND "
        r4, w4 = await _connect(port)
        assert await _closed(r4)  # full, and every old one was active within the second
        assert table.refused == 1
        for r, w in old:  # the old ones are not starved
            assert await _ask(r, w, "[192.0.2.2]") == b"NOTFOUND "
        await asyncio.sleep(1.2)  # now the first of them has been idle over a second
        r5, w5 = await _connect(port)
        assert await _ask(r5, w5, "[192.0.2.3]") == b"NOTFOUND "
        assert await _closed(old[0][0])  # the least recently active made room
        for _, w in [*old, (r4, w4), (r5, w5)]:
            w.close()
        server.close()

    run(scenario())


def test_idle_socketmap_connection_is_closed(netsim: NetSim, tmp_path: Path) -> None:
    svc, _ = service(netsim, tmp_path)

    async def scenario() -> None:
        limits = Limits(idle_timeout=0.3)
        server = await listen_socketmap("127.0.0.1:0", svc, ReplyOptions(), limits)
        reader, writer = await _connect(server.sockets[0].getsockname()[1])
        assert await _ask(reader, writer, "[192.0.2.1]") == b"NOTFOUND "
        assert await _closed(reader)
        writer.close()
        server.close()

    run(scenario())


def test_exim_listener_is_bounded_and_times_out_silent_clients(
    netsim: NetSim, tmp_path: Path
) -> None:
    svc, _ = service(netsim, tmp_path)

    async def scenario() -> None:
        limits = Limits(max_connections=2, line_timeout=0.5)
        server = await listen("127.0.0.1:0", line_handler(svc, ReplyOptions(), limits))
        port = server.sockets[0].getsockname()[1]
        silent = [await _connect(port) for _ in range(2)]  # hold both slots, send nothing
        await asyncio.sleep(0.1)
        r3, w3 = await _connect(port)
        w3.write(b"[192.0.2.1]\n")
        assert await _closed(r3)  # no reply: refused while full
        for r, _ in silent:
            assert await _closed(r)  # the silent ones timed out
        r4, w4 = await _connect(port)
        w4.write(b"[192.0.2.1]\n")
        assert await asyncio.wait_for(r4.read(), WAIT) == b"mode=none\n"
        for _, w in [*silent, (r3, w3), (r4, w4)]:
            w.close()
        server.close()

    run(scenario())


# --- the cache in bytes and per policy ------------------------------------------------------


def _entry(domain: str, extra: int) -> Entry:
    body = (
        "version: STSv1\nmode: enforce\nmx: mx1.example.net\nmax_age: 86400\n"
        + "".join(f"x-e{i}: {'v' * 100}\n" for i in range(extra))
    ).encode()
    return Entry(domain, "1", parse_policy(body), body, 0.0, 0.0)


def test_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    cache = PolicyCache(tmp_path / "c.sqlite3", max_bytes=200_000)
    for i in range(500):
        cache.put(_entry(f"d{i}.test", 100))
        assert cache.memory_bytes <= 200_000
    assert cache.peek("d499.test") is not None and cache.peek("d0.test") is None
    assert cache.get("d0.test") is not None  # still persisted: read back on demand
    huge = _entry("huge.test", 190)
    assert entry_cost(huge) > 0
    small = PolicyCache(None, max_bytes=entry_cost(huge) - 1)
    small.put(huge)
    assert small.peek("huge.test") is None and small.memory_bytes == 0


def test_policies_beyond_the_per_policy_bounds_are_invalid(netsim: NetSim, tmp_path: Path) -> None:
    netsim.publish_sts("manymx.test", mx=[f"mx{i}.manymx.test" for i in range(101)])
    netsim.publish_sts("manylines.test", extra_lines=[f"x-{i}: y" for i in range(200)])
    svc, events = service(netsim, tmp_path)
    for domain in ("manymx.test", "manylines.test"):
        assert run(svc.lookup(domain)).kind is Kind.NO_POLICY
    reasons = [(e["result_type"], e["reason"]) for e in events if e["event"] == "sts.fetch_error"]
    assert reasons == [
        ("sts-policy-invalid", "policy has 101 mx lines (this daemon takes 100)"),
        ("sts-policy-invalid", "policy has 204 lines (this daemon takes 200)"),
    ]


# --- TXT re-check by TTL (issue 14 item 4) ---------------------------------------------------


@pytest.mark.parametrize(("ttl", "recheck"), [(10, 60), (600, 600), (86400, 3600)])
def test_txt_is_rechecked_when_its_ttl_runs_out(
    netsim: NetSim, tmp_path: Path, ttl: int, recheck: int
) -> None:
    netsim.publish_sts("ttl.test", max_age=DAY)
    netsim.dns.set("_mta-sts.ttl.test", "TXT", "v=STSv1; id=one;", ttl=ttl)
    clock = Clock()
    svc, _ = service(netsim, tmp_path, clock=clock)

    def txt_queries() -> int:
        return len(netsim.dns.queries_for("_mta-sts.ttl.test", "TXT"))

    async def scenario() -> list[int]:
        seen = []
        assert (await svc.lookup("ttl.test")).kind is Kind.POLICY
        seen.append(txt_queries())
        clock.now += recheck - 1
        await svc.lookup("ttl.test")
        await svc.settle()
        seen.append(txt_queries())  # not yet
        clock.now += 1
        await svc.lookup("ttl.test")
        await svc.settle()
        seen.append(txt_queries())  # re-checked, same id: no fetch
        clock.now += recheck - 1
        await svc.lookup("ttl.test")
        await svc.settle()
        seen.append(txt_queries())  # the next check is again one TTL later
        return seen

    assert run(scenario()) == [1, 1, 2, 2]
    assert len(netsim.https.requests_for("ttl.test")) == 1


# --- privacy-aware refresh (issue 14 item 6) --------------------------------------------------


@pytest.mark.parametrize(("window", "due_after_a_quiet_day"), [(0.0, True), (3600.0, False)])
def test_refresh_only_for_domains_looked_up_within_the_window(
    netsim: NetSim, tmp_path: Path, window: float, due_after_a_quiet_day: bool
) -> None:
    netsim.publish_sts("mailed.test", max_age=2 * DAY)
    netsim.publish_sts("forgotten.test", max_age=2 * DAY)
    clock = Clock()
    svc, _ = service(netsim, tmp_path, timing=Timing(refresh_window=window), clock=clock)
    run(svc.lookup("forgotten.test"))
    run(svc.lookup("mailed.test"))
    clock.now += DAY + 1  # half of max_age: refresh time
    run(svc.lookup("mailed.test"))
    due = sorted(e.domain for e in svc.due_for_refresh(clock()))
    assert due == (["forgotten.test", "mailed.test"] if due_after_a_quiet_day else ["mailed.test"])
    clock.now += DAY - 2  # forgotten.test: not looked up for almost its whole max_age
    svc.cache.close()
    svc2, _ = service(netsim, tmp_path, timing=Timing(refresh_window=window), clock=clock)
    due = sorted(e.domain for e in svc2.due_for_refresh(clock()))  # the time survives a restart
    assert due == (["forgotten.test", "mailed.test"] if due_after_a_quiet_day else [])
    clock.now += 2  # past max_age since the last lookup of forgotten.test
    assert [e.domain for e in svc2.due_for_refresh(clock()) if e.domain == "forgotten.test"] == []
