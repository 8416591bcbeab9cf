"""What the shared policy cache costs and saves (docs/policy-cache.md), one table.

    .venv/bin/python -m bench.shared_cache [--domains 200] [--timeout 0.5]

Needs root (the loopback test internet, tests/netsim, listens on ports 53 and 443), and
Debian's postgresql and redis-server (scripts/install-postgres-redis-deps.sh): private
instances from tests/support/servers.py. PolicyService nodes run in this process, one lookup
at a time, each with its own local cache; the clock is real. Rows, per shared backend (none,
Redis, PostgreSQL):

- cold miss: node A, empty caches, each MTA-STS domain once (TXT, HTTPS fetch, then the
  shared write);
- miss answered from the shared cache: node B, empty local cache, the same domains (no DNS,
  no HTTPS);
- miss, no MTA-STS: names with no TXT record, each once (what the shared read adds to the
  commonest miss);
- Redis hung (SIGSTOP) / stopped: a fresh node looks up MTA-STS domains it does not hold; the
  first lookup waits for the timeout, the rest skip the shared cache for 5 s; max is the worst.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dns.asyncresolver import Resolver as AsyncResolver

from tests.netsim.fixtures import NetSim
from tests.support.servers import postgres_instance, redis_instance
from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.net.dns import make_resolver
from tlsrpt_lmtp.sts.cache import PolicyCache
from tlsrpt_lmtp.sts.dnsclient import DnsClient
from tlsrpt_lmtp.sts.fetch import Fetcher, tls_context
from tlsrpt_lmtp.sts.policy import checked_policy
from tlsrpt_lmtp.sts.reply import Kind
from tlsrpt_lmtp.sts.service import PolicyService
from tlsrpt_lmtp.sts.shared import open_backend
from tlsrpt_lmtp.sts.shared.tier import SharedTier


def node(sim: NetSim, folder: Path, url: str, timeout: float, events: list[Event]) -> PolicyService:
    folder.mkdir(parents=True, exist_ok=True)
    dns = DnsClient(make_resolver(AsyncResolver, (sim.nameserver,), 5.0), None)
    fetcher = Fetcher(dns.addresses, tls_context(str(sim.ca_file)), timeout=5.0, allow_private=True)
    backend = open_backend(url, timeout) if url else None
    tier = SharedTier(backend, events.append, parse=checked_policy, timeout=timeout)
    cache = PolicyCache(folder / "policy-cache.sqlite3")
    return PolicyService(dns, fetcher, cache, events.append, shared=tier)


async def timed(service: PolicyService, names: list[str], want: Kind) -> list[float]:
    took = []
    for name in names:
        start = time.perf_counter()
        answer = await service.lookup(name)
        took.append(time.perf_counter() - start)
        if answer.kind is not want:
            raise SystemExit(f"{name}: {answer.kind} ({answer.reason}), expected {want}")
    return took


def cells(took: list[float]) -> list[str]:
    ms = sorted(t * 1000 for t in took)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return [f"{statistics.median(ms):.2f}", f"{p99:.2f}", f"{ms[-1]:.2f}"]


@contextmanager
def backend_url(kind: str) -> Iterator[tuple[str, int | None]]:
    """The URL of a fresh private server of ``kind`` ("" for none) and redis-server's pid."""
    if kind == "none":
        yield "", None
    elif kind == "redis":
        with redis_instance() as redis:
            assert redis.proc is not None
            yield redis.url, redis.proc.pid
    else:
        with postgres_instance() as pg:
            yield pg.create_database(), None


async def one_backend(
    sim: NetSim, root: Path, kind: str, domains: list[str], args: argparse.Namespace
) -> list[list[str]]:
    rows = []
    nosts = [f"n{i:05d}.{kind}.nosts.bench" for i in range(args.domains)]
    with backend_url(kind) as (url, pid):
        events: list[Event] = []
        a = node(sim, root / kind / "a", url, args.timeout, events)
        b = node(sim, root / kind / "b", url, args.timeout, events)
        c = node(sim, root / kind / "c", url, args.timeout, events)
        try:
            rows.append([kind, "cold miss (fetch)", *cells(await timed(a, domains, Kind.POLICY))])
            if url:
                took = await timed(b, domains, Kind.POLICY)
                rows.append([kind, "miss answered from the shared cache", *cells(took)])
            took = await timed(c, nosts, Kind.NO_POLICY)
            rows.append([kind, "miss, no MTA-STS", *cells(took)])
            if pid is not None:
                for how, sig in (("hung (SIGSTOP)", signal.SIGSTOP), ("stopped", signal.SIGKILL)):
                    d = node(sim, root / kind / f"d-{sig}", url, args.timeout, events)
                    os.kill(pid, sig)
                    try:
                        took = await timed(d, domains, Kind.POLICY)
                    finally:
                        if sig == signal.SIGSTOP:
                            os.kill(pid, signal.SIGCONT)
                        d.cache.close()
                        await d.shared.close()
                    down = sum(e["event"] == "sts.shared_cache_unavailable" for e in events)
                    rows.append([kind, f"Redis {how}: fetch alone ({down} event)", *cells(took)])
                    events.clear()
        finally:
            for service in (a, b, c):
                service.cache.close()
                await service.shared.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=0.5, help="[policy] cache_timeout")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (the test internet listens on ports 53 and 443)")
    root = Path(tempfile.mkdtemp(prefix="bench-shared-"))
    sim = NetSim(root / "netsim", resolver=False).start()
    try:
        sim.dns.add_zone("bench.test")
        sim.dns.add_zone("nosts.bench")
        rows: list[list[str]] = []
        for kind in ("none", "redis", "postgresql"):
            domains = [f"s{i:05d}.{kind}.bench.test" for i in range(args.domains)]
            for domain in domains:
                sim.publish_sts(domain)
            print(f"shared cache: {kind} ...", file=sys.stderr)
            rows += asyncio.run(one_backend(sim, root, kind, domains, args))
    finally:
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.domains} lookups per row, one at a time; cache_timeout {args.timeout} s\n")
    print("| shared cache | lookup | p50 ms | p99 ms | max ms |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
