"""MTA-STS policy daemon benchmark: ours vs postfix-mta-sts-resolver, one table.

    .venv/bin/python -m bench.policy_run [--domains 1000] [--nosts 100000] [--repeat 3]

Needs root (the test internet listens on ports 53 and 443 of 127.0.N.x). Both daemons run at
the same time in their own processes against the same test internet (tests/netsim: dnspython
authoritative DNS + HTTPS policy server, both in this process) through the same caching
unbound, and are driven by the same load client (bench/policy_load.py, its own process).
See bench/README.md, section "MTA-STS policy daemon".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import policy_abuse, table
from bench.policy_https import PolicyHttps
from bench.policy_load import Result, result_from
from bench.policy_peer import (
    PEER_CACHE_GRACE,
    STS_PEER_VERSION,
    ensure_sts_peer_venv,
    peer_config,
)
from bench.procs import LOOPBACK, REPO, free_port, run_measured
from tests.netsim.dns import ValidatingResolver
from tests.netsim.fixtures import NetSim
from tlsrpt_lmtp.sts import stub

OUT = Path(__file__).resolve().parent / "out" / "policy"
DAEMONS = ("ours", "peer")
PEER_NAME = f"postfix-mta-sts-resolver {STS_PEER_VERSION}"
STS_ZONE = "sts.test"
NOSTS_ZONE = "nosts.test"
HIT_TARGET = 2.0  # x the peer's cache-hit requests/s at 16 connections
HIT_P99_TARGET = 0.5  # of the peer's p99 at 16 connections
COLD_TARGET = 1.5  # x the peer on uncached domains and on domains without MTA-STS (issue 14)
RSS_LIMIT_MIB = 80
HIT_COUNT_LIMIT = 1_000_000  # requests per cache-hit run: the bound; its duration ends it
TICKS = os.sysconf("SC_CLK_TCK")


# ---- processes ------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a live process (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def context_switches(pid: int) -> dict[str, int]:
    """Voluntary (it waited) and involuntary (preempted) switches of every thread."""
    total = {"voluntary": 0, "nonvoluntary": 0}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for line in (task / "status").read_text().splitlines():
                key, _, value = line.partition(":")
                kind = key.removesuffix("_ctxt_switches")
                if kind in total and kind != key:
                    total[kind] += int(value)
    return total


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM from /proc/PID/status, in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


class Daemon:
    """A policy daemon subprocess on 127.0.0.1:port, started and stopped by us alone."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        log: Path,
        env: dict[str, str],
        cwd: Path = REPO,
    ):
        self.name = name
        self.port = port
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection((LOOPBACK, self.port), timeout=1.0).close()
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def pin(self, cpu: int) -> None:
        """Every thread of the daemon onto one CPU (threads started later inherit it)."""
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), {cpu})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class CachingResolver(ValidatingResolver):
    """The netsim's unbound, but with its cache on and aggressive NSEC (RFC 8198).

    The netsim resolver keeps no cache so that tests see every change at once; here nothing
    changes during a phase. With aggressive NSEC, unbound answers NXDOMAIN for any name in a
    signed zone from the NSEC records it already holds, so 100,000 distinct names without
    MTA-STS do not all go to the (much slower) dnspython server. Flushed between phases.
    """

    def _config(self) -> str:
        changes = {
            "  cache-max-ttl: 0": "  cache-max-ttl: 86400",
            "  cache-max-negative-ttl: 0": "  cache-max-negative-ttl: 3600",
            "  aggressive-nsec: no": "  aggressive-nsec: yes",
            "  outgoing-range: 128": "  outgoing-range: 1024",
            "  num-queries-per-thread: 64": "  num-queries-per-thread: 1024",
            "  log-servfail: yes": "  log-servfail: no",
        }
        lines = super()._config().splitlines()
        return "\n".join(changes.get(line, line) for line in lines) + "\n"


# ---- measurements ---------------------------------------------------------------------------


@dataclass
class Phase:
    """One load-client run against one daemon, with the CPU each process spent meanwhile."""

    result: Result
    cpu: dict[str, float] = field(default_factory=dict)
    problem: str = ""
    timed: bool = False  # a fixed-duration run: reaching the time cap is its normal end
    switches: dict[str, int] = field(default_factory=dict)  # the daemon's context switches

    @property
    def complete(self) -> bool:
        r = self.result
        capped = r.capped and not self.timed
        return not self.problem and not r.errors and not r.unexpected and not capped

    def cpu_us(self, process: str) -> float | None:
        """CPU microseconds ``process`` spent per answered request during this run."""
        if not self.result.requests or process not in self.cpu:
            return None
        return 1e6 * self.cpu[process] / self.result.requests

    def busy(self, process: str) -> float:
        """Share of one core ``process`` used during this run."""
        return self.cpu.get(process, 0.0) / self.result.seconds if self.result.seconds else 0.0


def merged(phases: list[Phase]) -> Phase:
    """Parts of one one-shot run as one: counts, times and CPU summed; p50 the median of the
    parts' p50s, p99 and max the largest of theirs."""
    results = [p.result for p in phases]
    r = Result(
        requests=sum(x.requests for x in results),
        expected=sum(x.expected for x in results),
        unexpected=sum(x.unexpected for x in results),
        errors=sum(x.errors for x in results),
        seconds=sum(x.seconds for x in results),
        capped=any(x.capped for x in results),
        first_unexpected=next((x.first_unexpected for x in results if x.first_unexpected), ""),
        cpu_s=sum(x.cpu_s for x in results),
    )
    p50s = [x.p50_ms for x in results if x.p50_ms is not None]
    r.p50_ms = statistics.median(p50s) if p50s else None
    r.p99_ms = max((x.p99_ms for x in results if x.p99_ms is not None), default=None)
    r.max_ms = max((x.max_ms for x in results if x.max_ms is not None), default=None)
    cpu: dict[str, float] = {}
    for p in phases:
        for key, value in p.cpu.items():
            cpu[key] = cpu.get(key, 0.0) + value
    problem = "; ".join(p.problem for p in phases if p.problem)
    switches: dict[str, int] = {}
    for p in phases:
        for key, count in p.switches.items():
            switches[key] = switches.get(key, 0) + count
    return Phase(r, cpu, problem, switches=switches)


@dataclass
class Hits:
    runs: list[Phase]

    def median(self, attribute: str) -> float | None:
        values = [getattr(p.result, attribute) for p in self.runs if p.result.requests]
        if len(values) != len(self.runs):
            return None
        return statistics.median(v for v in values if v is not None)

    def median_cpu_us(self, process: str) -> float | None:
        values = [p.cpu_us(process) for p in self.runs]
        return statistics.median(v for v in values if v is not None) if all(values) else None

    @property
    def rate(self) -> float | None:
        rates = [p.result.rate for p in self.runs if p.result.requests]
        return statistics.median(rates) if len(rates) == len(self.runs) else None

    @property
    def complete(self) -> bool:
        return all(p.complete for p in self.runs)

    def rate_cell(self) -> str:
        rates = [p.result.rate for p in self.runs if p.result.requests]
        if self.rate is None:
            return table.MISSING
        return f"{table.rate(self.rate)} [{min(rates):,.0f}-{max(rates):,.0f}]"

    @property
    def requests(self) -> int:
        return sum(p.result.requests for p in self.runs)


class Bench:
    def __init__(self, out: Path, sim: NetSim, resolver: CachingResolver | None) -> None:
        self.out = out
        self.sim = sim
        self.resolver = resolver
        self.daemons: dict[str, Daemon] = {}
        self.notes: list[str] = []
        self.client_cpu: list[str] = []
        self.https: PolicyHttps | None = None

    def _pids(self) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {name: [d.pid] for name, d in self.daemons.items()}
        pids["netsim"] = [os.getpid()]
        proc = self.resolver._proc if self.resolver is not None else None
        pids["unbound"] = [proc.pid] if proc is not None else []
        if self.https is not None:
            pids["https"] = self.https.pids()
        return pids

    @staticmethod
    def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
        return {key: sum(cpu_seconds(pid) for pid in group) for key, group in pids.items()}

    def client(self, argv: list[str], tag: str, cap: float) -> tuple[Result, str]:
        log = self.out / "logs" / f"client-{tag}.log"
        done = run_measured(
            [sys.executable, "-m", "bench.policy_load", *argv], log, timeout=cap + 90
        )
        if done.returncode != 0 or not done.report:
            lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
            return Result(), f"load client failed: {lines[-1]}"
        return result_from(done.report), ""

    def load(
        self,
        name: str,
        tag: str,
        names: Path,
        connections: int,
        *,
        count: int = 0,
        cap: float,
        expect: str,
        timed: bool = False,
    ) -> Phase:
        daemon = self.daemons[name]
        print(f"  {name:<4} {tag}: {connections} conn", file=sys.stderr, flush=True)
        pids = self._pids()
        before = self._cpu(pids)
        switches = context_switches(daemon.pid)
        argv = ["socketmap", "--port", str(daemon.port), "--names", str(names)]
        argv += ["--connections", str(connections), "--count", str(count)]
        argv += ["--time-cap", str(cap), "--expect", expect, *self.client_cpu]
        result, problem = self.client(argv, f"{name}-{tag}", cap)
        cpu = {key: value - before[key] for key, value in self._cpu(pids).items()}
        cpu = {k: v for k, v in cpu.items() if k in (name, "netsim", "https", "unbound")}
        cpu["client"] = result.cpu_s
        after = context_switches(daemon.pid)
        phase = Phase(result, cpu, problem, timed)
        phase.switches = {k: after[k] - switches.get(k, 0) for k in after}
        if not phase.complete:
            r = result
            self.notes.append(
                f"{name} {tag}: {r.requests} answered ({r.expected} as expected), "
                f"{r.unexpected} unexpected, {r.errors} errors, time cap hit: {r.capped}; "
                f"first: {problem or r.first_unexpected}"
            )
        return phase

    def interleaved(
        self, tag: str, names: Path, args: argparse.Namespace, *, expect: str, warm: bool = False
    ) -> dict[str, Phase]:
        """Each domain once per daemon, in --chunks parts taken in turn (ours first, then the
        peer first, ...), unbound flushed before each (and with `warm`, asked for every name
        the part's lookups need): both see the same share of whatever else the shared
        machine is doing. One Phase per daemon, summed over the parts."""
        domains = names.read_text().split()
        n, parts = len(domains), max(1, args.chunks)
        runs: dict[str, list[Phase]] = {name: [] for name in DAEMONS}
        for k in range(parts):
            part = self.out / f"{tag}-part{k}.txt"
            part.write_text(
                "".join(f"{d}\n" for d in domains[k * n // parts : (k + 1) * n // parts])
            )
            for name in DAEMONS if k % 2 == 0 else DAEMONS[::-1]:
                self.flush_dns()
                if warm:
                    self.warm_dns(domains[k * n // parts : (k + 1) * n // parts])
                runs[name].append(
                    self.load(
                        name, f"{tag}{k}", part, args.cold_connections, cap=args.cap, expect=expect
                    )
                )
        return {name: merged(phases) for name, phases in runs.items()}

    def dns_capacity(self, server: str, names: Path, count: int, tag: str) -> Phase:
        print(f"  dns  {tag}", file=sys.stderr, flush=True)
        pids = self._pids()
        before = self._cpu(pids)
        argv = ["dns", "--server", server, "--names", str(names), "--count", str(count)]
        result, problem = self.client([*argv, "--time-cap", "10"], f"dns-{tag}", 10)
        cpu = {key: value - before[key] for key, value in self._cpu(pids).items()}
        cpu = {key: value for key, value in cpu.items() if key in ("netsim", "unbound")}
        cpu["client"] = result.cpu_s
        if problem or result.errors:
            self.notes.append(f"dns {tag}: {problem or f'{result.errors} queries unanswered'}")
        return Phase(result, cpu, problem)

    def flush_dns(self) -> None:
        if self.resolver is not None:
            self.resolver.flush()

    def warm_dns(self, domains: list[str]) -> None:
        """Ask unbound for what a daemon's uncached lookup of each domain asks (TXT, A,
        AAAA), so that the row measures the daemons, not the netsim's authoritative server
        and unbound's DNSSEC validation behind a cold cache."""
        if self.resolver is None:
            return
        host, _, port = self.resolver.address.rpartition(":")
        questions = [(f"_mta-sts.{d}", stub.TXT) for d in domains]
        questions += [(f"mta-sts.{d}", kind) for d in domains for kind in (stub.A, stub.AAAA)]

        async def ask_all() -> None:
            client = stub.Stub([(host, int(port))], timeout=2.0, lifetime=6.0)
            limit = asyncio.Semaphore(32)

            async def ask(name: str, kind: int) -> None:
                async with limit:
                    with contextlib.suppress(stub.DnsError):
                        await client.query(name, kind)

            await asyncio.gather(*(ask(name, kind) for name, kind in questions))

        asyncio.run(ask_all())


# ---- the test internet ----------------------------------------------------------------------


def median_run(runs: list[dict[str, Phase]]) -> dict[str, Phase]:
    """The run whose ours/peer rate ratio is the median (the lower middle of an even
    number): one run's own numbers, not a mix of several."""
    return sorted(runs, key=_rate_ratio)[(len(runs) - 1) // 2]


def _rate_ratio(run: dict[str, Phase]) -> float:
    ours, peer = run["ours"].result.rate, run["peer"].result.rate
    return ours / peer if ours and peer else 0.0


def runs_note(tag: str, runs: list[dict[str, Phase]]) -> str:
    def cpu_ratio(run: dict[str, Phase]) -> str:
        ours, peer = run["ours"].cpu_us("ours"), run["peer"].cpu_us("peer")
        return f"{ours / peer:.2f}x" if ours and peer else "-"

    ratios = ", ".join(f"{_rate_ratio(r):.2f}x (CPU {cpu_ratio(r)})" for r in runs)
    return (
        f"{tag}: {len(runs)} runs on fresh domains, ours/peer requests/s {ratios}; the table "
        "shows the run with the median ratio"
    )


def sts_domain(i: int) -> str:
    return f"s{i:05d}.{STS_ZONE}"


def nosts_domain(i: int) -> str:
    # "n" + digits sorts before "ns1" (the zone's only other name): one NSEC covers them all.
    return f"n{i:06d}.{NOSTS_ZONE}"


def build_internet(sim: NetSim, domains: int, https: str) -> PolicyHttps | None:
    """The published domains; with https == "fast" their policy hosts point at a
    bench.policy_https server (its own processes) instead of the netsim's, and it is started."""
    sim.dns.add_zone(STS_ZONE)
    sim.dns.add_zone(NOSTS_ZONE)
    fast = PolicyHttps(sim, OUT / "policy-https") if https == "fast" else None
    for i in range(domains):
        domain = sts_domain(i)
        site = sim.publish_sts(domain, mode="enforce", mx=[f"mx1.{domain}"], max_age=86400)
        if fast is not None:
            fast.add(site)
        else:
            # Load each site's TLS context now, not in whichever daemon's fetch comes first.
            sim.https._context_for(sim.https._cert_for(site))
    sim.dns._ensure_built()  # sign the zones now, not in the first query
    if fast is not None:
        fast.start()
    return fast


# ---- the table ------------------------------------------------------------------------------

COLUMNS = ("measurement", "ours", PEER_NAME, "ratio", "target", "verdict")


def render(rows: Sequence[Sequence[str]]) -> str:
    """bench/table.py's layout with this benchmark's columns."""
    grid = [list(COLUMNS), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in grid) for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return " | ".join((first, *rest))

    rule = "-+-".join("-" * width for width in widths)
    return "\n".join([line(grid[0]), rule, *(line(row) for row in grid[1:])])


def ms(value: float | None) -> str:
    return table.MISSING if value is None else f"{value:,.2f} ms"


def us(value: float | None) -> str:
    return table.MISSING if value is None else f"{value:,.0f} us"


def _ok(passed: bool, complete: bool) -> bool:
    return passed and complete


def hit_rows(conns: int, pair: dict[str, Hits]) -> list[list[str]]:
    ours, peer = pair["ours"], pair["peer"]
    rate_pass = rate_verdict = p99_verdict = ""
    if conns == 16:
        rate_pass = f">= {HIT_TARGET:g}x peer"
        ok = ours.rate is not None and peer.rate is not None
        rate_verdict = table.verdict(
            _ok(ok and ours.rate >= HIT_TARGET * peer.rate, ours.complete)  # type: ignore[operator]
            if ours.rate is not None
            else None
        )
        o99, p99 = ours.median("p99_ms"), peer.median("p99_ms")
        p99_verdict = table.verdict(
            None if o99 is None else _ok(p99 is not None and o99 <= HIT_P99_TARGET * p99, True)
        )
    label = f"cache hit, {conns} conn"
    return [
        [
            f"{label}: requests/s ({ours.requests:,} / {peer.requests:,} requests)",
            ours.rate_cell(),
            peer.rate_cell(),
            table.ratio(ours.rate, peer.rate),
            rate_pass,
            rate_verdict,
        ],
        [
            f"{label}: p50 latency",
            ms(ours.median("p50_ms")),
            ms(peer.median("p50_ms")),
            table.ratio(ours.median("p50_ms"), peer.median("p50_ms")),
            "",
            "",
        ],
        [
            f"{label}: p99 latency",
            ms(ours.median("p99_ms")),
            ms(peer.median("p99_ms")),
            table.ratio(ours.median("p99_ms"), peer.median("p99_ms")),
            f"<= {HIT_P99_TARGET:g}x peer" if conns == 16 else "",
            p99_verdict,
        ],
        [
            f"{label}: daemon CPU per request",
            us(ours.median_cpu_us("ours")),
            us(peer.median_cpu_us("peer")),
            table.ratio(ours.median_cpu_us("ours"), peer.median_cpu_us("peer")),
            "",
            "",
        ],
    ]


def one_shot_rows(label: str, pair: dict[str, Phase], target: float | None) -> list[list[str]]:
    """Each domain once: requests/s (with the target, if any), latency, daemon CPU."""
    ours, peer = pair["ours"].result, pair["peer"].result
    o_rate = ours.rate if ours.requests else None
    p_rate = peer.rate if peer.requests else None
    verdict = ""
    if target is not None:
        verdict = table.verdict(
            None
            if o_rate is None
            else _ok(p_rate is not None and o_rate >= target * p_rate, pair["ours"].complete)
        )
    o_cpu, p_cpu = pair["ours"].cpu_us("ours"), pair["peer"].cpu_us("peer")
    return [
        [
            f"{label}: requests/s",
            table.rate(o_rate),
            table.rate(p_rate),
            table.ratio(o_rate, p_rate),
            f">= {target:g}x peer" if target is not None else "",
            verdict,
        ],
        [
            f"{label}: p50 / p99 latency",
            f"{ms(ours.p50_ms)} / {ms(ours.p99_ms)}",
            f"{ms(peer.p50_ms)} / {ms(peer.p99_ms)}",
            table.ratio(ours.p99_ms, peer.p99_ms),
            "",
            "",
        ],
        [
            f"{label}: daemon CPU per request",
            us(o_cpu),
            us(p_cpu),
            table.ratio(o_cpu, p_cpu),
            "",
            "",
        ],
    ]


def rss_row(label: str, memory: dict[str, dict[str, int]], complete: bool) -> list[str]:
    def cell(name: str) -> str:
        found = memory.get(name, {})
        if "VmRSS" not in found:
            return table.MISSING
        return f"{table.mib(found['VmRSS'])} (peak {table.mib(found['VmHWM'])})"

    ours = memory.get("ours", {}).get("VmRSS")
    passed = None if ours is None else _ok(ours < RSS_LIMIT_MIB * 1024, complete)
    peer = memory.get("peer", {}).get("VmRSS")
    return [
        label,
        cell("ours"),
        cell("peer"),
        table.ratio(ours, peer),
        f"< {RSS_LIMIT_MIB} MiB",
        table.verdict(passed),
    ]


def dns_row(label: str, phase: Phase) -> list[str]:
    """What one DNS server answers per second; a lower bound if the query client was busy."""
    r = phase.result
    cell = table.rate(r.rate if r.requests else None, " q/s")
    if r.requests and phase.busy("client") >= 0.9:
        cell = f">= {cell} (client-bound)"
    return [label, cell, "", "", "", ""]


def cpu_note(tag: str, phases: dict[str, Phase]) -> str:
    parts = []
    for name, phase in phases.items():
        wall = phase.result.seconds or 1.0
        shares = ", ".join(f"{key} {100 * sec / wall:.0f}%" for key, sec in phase.cpu.items())
        n = phase.result.requests or 1
        waits = ", ".join(f"{v / n:.2f} {k}" for k, v in phase.switches.items())
        parts.append(
            f"{name} {wall:.1f} s wall: {shares}" + (f" ({waits} switches/req)" if waits else "")
        )
        del phase
    return f"CPU per process, {tag} (100% = one core): " + "; ".join(parts)


# ---- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MTA-STS policy daemon benchmark: one table")
    parser.add_argument("--domains", type=int, default=1000, help="published MTA-STS domains")
    parser.add_argument("--nosts", type=int, default=100_000, help="domains without MTA-STS")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--cold-connections", type=int, default=16)
    parser.add_argument(
        "--cold-runs",
        type=int,
        default=5,
        help="runs of the uncached row, each on --domains fresh domains (about a second of "
        "each daemon's CPU per run: one run alone swings by 10 %%); the median one is shown",
    )
    parser.add_argument("--hit-seconds", type=float, default=2.0, help="per cache-hit run")
    parser.add_argument("--repeat", type=int, default=5, help="cache-hit runs (median)")
    parser.add_argument("--cap", type=float, default=120.0, help="seconds per one-shot run")
    parser.add_argument(
        "--chunks",
        type=int,
        default=4,
        help="one-shot rows run in this many parts, the daemons taking turns going first",
    )
    parser.add_argument(
        "--ours-src",
        type=Path,
        help="run 'ours' from this source tree (e.g. a checkout of main, for before/after)",
    )
    parser.add_argument(
        "--profile", type=Path, help="run ours under cProfile, writing the stats to this file"
    )
    parser.add_argument(
        "--attackers",
        type=int,
        default=10_000,
        help="attacker domains for the memory-under-abuse rows (ours only; 0: skip both rows)",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the scheduler place every process (default: the daemons on CPU 0; the "
        "load client, the netsim, unbound and the HTTPS server on CPU 1)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="scheduling niceness of the whole benchmark, inherited by both daemons, the "
        "test internet and the load client (default -10; 0 leaves it). On a machine shared "
        "with other work, CFS gives a daemon that never sleeps under load only its fair "
        "share against a busy neighbour, while one that sleeps often is favoured at each "
        "wake-up: the rates then say more about the neighbours than about the daemons",
    )
    parser.add_argument(
        "--cold-dns",
        dest="warm_dns",
        action="store_false",
        help="uncached-domain row with unbound's cache flushed only (default: flushed, then "
        "asked for every TXT/A/AAAA the part's lookups need, so the daemons are measured, not "
        "the netsim's DNS and DNSSEC validation)",
    )
    parser.add_argument(
        "--https",
        choices=("fast", "netsim"),
        default="fast",
        help="who serves the published policies: bench/policy_https.py in processes of its "
        "own, or the netsim's asyncio server in this process (shares a thread with its DNS)",
    )
    parser.add_argument(
        "--dns",
        choices=("unbound", "auth"),
        default="unbound",
        help="what both daemons ask: caching unbound in front of the netsim DNS, or the "
        "netsim's dnspython server itself",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench.policy_run needs root (the test internet uses ports 53/443)")

    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "logs").mkdir(parents=True)
    if args.nice:
        os.nice(args.nice)  # inherited by every process started from here
    if args.pin:
        # The test internet (this process's netsim thread, unbound, the HTTPS server) and
        # the load client on CPU 1; the daemons alone on CPU 0 (pinned once started).
        os.sched_setaffinity(0, {1})
    peer_daemon = ensure_sts_peer_venv()

    print("test internet ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    sim = NetSim(OUT / "netsim", resolver=False).start()
    resolver: CachingResolver | None = None
    bench = Bench(OUT, sim, None)
    try:
        cold_runs = max(1, args.cold_runs)
        bench.https = build_internet(sim, args.domains * cold_runs, args.https)
        if args.attackers:
            policy_abuse.build(sim, args.attackers)
            slow_names, attack_names = policy_abuse.write_names(OUT, args.attackers)
        sts_names = OUT / "sts-domains.txt"
        sts_names.write_text("".join(f"{sts_domain(i)}\n" for i in range(args.domains)))
        run_names = []  # fresh domains for each run of the uncached row; the first also hit
        for r in range(cold_runs):
            names = OUT / f"sts-domains-run{r}.txt"
            first = r * args.domains
            names.write_text("".join(f"{sts_domain(first + i)}\n" for i in range(args.domains)))
            run_names.append(names)
        nosts_names = OUT / "nosts-domains.txt"
        nosts_names.write_text("".join(f"{nosts_domain(i)}\n" for i in range(args.nosts)))
        if args.dns == "unbound":
            resolver = CachingResolver(
                sim.addresses.resolver, sim.nameserver_port, OUT / "unbound", sim.dns
            )
            resolver.start()
            bench.resolver = resolver
            nameserver = resolver.address
        else:
            nameserver = sim.nameserver
        # What the peer's c-ares (and aiohttp's resolver) read, bind-mounted in its namespace.
        sim.resolv_conf.write_text(
            f"nameserver {nameserver.rpartition(':')[0]}\noptions timeout:2 attempts:2\n"
        )
        published = args.domains * cold_runs
        print(f"  {published} MTA-STS domains published, DNS: {nameserver}", file=sys.stderr)

        print("dns capacity ...", file=sys.stderr, flush=True)
        raw: dict[str, Any] = {}
        raw["dns-auth"] = bench.dns_capacity(sim.nameserver, nosts_names, 10_000, "auth")
        if resolver is not None:
            raw["dns-unbound"] = bench.dns_capacity(
                resolver.address, nosts_names, 50_000, "unbound"
            )

        print("daemons ...", file=sys.stderr, flush=True)
        ours_port, peer_port = free_port(), free_port()
        data_dir = OUT / "ours-data"
        profile = ["-m", "bench.cpuprofile", str(args.profile)] if args.profile else []
        ours_argv = [sys.executable, *(profile or ["-m"]), "tlsrpt_lmtp", "policy", "serve"]
        ours_argv += ["--listen", f"{LOOPBACK}:{ours_port}", "--exim-listen", ""]
        ours_argv += ["--data-dir", str(data_dir), "--nameserver", nameserver]
        ours_argv += ["--ca-file", str(sim.ca_file), "--log-file", os.devnull]
        src = args.ours_src or REPO
        if "allow-private-policy-hosts" in (src / "tlsrpt_lmtp" / "cli.py").read_text():
            ours_argv += ["--allow-private-policy-hosts"]  # the test internet is on 127.0.N.x
        config = OUT / "mta-sts-daemon.yml"
        config.write_text(peer_config(LOOPBACK, peer_port))
        peer_argv = sim.in_dns_namespace([str(peer_daemon), "-c", str(config)])
        env = dict(os.environ)
        peer_env = {**env, "SSL_CERT_FILE": str(sim.ca_file)}
        peer_env.pop("SSL_CERT_DIR", None)
        ours_env = {**env, "PYTHONPATH": str(src)}
        bench.daemons["ours"] = Daemon(
            "ours", ours_argv, ours_port, OUT / "logs/ours.log", ours_env, src
        )
        bench.daemons["peer"] = Daemon(
            "peer", peer_argv, peer_port, OUT / "logs/peer.log", peer_env
        )
        for name, daemon in bench.daemons.items():
            if not daemon.wait_ready():
                raise SystemExit(f"{name} did not start; see {OUT / 'logs' / (name + '.log')}")
            if args.pin:
                daemon.pin(0)
        if args.pin:
            bench.client_cpu = ["--cpu", "1"]
        setup_seconds = time.monotonic() - started

        print("uncached MTA-STS domains ...", file=sys.stderr, flush=True)
        cold_all = [
            bench.interleaved(f"cold{r}", names, args, expect="sts", warm=args.warm_dns)
            for r, names in enumerate(run_names)
        ]
        cold = median_run(cold_all)
        raw["cold"] = cold
        raw["cold-runs"] = cold_all

        print("cache hits ...", file=sys.stderr, flush=True)
        hits: dict[int, dict[str, Hits]] = {}
        for conns in args.connections:
            hits[conns] = {name: Hits([]) for name in DAEMONS}
        for run in range(args.repeat):
            order = DAEMONS if run % 2 == 0 else DAEMONS[::-1]
            for conns in args.connections:
                for name in order:
                    hits[conns][name].runs.append(
                        bench.load(
                            name,
                            f"hit-c{conns}-r{run}",
                            sts_names,
                            conns,
                            count=HIT_COUNT_LIMIT,
                            cap=args.hit_seconds,
                            timed=True,
                            expect="sts",
                        )
                    )
        raw["hits"] = hits
        memory_before = {name: memory_kib(d.pid) for name, d in bench.daemons.items()}

        print("domains without MTA-STS ...", file=sys.stderr, flush=True)
        nosts: dict[str, Phase] = {}
        memory: dict[str, dict[str, int]] = {}
        nosts = bench.interleaved("nosts", nosts_names, args, expect="none")
        for name in DAEMONS:
            memory[name] = memory_kib(bench.daemons[name].pid)
        raw["nosts"] = nosts
        raw["memory-before-nosts"] = memory_before
        raw["memory-after-nosts"] = memory

        if args.attackers:
            print("abuse (ours only) ...", file=sys.stderr, flush=True)
            ours = bench.daemons["ours"]
            policy_abuse.reset_peak(ours.pid)
            seconds = policy_abuse.PIPELINE_SECONDS
            argv = ["pipeline", "--port", str(ours.port), "--names", str(slow_names)]
            argv += ["--connections", "64", "--time-cap", str(seconds), *bench.client_cpu]
            result, problem = bench.client(argv, "ours-pipeline", seconds)
            if problem:
                bench.notes.append(f"pipelining abuse: {problem}")
            raw["pipeline"] = asdict(result)
            raw["pipeline-memory"] = memory_kib(ours.pid)
            bench.flush_dns()
            policy_abuse.reset_peak(ours.pid)
            raw["attackers"] = asdict(
                bench.load("ours", "attackers", attack_names, 16, cap=args.cap * 2, expect="ok")
            )
            raw["attackers-memory"] = memory_kib(ours.pid)
    finally:
        for daemon in bench.daemons.values():
            daemon.stop()
        if resolver is not None:
            resolver.stop()
        if bench.https is not None:
            bench.https.stop()
        sim.stop()

    rows: list[list[str]] = []
    for conns in args.connections:
        rows += hit_rows(conns, hits[conns])
    rows += one_shot_rows(
        f"{args.domains:,} uncached MTA-STS domains, {args.cold_connections} conn"
        + (f" (median of {len(raw['cold-runs'])} runs)" if len(raw["cold-runs"]) > 1 else ""),
        cold,
        COLD_TARGET,
    )
    rows += one_shot_rows(
        f"{args.nosts:,} domains without MTA-STS, {args.cold_connections} conn", nosts, COLD_TARGET
    )
    rows.append(
        rss_row(
            f"daemon RSS after the {args.nosts:,} domains (VmRSS, peak VmHWM)",
            memory,
            nosts["ours"].complete,
        )
    )
    rows.append(
        [
            "daemon RSS before them (after cold + cache hits)",
            table.mib(memory_before["ours"].get("VmRSS")),
            table.mib(memory_before["peer"].get("VmRSS")),
            table.ratio(memory_before["ours"].get("VmRSS"), memory_before["peer"].get("VmRSS")),
            "",
            "",
        ]
    )
    if args.attackers:
        rows += policy_abuse.rows(raw, args.attackers)
    rows.append(
        dns_row("DNS capacity: netsim authoritative (dnspython), NXDOMAIN", raw["dns-auth"])
    )
    if "dns-unbound" in raw:
        rows.append(
            dns_row("DNS capacity: caching unbound (aggressive NSEC), NXDOMAIN", raw["dns-unbound"])
        )

    total = time.monotonic() - started
    print(
        f"\nMTA-STS policy daemon benchmark: {os.cpu_count()} cores shared by both daemons, "
        f"the load client, the netsim, the policy HTTPS server ({args.https}) and unbound "
        f"({'warmed' if args.warm_dns else 'cold'} for the uncached row), all at nice "
        f"{args.nice}; Python "
        f"{platform.python_version()}; DNS for both daemons: {args.dns} ({nameserver}); "
        f"cache-hit rows are medians of {args.repeat} runs of {args.hit_seconds:g} s "
        f"[min-max]; ratio = ours / peer; peer cache_grace "
        f"{PEER_CACHE_GRACE} s; setup {setup_seconds:.0f} s, total {total:.0f} s"
    )
    print(render(rows))
    if len(raw["cold-runs"]) > 1:
        bench.notes.append(runs_note("uncached domains", raw["cold-runs"]))
    bench.notes.append(cpu_note("uncached domains", cold))
    bench.notes.append(cpu_note("no MTA-STS", nosts))
    for conns, pair in hits.items():
        for name, runs in pair.items():
            busiest = max((p.busy("client") for p in runs.runs), default=0.0)
            daemon = statistics.median(p.busy(name) for p in runs.runs) if runs.runs else 0.0
            if busiest >= 0.9:
                bench.notes.append(
                    f"{name} cache hits {conns} conn: the load client used up to "
                    f"{busiest:.0%} of its core (daemon median {daemon:.0%}): client-bound"
                )
    mid = args.connections[len(args.connections) // 2]
    bench.notes.append(
        cpu_note(f"cache hits {mid} conn run 0", {n: hits[mid][n].runs[0] for n in DAEMONS})
    )
    for key in ("dns-auth", "dns-unbound"):
        if key in raw:
            bench.notes.append(cpu_note(key, {"DNS query client": raw[key]}))
    for note in bench.notes:
        print(f"note: {note}")
    (OUT / "results.json").write_text(json.dumps(raw, default=_jsonable, indent=2))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Hits):
        return {"runs": [asdict(p) for p in value.runs]}
    return asdict(value)


if __name__ == "__main__":
    main()
