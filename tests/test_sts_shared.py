"""The shared policy cache (issue 12 item 4) between PolicyService nodes, each with its own
local cache, on a real private Redis and a real private PostgreSQL (tests/support/servers.py),
against the loopback test internet (tests/netsim). The clock is the test's (max_age and the
TXT re-check can be crossed without waiting); each scenario runs in one event loop, as a
daemon does. The same scenarios with real daemon processes: test_sts_shared_daemons.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from dns.asyncresolver import Resolver as AsyncResolver

from tests.support.events import plain
from tests.support.servers import PostgresServer, RedisServer, redis_instance
from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.net.dns import make_resolver
from tlsrpt_lmtp.sts.cache import PolicyCache
from tlsrpt_lmtp.sts.dnsclient import DnsClient
from tlsrpt_lmtp.sts.fetch import Fetcher, tls_context
from tlsrpt_lmtp.sts.policy import checked_policy
from tlsrpt_lmtp.sts.reply import Answer, Kind
from tlsrpt_lmtp.sts.service import PolicyService, Timing
from tlsrpt_lmtp.sts.shared import open_backend
from tlsrpt_lmtp.sts.shared.base import SharedPolicy, decode, encode
from tlsrpt_lmtp.sts.shared.tier import SharedTier

if TYPE_CHECKING:
    from tests.netsim.fixtures import NetSim

pytest_plugins = ["tests.netsim.fixtures"]

DAY = 86400


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Node:
    """One policy daemon's service: its own local cache file and events, the shared URL."""

    def __init__(
        self, netsim: NetSim, folder: Path, url: str, clock: Clock, *, timeout: float = 2.0
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.netsim, self.folder, self.url, self.clock = netsim, folder, url, clock
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []  # as the event log has them
        self.service = self._build()

    def _build(self) -> PolicyService:
        dns = DnsClient(make_resolver(AsyncResolver, (self.netsim.nameserver,), 2.0), None)
        fetcher = Fetcher(
            dns.addresses, tls_context(str(self.netsim.ca_file)), timeout=3.0, allow_private=True
        )
        cache = PolicyCache(self.folder / "policy-cache.sqlite3")
        backend = open_backend(self.url, self.timeout)
        tier = SharedTier(
            backend, self.record, parse=checked_policy, timeout=self.timeout, lease=10.0
        )
        return PolicyService(
            dns, fetcher, cache, self.record, clock=self.clock, shared=tier,
            timing=Timing(),
        )  # fmt: skip

    async def restart(self) -> None:
        await self.close()
        self.service = self._build()

    async def close(self) -> None:
        self.service.cache.close()
        await self.service.shared.close()

    async def lookup(self, domain: str) -> Answer:
        answer = await self.service.lookup(domain)
        await self.service.settle()
        return answer

    def record(self, event: Event) -> None:
        self.events.append(plain(event))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]


@pytest.fixture(params=["redis", "postgresql"])
def shared_url(request: pytest.FixtureRequest) -> str:
    name = "redis_url" if request.param == "redis" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url


def scenario(
    netsim: NetSim, tmp_path: Path, url: str, body: Callable[..., Awaitable[None]], nodes: int = 2
) -> None:
    clock = Clock()

    async def run() -> None:
        made = [Node(netsim, tmp_path / f"node{i}", url, clock) for i in range(nodes)]
        try:
            await body(clock, *made)
        finally:
            for node in made:
                await node.close()

    asyncio.run(run())


def secure(answer: Answer) -> bool:
    return answer.kind is Kind.POLICY and answer.enforced(enforce_testing=False)


async def stored(url: str, domain: str) -> SharedPolicy | None:
    backend = open_backend(url, 2.0)
    try:
        record = await backend.get(domain)
    finally:
        await backend.close()
    return decode(domain, record) if record is not None else None


def test_a_policy_one_node_fetched_protects_the_other(
    netsim: NetSim, tmp_path: Path, shared_url: str
) -> None:
    netsim.publish_sts("fleet.test", id="v1", max_age=DAY)

    async def body(clock: Clock, a: Node, b: Node) -> None:
        assert secure(await a.lookup("fleet.test"))
        assert len(netsim.https.requests_for("fleet.test")) == 1
        netsim.unpublish_sts("fleet.test")  # policy host and TXT record gone
        answer = await b.lookup("fleet.test")
        assert secure(answer) and answer.policy_id == "v1"
        assert len(netsim.https.requests_for("fleet.test")) == 1  # B never fetched
        assert b.named("sts.policy_fetched") == [] and b.named("sts.fetch_error") == []
        # max_age runs from A's fetch, on B too
        entry = b.service.cache.get("fleet.test")
        assert entry is not None and entry.fetched_at == clock.now
        clock.now += DAY - 60
        await a.restart()
        await b.restart()
        assert secure(await a.lookup("fleet.test")) and secure(await b.lookup("fleet.test"))
        clock.now += 120  # past max_age: neither node applies it any longer
        await b.restart()
        assert (await b.lookup("fleet.test")).kind is Kind.NO_POLICY

    scenario(netsim, tmp_path, shared_url, body)


def test_a_failure_on_one_node_never_downgrades_the_shared_policy(
    netsim: NetSim, tmp_path: Path, shared_url: str
) -> None:
    netsim.publish_sts("steady.test", id="v1")

    async def body(clock: Clock, a: Node, b: Node) -> None:
        assert secure(await a.lookup("steady.test"))
        before = await stored(shared_url, "steady.test")
        assert before is not None and before.policy_id == "v1"
        # the TXT id changes and the policy host fails: A's re-check fetches and fails
        netsim.set_sts_id("steady.test", "v2")
        netsim.site("steady.test").status = 500
        clock.now += 3700  # past the re-check time
        assert secure(await a.lookup("steady.test"))
        await a.service.settle()
        [error] = a.named("sts.fetch_error")
        assert error["cached_policy_applied"] is True
        assert await stored(shared_url, "steady.test") == before  # not replaced, not deleted
        # B has nothing local: it applies the shared v1 and, seeing A's failure marker for v2,
        # does not fetch v2 itself within the back-off
        fetches = len(netsim.https.requests_for("steady.test"))
        answer = await b.lookup("steady.test")
        assert secure(answer) and answer.policy_id == "v1"
        entry = b.service.cache.get("steady.test")
        assert entry is not None
        b.service.cache.checked(entry, clock.now, clock.now)  # re-check at once
        assert secure(await b.lookup("steady.test"))
        await b.service.settle()
        assert len(netsim.https.requests_for("steady.test")) == fetches
        assert b.named("sts.fetch_error") == []
        # and a failed proactive refresh on B leaves it alone too
        await b.service.refresh(entry)
        assert await stored(shared_url, "steady.test") == before
        # the TXT record and the host vanish: a cached policy is still applied (RFC 8461 §5.1)
        netsim.unpublish_sts("steady.test")
        await b.restart()
        assert secure(await b.lookup("steady.test"))

    scenario(netsim, tmp_path, shared_url, body)


def test_a_newer_policy_wins_and_an_older_one_never_replaces_it(
    netsim: NetSim, tmp_path: Path, shared_url: str
) -> None:
    netsim.publish_sts("moving.test", id="v1", mode="testing")

    async def body(clock: Clock, a: Node, b: Node) -> None:
        first = await a.lookup("moving.test")
        assert first.kind is Kind.POLICY and first.policy_id == "v1"
        netsim.publish_sts("moving.test", id="v2", mode="enforce")
        clock.now += 3700
        await b.lookup("moving.test")  # adopts v1 (fetched by A), re-checks later
        entry = b.service.cache.get("moving.test")
        assert entry is not None and entry.policy_id == "v1"
        b.service.cache.checked(entry, clock.now, clock.now)
        await b.lookup("moving.test")  # the re-check sees v2: B fetches it and shares it
        newest = await stored(shared_url, "moving.test")
        assert newest is not None and newest.policy_id == "v2"
        # A, re-checking, takes B's v2 from the shared cache instead of fetching it again
        fetches = len(netsim.https.requests_for("moving.test"))
        held = a.service.cache.get("moving.test")
        assert held is not None
        a.service.cache.checked(held, clock.now, clock.now)
        await a.lookup("moving.test")
        answer = await a.lookup("moving.test")
        assert secure(answer) and answer.policy_id == "v2"
        assert len(netsim.https.requests_for("moving.test")) == fetches
        [change] = a.named("sts.policy_changed")
        assert change["changes"]["policy_id"] == ["v1", "v2"]
        # an older record offered later (a slow node) does not replace the newer one
        older = SharedPolicy("moving.test", "v1", b"x", newest.fetched_at - 10, clock.now + DAY)
        backend = open_backend(shared_url, 2.0)
        try:
            assert not await backend.put(older, encode(older), clock.now)
        finally:
            await backend.close()
        assert await stored(shared_url, "moving.test") == newest

    scenario(netsim, tmp_path, shared_url, body)


def test_concurrent_misses_on_two_nodes_make_one_fetch(
    netsim: NetSim, tmp_path: Path, shared_url: str
) -> None:
    netsim.publish_sts("busy.test", delay=1.0)  # a slow policy host: the misses overlap

    async def body(clock: Clock, *nodes: Node) -> None:
        answers = await asyncio.gather(*(n.lookup("busy.test") for n in nodes))
        assert all(secure(a) for a in answers)
        assert len(netsim.https.requests_for("busy.test")) == 1
        assert sum(len(n.named("sts.policy_fetched")) for n in nodes) == 1
        # the nodes created the PostgreSQL tables at once, without tripping over each other
        assert [e for n in nodes for e in n.named("sts.shared_cache_unavailable")] == []

    scenario(netsim, tmp_path, shared_url, body, nodes=3)


def test_a_failed_fetch_backs_off_on_every_node(
    netsim: NetSim, tmp_path: Path, shared_url: str
) -> None:
    netsim.publish_sts("broken.test", status=500)

    async def body(clock: Clock, a: Node, b: Node) -> None:
        assert (await a.lookup("broken.test")).kind is Kind.NO_POLICY
        assert len(netsim.https.requests_for("broken.test")) == 1
        answer = await b.lookup("broken.test")
        assert answer.kind is Kind.NO_POLICY and answer.reason is not None
        assert "shared" in answer.reason
        assert len(netsim.https.requests_for("broken.test")) == 1

    scenario(netsim, tmp_path, shared_url, body)


@pytest.mark.parametrize(
    "record",
    [
        b"garbage",
        b"1 1799990000.0 1800076400.0 v1\n" + b"x" * 70_000,  # larger than a policy may be
        b"1 1799990000.0 1800076400.0 v1\nversion: STSv1\nmode: enforce\nmax_age: 86400\n",
        b"1 1900000000.0 1900086400.0 v1\nversion: STSv1\nmode: enforce\nmx: evil.test\n"
        b"max_age: 86400\n",  # "fetched" in the future
        b"1 nan inf v1\nversion: STSv1\nmode: enforce\nmx: evil.test\nmax_age: 86400\n",
        b"1 1799990000.0 1800076400.0 bad-id!\nversion: STSv1\nmode: enforce\nmx: e.test\n"
        b"max_age: 86400\n",
        b"1 1799990000.0 1800076400.0 v1\nversion: STSv1\nmode: enforce\n"
        + b"".join(b"mx: m%d.test\n" % i for i in range(150))
        + b"max_age: 86400\n",  # over this daemon's 100 mx lines
    ],
)
def test_what_the_shared_cache_holds_is_untrusted(
    netsim: NetSim, tmp_path: Path, shared_url: str, record: bytes
) -> None:
    """A record that is not a valid policy record (written earlier, or "fetched" in the future)
    is ignored: the node discovers on its own, and its fetch replaces the record."""
    netsim.publish_sts("hostile.test", id="real")
    plant(shared_url, "hostile.test", record)

    async def body(clock: Clock, a: Node) -> None:
        answer = await a.lookup("hostile.test")
        assert secure(answer) and answer.policy_id == "real"
        assert len(netsim.https.requests_for("hostile.test")) == 1
        assert [m for e in a.named("sts.policy_fetched") for m in e["mx"]] == ["mx1.hostile.test"]
        # and the node's fetch replaced what no reader believes
        now_shared = await stored(shared_url, "hostile.test")
        assert now_shared is not None and now_shared.policy_id == "real"

    scenario(netsim, tmp_path, shared_url, body, nodes=1)


def plant(url: str, domain: str, record: bytes) -> None:
    """Write ``record`` straight into the shared cache, as a hostile or broken writer could."""
    if url.startswith("redis"):
        redis = pytest.importorskip("redis")
        client = redis.Redis.from_url(url)
        try:
            client.set(f"tlsrpt-lmtp:sts:policy:{domain}", record)
        finally:
            client.close()
        return
    psycopg = pytest.importorskip("psycopg")
    asyncio.run(stored(url, domain))  # a first connection creates the tables
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO sts_shared_policy VALUES (%s, %s, 1900000000, 1900086400)",
            (domain, record),
        )


def test_a_hash_where_a_record_should_be_is_ignored(
    netsim: NetSim, tmp_path: Path, redis_url: str
) -> None:
    netsim.publish_sts("typed.test", id="real")
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(redis_url)
    try:
        client.hset("tlsrpt-lmtp:sts:policy:typed.test", "k", "v")
    finally:
        client.close()

    async def body(clock: Clock, a: Node) -> None:
        assert secure(await a.lookup("typed.test"))
        assert a.named("sts.shared_cache_unavailable") == []
        # the fetched policy replaced the foreign key
        assert (await stored(redis_url, "typed.test")) is not None

    scenario(netsim, tmp_path, redis_url, body, nodes=1)


# --- the shared cache unreachable ----------------------------------------------------------


def _unreachable_url(kind: str) -> str:
    import socket

    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0" if kind == "redis" else (
        f"postgresql://postgres@127.0.0.1:{port}/postgres"
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_unreachable_shared_cache_the_node_answers_alone_and_says_so(
    netsim: NetSim, tmp_path: Path, kind: str
) -> None:
    netsim.publish_sts("alone.test", id="v1")
    url = _unreachable_url(kind)

    async def body(clock: Clock, a: Node) -> None:
        assert secure(await a.lookup("alone.test"))  # discovered and fetched alone
        [down] = a.named("sts.shared_cache_unavailable")
        port = url.rsplit(":", 1)[1].split("/")[0]
        assert down["backend"] == kind and down["server"] == f"127.0.0.1:{port}"
        assert down["domain"] == "alone.test" and down["reason"]
        # it holds the policy: a failing fetch of a new id, shared cache still down -> secure
        netsim.set_sts_id("alone.test", "v2")
        netsim.set_sts_host("alone.test", "down")
        clock.now += 3700
        a.service.shared._down_until = 0.0  # the shared cache is tried again, and fails again
        assert secure(await a.lookup("alone.test"))
        await a.service.settle()
        assert secure(await a.lookup("alone.test"))
        assert len(a.named("sts.shared_cache_unavailable")) == 1  # said once per outage

    scenario(netsim, tmp_path, url, body, nodes=1)


def _signal(server: RedisServer | PostgresServer, sig: signal.Signals) -> None:
    """To redis-server, or to the postmaster and every backend it forked."""
    if isinstance(server, RedisServer):
        assert server.proc is not None
        os.kill(server.proc.pid, sig)
        return
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            pids.append(int(stat.parent.name))
    for pid in pids:
        os.kill(pid, sig)


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_a_hung_shared_cache_is_cut_off_by_the_timeout_and_its_return_is_noticed(
    netsim: NetSim, tmp_path: Path, kind: str
) -> None:
    """SIGSTOP: the server accepts connections (the kernel does) and never answers, on the
    node's open connection and on a new one. Lookups are answered (from the local cache, or
    by the node alone), the outage is reported once per node, the return once."""
    from tests.support.servers import postgres_instance

    for name in ("held.test", "new1.test", "new2.test"):
        netsim.publish_sts(name, id="v1")
    instance = redis_instance() if kind == "redis" else postgres_instance()
    with instance as server:
        clock = Clock()

        async def run() -> None:
            a = Node(netsim, tmp_path / "a", server.url, clock, timeout=0.3)
            a.service.shared.retry_after = 0.2
            try:
                assert secure(await a.lookup("held.test"))
                _signal(server, signal.SIGSTOP)
                try:
                    assert secure(await a.lookup("new1.test"))  # the open connection hangs
                    assert len(a.named("sts.shared_cache_unavailable")) == 1
                    await a.restart()  # memory empty, local SQLite still has both
                    a.service.shared.retry_after = 0.2
                    netsim.unpublish_sts("held.test")
                    assert secure(await a.lookup("held.test"))
                    assert secure(await a.lookup("new2.test"))  # a new connection hangs
                    down = a.named("sts.shared_cache_unavailable")
                    assert len(down) == 2 and {e["backend"] for e in down} == {kind}
                finally:
                    _signal(server, signal.SIGCONT)
                await asyncio.sleep(0.25)  # past retry_after: the next call tries again
                netsim.publish_sts("later.test", id="l1")
                assert secure(await a.lookup("later.test"))
                [back] = a.named("sts.shared_cache_restored")
                assert back["backend"] == kind and back["unavailable_seconds"] > 0
                assert (await stored(server.url, "later.test")) is not None
            finally:
                await a.close()

        asyncio.run(run())


def test_shared_cache_record_round_trip() -> None:
    policy = SharedPolicy("a.test", "id1", b"version: STSv1\n", 1_800_000_000.5, 1_800_086_400.5)
    assert decode("a.test", encode(policy)) == policy
    assert decode("a.test", encode(policy)[:-30]) is None  # header cut: not a record


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('cache = "memcached://u:secret@host/"', "is not a redis:// or postgresql:// URL"),
        ('cache = "host:6379"', "is not a redis:// or postgresql:// URL"),
        ('cache = "redis://[::1"', "is not a redis:// or postgresql:// URL"),
        ('cache = "redis://host:99999/0"', "is not a redis:// or postgresql:// URL"),
        ("cache_timeout = 0", "cache_timeout"),
        ("cache_timeout = 60", "cache_timeout"),
    ],
)
def test_policy_cache_settings_are_checked(tmp_path: Path, toml: str, error: str) -> None:
    from tlsrpt_lmtp.config import ConfigError, load_policy

    path = tmp_path / "c.toml"
    path.write_text(f"[policy]\n{toml}\n")
    with pytest.raises(ConfigError, match=error) as raised:
        load_policy(path, {})
    assert "secret" not in str(raised.value)


def test_policy_cache_settings_from_file_and_flag(tmp_path: Path) -> None:
    from tlsrpt_lmtp.config import load_policy

    path = tmp_path / "c.toml"
    path.write_text('[policy]\ncache = "redis://10.0.0.5:6379/2"\ncache_timeout = 0.2\n')
    config = load_policy(path, {})
    assert (config.cache, config.cache_timeout) == ("redis://10.0.0.5:6379/2", 0.2)
    flagged = load_policy(path, {"cache": "postgresql://sts@db.example/sts"})
    assert flagged.cache == "postgresql://sts@db.example/sts"


def test_a_burst_of_misses_is_not_mistaken_for_an_outage(
    netsim: NetSim, tmp_path: Path, shared_url: str
) -> None:
    """More concurrent misses than the node keeps connections to Redis (64): they wait for a
    connection instead of failing, so the shared cache is not marked down."""
    domains = [f"d{i}.burst.test" for i in range(150)]  # no policies: TXT lookups only

    async def body(clock: Clock, a: Node) -> None:
        answers = await asyncio.gather(*(a.service.lookup(d) for d in domains))
        assert all(answer.kind is Kind.NO_POLICY for answer in answers)
        assert a.named("sts.shared_cache_unavailable") == []

    scenario(netsim, tmp_path, shared_url, body, nodes=1)


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_the_shared_cache_going_down_and_coming_back(
    netsim: NetSim, tmp_path: Path, kind: str
) -> None:
    """The server stops under a connected node: the node goes on alone (a policy it holds is
    applied, a new domain is fetched), then reconnects once the server is back."""
    from tests.support.servers import postgres_instance

    for name in ("held.test", "during.test", "after.test"):
        netsim.publish_sts(name, id="x1")
    instance = redis_instance() if kind == "redis" else postgres_instance()
    with instance as server:
        url = server.url
        clock = Clock()

        async def run() -> None:
            a = Node(netsim, tmp_path / "a", url, clock)
            a.service.shared.retry_after = 0.1
            try:
                assert secure(await a.lookup("held.test"))
                assert (await stored(url, "held.test")) is not None
                server.stop()
                netsim.unpublish_sts("held.test")
                await a.restart()  # memory empty; SQLite holds held.test
                a.service.shared.retry_after = 0.1
                assert secure(await a.lookup("held.test"))
                assert secure(await a.lookup("during.test"))
                [down] = a.named("sts.shared_cache_unavailable")
                assert down["domain"] == "during.test"
                server.start()
                await asyncio.sleep(0.15)  # past retry_after: the next call reconnects
                assert secure(await a.lookup("after.test"))
                [back] = a.named("sts.shared_cache_restored")
                assert back["backend"] == kind
                assert (await stored(url, "after.test")) is not None
            finally:
                await a.close()

        asyncio.run(run())
