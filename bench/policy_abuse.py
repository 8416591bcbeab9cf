"""The policy daemon's memory under abuse (issue 9 item 3), for bench/policy_run.py.

Two phases against our daemon only (the peer queues pipelined requests without bound, and
10,000 of these policies would cost it gigabytes on a machine shared with other work):

- pipelining: `policy_load.py pipeline`, 64 connections each writing `sts pNNN.slow.test`
  netstrings as fast as the daemon reads them for 5 s, never reading a reply, while every
  `_mta-sts.pNNN.slow.test` TXT query goes unanswered (the lookups wait for the DNS timeout).
- attacker domains: N domains `aNNNNN.atk.test` each publishing the largest policy the daemon
  accepts (100 `mx` lines, 200 lines, just under 64 KiB), each looked up once (16 conn).

Both report VmRSS after the phase and the peak (VmHWM, reset through /proc/PID/clear_refs
just before the phase).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import table
from tests.netsim.fixtures import NetSim

SLOW_ZONE = "slow.test"
ATTACK_ZONE = "atk.test"
SLOW_NAMES = 64
PIPELINE_SECONDS = 5.0
LIMIT_MIB = 100
GROUP = 100  # attacker policy hosts per certificate (one certificate per host would take minutes)


def slow_domain(i: int) -> str:
    return f"p{i:03d}.{SLOW_ZONE}"


def attacker_domain(i: int) -> str:
    return f"a{i:05d}.{ATTACK_ZONE}"


def attacker_policy() -> bytes:
    """The largest policy the daemon keeps: 100 mx lines, 200 lines in all, < 64 KiB."""
    lines = ["version: STSv1", "mode: enforce", "max_age: 86400"]
    lines += [f"mx: {'m' * 60}{i:03d}.{'x' * 60}.example.net" for i in range(100)]
    room = 65536 - sum(len(x) + 1 for x in lines) - 97 * 12
    lines += [f"x-fill{i:03d}: {'v' * (room // 97)}" for i in range(97)]
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) <= 65536, len(body)
    return body


def build(sim: NetSim, attackers: int) -> None:
    """The slow names and the attacker domains (unsigned zones: nothing to sign)."""
    sim.dns.add_zone(SLOW_ZONE, "unsigned")
    sim.dns.add_zone(ATTACK_ZONE, "unsigned")
    for i in range(SLOW_NAMES):
        sim.dns.fail(f"_mta-sts.{slow_domain(i)}", "timeout")
    body = attacker_policy()  # one object shared by every site
    for start in range(0, attackers, GROUP):
        group = range(start, min(start + GROUP, attackers))
        hosts = tuple(f"mta-sts.{attacker_domain(i)}" for i in group)
        for i in group:
            site = sim.publish_sts(attacker_domain(i), policy=body, cert_names=hosts)
        sim.https._context_for(sim.https._cert_for(site))


def write_names(out: Path, attackers: int) -> tuple[Path, Path]:
    slow = out / "slow-domains.txt"
    slow.write_text("".join(f"{slow_domain(i)}\n" for i in range(SLOW_NAMES)))
    attack = out / "attacker-domains.txt"
    attack.write_text("".join(f"{attacker_domain(i)}\n" for i in range(attackers)))
    return slow, attack


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5\n")  # VmHWM := VmRSS


def rows(raw: dict[str, Any], attackers: int) -> list[list[str]]:
    out = []
    pipe = raw["pipeline"]
    mem = raw["pipeline-memory"]
    peak = mem.get("VmHWM")
    out.append(
        [
            f"RSS under pipelining abuse (64 conn, {PIPELINE_SECONDS:g} s, DNS not answering;"
            f" {pipe['requests']:,} requests written by the client)",
            f"{table.mib(mem.get('VmRSS'))} (peak {table.mib(peak)})",
            "not run",
            "",
            f"< {LIMIT_MIB} MiB",
            table.verdict(peak is not None and peak < LIMIT_MIB * 1024),
        ]
    )
    phase = raw["attackers"]
    mem = raw["attackers-memory"]
    peak = mem.get("VmHWM")
    r = phase["result"]
    out.append(
        [
            f"RSS with {attackers:,} attacker domains (64 KiB policies, 100 mx; "
            f"{r['expected']:,} fetched, {r['requests'] / (r['seconds'] or 1):,.0f}/s)",
            f"{table.mib(mem.get('VmRSS'))} (peak {table.mib(peak)})",
            "not run",
            "",
            f"< {LIMIT_MIB} MiB",
            table.verdict(peak is not None and peak < LIMIT_MIB * 1024),
        ]
    )
    return out
