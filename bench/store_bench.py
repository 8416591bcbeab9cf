"""The store on PostgreSQL beside SQLite (issue 12): ingest rate and `summary` time, one node and
three nodes.

    .venv/bin/python -m bench.store_bench [--messages 2000] [--summary-reports 20000]
                                          [--time-cap 300]

A private PostgreSQL is started for the run (tests/support/servers.py: initdb + pg_ctl on a free
loopback port in a temporary directory, removed at the end) with ``fsync``, ``full_page_writes``
and ``synchronous_commit`` on, so that it keeps the promise SQLite's stage 1 keeps (fsynced
before the 250). For each row:

1. stage 1: the corpus (bench/corpus.py report mails, 90% without and 10% with 50 failure
   details, every report distinct) is archived in batches of 32, as the LMTP server's group
   commit does: messages/s.
2. stage 2: 1 or 3 fresh processes (``--worker``) wait at a start line, then each claims and
   processes batches (the server's stage 2 loop: parse, store, write the events to a file)
   until nothing is left to claim. Rate = messages / (last finish - first claim); CPU per
   message = the workers' CPU time, and for PostgreSQL the database server's (the postmaster
   and every backend, reaped ones included), over the messages. Three SQLite processes are not
   measured: a SQLite store is one node's (claims are not shared).
3. ``summary`` (views.cli.summarise over everything, no period, top 20, findings included): the
   median of 3 runs, on the ingested store and on a store of ``--summary-reports`` generated
   reports (bench/views_fill.py).

Every run is bounded (``--time-cap`` per stage 2 run, then the workers are killed and the row
says so). Prints one table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 6, 1, tzinfo=UTC)
PUT_BATCH = 32


def corpus(n: int, seed: int = 12) -> list[bytes]:
    from bench.corpus import base64_lines, email_head, email_tail, make_envelope, report_json

    rng = random.Random(seed)
    mails = []
    for seq in range(n):
        size, failures = ("medium", 50) if seq % 10 == 9 else ("small", 0)
        env = make_envelope(rng, size, seq)
        gz = gzip.compress(report_json(rng, env, failures), compresslevel=6, mtime=0)
        mails.append(email_head(rng, env) + b"".join(base64_lines([gz])) + email_tail(env))
    return mails


def worker(target: str, events: str) -> None:
    """One node's stage 2 (its own process): wait for the start line, then claim until dry."""
    from tlsrpt_lmtp.ingest.pipeline import Pipeline
    from tlsrpt_lmtp.ingest.stage2 import BATCH, BATCH_BYTES
    from tlsrpt_lmtp.output.sinks import open_emitter
    from tlsrpt_lmtp.store import open_store

    emitter = open_emitter("json", events)
    pipeline = Pipeline(open_store(target), emitter)
    print("ready", flush=True)
    sys.stdin.readline()
    start, cpu = time.time(), time.process_time()
    done = 0
    while batch := pipeline.store.claim(BATCH, BATCH_BYTES):
        pipeline.process_many(batch)
        done += len(batch)
    end = time.time()
    print(json.dumps({"start": start, "end": end, "cpu": time.process_time() - cpu, "n": done}))
    pipeline.close()
    emitter.close()


def _ticks(pid: int, *, children: bool) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = int(fields[11]) + int(fields[12])  # utime, stime
    return own + (int(fields[13]) + int(fields[14]) if children else 0)  # cutime, cstime


def server_cpu(postmaster: int | None) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster, its reaped children, and
    its live children."""
    if postmaster is None:
        return 0.0
    total = _ticks(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == postmaster:
                total += int(stat[11]) + int(stat[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def stage1(target: str, mails: list[bytes]) -> float:
    from tlsrpt_lmtp.core.events import iso
    from tlsrpt_lmtp.store import open_store

    store = open_store(target)
    try:
        start = time.monotonic()
        for i in range(0, len(mails), PUT_BATCH):
            store.put([(raw, "bench") for raw in mails[i : i + PUT_BATCH]], iso(NOW))
        return len(mails) / (time.monotonic() - start)
    finally:
        store.close()


def stage2(
    target: str, nodes: int, work: Path, cap: float, postmaster: int | None
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.store_bench",
                "--worker",
                target,
                "--events",
                str(work / f"events-{nodes}-{i}.jsonl"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for i in range(nodes)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        before = server_cpu(postmaster)
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        deadline = time.monotonic() + cap
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append(json.loads(out.strip().splitlines()[-1]))
        db_cpu = server_cpu(postmaster) - before
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.wait()
        return {"timeout": True}
    n = sum(r["n"] for r in results)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "n": n,
        "rate": n / wall,
        "cpu_ms": 1000 * sum(r["cpu"] for r in results) / n,
        "db_cpu_ms": 1000 * db_cpu / n if postmaster else None,
        "per_node": [r["n"] for r in results],
    }


def check(target: str, expected: int) -> str:
    from tlsrpt_lmtp.store import open_store

    store = open_store(target)
    try:
        rows = store.query("SELECT status, count(*) AS n FROM messages GROUP BY status")
        statuses = {r["status"]: int(r["n"]) for r in rows}
        reports = int(store.query("SELECT count(*) AS n FROM reports")[0]["n"])
    finally:
        store.close()
    ok = statuses.get("report") == expected and reports == expected and len(statuses) == 1
    return "ok" if ok else f"WRONG {statuses} {reports} reports"


def summary_seconds(target: str, readers: int = 1) -> float:
    """The median of 3 rounds; a round is ``readers`` summaries at once (nodes reading the
    shared store together), each on its own connection, timed until the last one is done."""
    from concurrent.futures import ThreadPoolExecutor

    from tlsrpt_lmtp.store import open_reader
    from tlsrpt_lmtp.views.cli import summarise
    from tlsrpt_lmtp.views.period import Period

    def one() -> None:
        reader = open_reader(target)
        try:
            summarise(reader, Period(), None, now=NOW, top=20)
        finally:
            reader.close()

    times = []
    with ThreadPoolExecutor(readers) as pool:
        for _ in range(3):
            start = time.monotonic()
            for future in [pool.submit(one) for _ in range(readers)]:
                future.result()
            times.append(time.monotonic() - start)
    return statistics.median(times)


def fill_generated(target: str, n: int) -> float:
    from bench.views_fill import generate
    from tlsrpt_lmtp.core.model import MailMeta
    from tlsrpt_lmtp.store import open_store

    store = open_store(target)
    start = time.monotonic()
    try:
        reports = list(generate(n, seed=12))
        for i in range(0, n, 500):
            with store.transaction(durable=False) as c:
                for k, report in enumerate(reports[i : i + 500], start=i):
                    store.add_report(
                        c, report, meta=MailMeta(), archive_id=f"{k:064x}", received_at=""
                    )
    finally:
        store.close()
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--summary-reports", type=int, default=20_000)
    parser.add_argument("--time-cap", type=float, default=300.0, help="seconds per stage 2 run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--events", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.events)
        return
    sys.path.insert(0, str(REPO))
    from tests.support.servers import PostgresServer

    mails = corpus(args.messages)
    pg = PostgresServer(fsync="on", full_page_writes="on", synchronous_commit="on")
    pg.start()
    rows: list[list[str]] = []
    try:
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
        with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
            work = Path(tmp)
            big: dict[str, str] = {}  # backend → a store of generated reports, for summary
            for backend, nodes in (("sqlite", 1), ("postgresql", 1), ("postgresql", 3)):
                lite = backend == "sqlite"
                fresh = pg.create_database
                target = f"sqlite:{work / f'ingest-{nodes}.sqlite3'}" if lite else fresh()
                put_rate = stage1(target, mails)
                got = stage2(target, nodes, work, args.time_cap, None if lite else postmaster)
                if got.get("timeout"):
                    rows.append([backend, str(nodes), f"{put_rate:,.0f}", "timeout"] + ["-"] * 5)
                    continue
                verdict = check(target, len(mails))
                ingested = summary_seconds(target, nodes)
                if backend not in big:
                    big[backend] = f"sqlite:{work / 'big.sqlite3'}" if lite else fresh()
                    fill_generated(big[backend], args.summary_reports)
                generated = summary_seconds(big[backend], nodes)
                db_cpu = "in-process" if got["db_cpu_ms"] is None else f"{got['db_cpu_ms']:.2f}"
                rows.append(
                    [
                        backend,
                        str(nodes),
                        f"{put_rate:,.0f}",
                        f"{got['rate']:,.0f}",
                        f"{got['cpu_ms']:.2f}",
                        db_cpu,
                        f"{ingested:.3f}",
                        f"{generated:.2f}",
                        f"{verdict} {'/'.join(map(str, got['per_node']))}",
                    ]
                )
    finally:
        pg.remove()
    header = [
        "store",
        "nodes",
        "stage 1 msg/s",
        "stage 2 msg/s",
        "stage 2 CPU ms/msg",
        "DB server CPU ms/msg",
        f"summary s ({args.messages})",
        f"summary s ({args.summary_reports})",
        "check (messages per node)",
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{args.messages} report mails, {os.cpu_count()} CPUs (load average at the end {load}:"
        " other work competes for them), PostgreSQL with fsync on"
    )
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
