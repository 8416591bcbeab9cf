"""Ours against ours: the uncached-domain CPU of several source trees of the policy daemon.

    python -m bench.policy_ab [--domains 4000] [--part 500] NAME=DIR NAME=DIR ...

e.g. ``A=/tmp/main B=.`` with ``git archive main | tar -x -C /tmp/main``. Needs root, like
bench.policy_run, whose test internet it uses (fast HTTPS server, caching unbound warmed with
each part's names): every tree's daemon is started on CPU 0 (the rest on CPU 1, all at nice
-10), then each part of the published domains is looked up once by each daemon in turn (the
order alternating), and the daemons' utime and stime per request are summed over the parts.
The peer is not run: this is for before/after numbers of one change, with more domains than
the main table's uncached row. ``--profile NAME`` runs that daemon under bench.cpuprofile.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import bench.policy_run as policy_run
from bench.policy_run import Bench, CachingResolver, Daemon, build_internet, sts_domain
from bench.procs import LOOPBACK, free_port
from tests.netsim.fixtures import NetSim

OUT = Path(__file__).resolve().parent / "out" / "policy-ab"


def ticks(pid: int) -> tuple[int, int]:
    """utime and stime of ``pid`` in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=4000)
    parser.add_argument("--part", type=int, default=500)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--profile", default="", help="the NAME to run under cProfile")
    parser.add_argument("trees", nargs="+", metavar="NAME=DIR")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench.policy_ab needs root (the test internet uses ports 53/443)")
    trees = dict(tree.split("=", 1) for tree in args.trees)
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "logs").mkdir(parents=True)
    os.nice(-10)
    os.sched_setaffinity(0, {1})
    policy_run.OUT = OUT  # the HTTPS server's and the netsim's files go here
    tick = os.sysconf("SC_CLK_TCK")
    sim = NetSim(OUT / "netsim", resolver=False).start()
    bench = Bench(OUT, sim, None)
    try:
        bench.https = build_internet(sim, args.domains, "fast")
        resolver = CachingResolver(
            sim.addresses.resolver, sim.nameserver_port, OUT / "unbound", sim.dns
        )
        resolver.start()
        bench.resolver = resolver
        for name, src in trees.items():
            port = free_port()
            run = ["-m"]
            if name == args.profile:
                run = ["-m", "bench.cpuprofile", str(OUT / f"{name}.prof")]
            argv = [sys.executable, *run, "tlsrpt_lmtp", "policy", "serve"]
            argv += ["--listen", f"{LOOPBACK}:{port}", "--exim-listen", ""]
            argv += ["--data-dir", str(OUT / f"data-{name}"), "--nameserver", resolver.address]
            argv += ["--ca-file", str(sim.ca_file), "--log-file", os.devnull]
            argv += ["--allow-private-policy-hosts"]
            env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
            log = OUT / "logs" / f"{name}.log"
            bench.daemons[name] = Daemon(name, argv, port, log, env, Path(src).resolve())
        for daemon in bench.daemons.values():
            if not daemon.wait_ready():
                raise SystemExit(f"{daemon.name} did not start; see {OUT / 'logs'}")
            daemon.pin(0)
        bench.client_cpu = ["--cpu", "1"]
        names = list(trees)
        used = {name: [0, 0, 0, 0.0] for name in names}  # utime, stime, requests, seconds
        domains = [sts_domain(i) for i in range(args.domains)]
        for k in range(args.domains // args.part):
            part = domains[k * args.part : (k + 1) * args.part]
            path = OUT / f"part{k}.txt"
            path.write_text("".join(f"{d}\n" for d in part))
            for name in names if k % 2 == 0 else names[::-1]:
                bench.flush_dns()
                bench.warm_dns(part)
                pid = bench.daemons[name].pid
                before = ticks(pid)
                phase = bench.load(name, f"part{k}", path, args.connections, cap=120, expect="sts")
                after = ticks(pid)
                if not phase.complete:
                    raise SystemExit(f"{name} part {k}: not every reply as expected")
                row = used[name]
                row[0] += after[0] - before[0]
                row[1] += after[1] - before[1]
                row[2] += phase.result.requests
                row[3] += phase.result.seconds
                cpu_us = 1e6 * (sum(after) - sum(before)) / tick / phase.result.requests
                print(f"  {name} part {k}: {cpu_us:,.0f} us CPU/request", file=sys.stderr)
        for name, (utime, stime, requests, seconds) in used.items():
            per = 1e6 / tick / requests
            print(
                f"{name}: {(utime + stime) * per:,.0f} us CPU per uncached domain "
                f"(user {utime * per:,.0f}, system {stime * per:,.0f}), "
                f"{requests / seconds:,.0f} requests/s, {requests:,} requests"
            )
    finally:
        for daemon in bench.daemons.values():
            daemon.stop()
        if bench.resolver is not None:
            bench.resolver.stop()
        if bench.https is not None:
            bench.https.stop()
        sim.stop()


if __name__ == "__main__":
    main()
