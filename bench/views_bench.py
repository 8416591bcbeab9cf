"""Benchmark of `tlsrpt-lmtp summary` at provider scale (not a test).

    /work/main/.venv/bin/python -m bench.views_bench [--sizes 10000 100000 1000000]
        [--main /work/main] [--time-cap 300]

For each size, a store of that many reports (5,000 policy domains, 30 organisations, one
year up to yesterday, so that the silence findings read recent data; bench/views_fill.py,
through Store.add_report; with views/indexes.py's index) is filled once and cached under
bench/out/views-N-DATE/. Each format then runs in a fresh process over that year (``--from``
a year ago ``--to`` today), this checkout beside the code in ``--main`` (the 'before'
column, run by the same runner with PYTHONPATH pointing there); then one domain, and the
last day alone (what a daily digest reads). The table prints the wall time of the whole
process (start-up, imports, queries, rendering, writing), its CPU time (user + system: less
sensitive to a busy machine than the wall time), the peak RSS (VmHWM) and the output's size.
Runs over the time cap, or over a 4 GiB address-space limit, are shown as such. Progress
goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.views_fill import fill
from tlsrpt_lmtp.views.indexes import ensure_indexes

HERE = Path(__file__).resolve().parent
OURS = HERE.parent
OUT = HERE / "out"
FORMATS = ("text", "markdown", "json", "html")
TODAY = datetime.now(UTC).date()  # the stores end yesterday: the findings see recent data
PERIOD = ("--from", (TODAY - timedelta(days=365)).isoformat(), "--to", TODAY.isoformat())
LIMIT = 4 << 30


@dataclass(frozen=True)
class Run:
    seconds: float | None
    rss_kib: int | None
    output: int | None
    note: str = ""
    cpu: float = 0.0  # user + system seconds of the child


def store(size: int, end: date) -> Path:
    data = OUT / f"views-{size}-{end.isoformat()}"
    db = data / "tlsrpt.sqlite3"
    if not (data / "complete").exists():
        for p in data.glob("tlsrpt.sqlite3*"):
            p.unlink()
        print(f"filling {size:,} reports into {db} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        fill(db, size, batch=20_000, end=end)
        with sqlite3.connect(db) as c:  # the index views/indexes.py asks store/schema.py to create
            ensure_indexes(c)
        took = time.perf_counter() - started
        (data / "complete").write_text(f"{took:.1f}\n")
        print(f"  filled in {took:.1f} s", file=sys.stderr, flush=True)
    return data


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def measure(code: Path, data: Path, argv: list[str], cap: float, *, period: bool = True) -> Run:
    report = OUT / "views-run.txt"
    report.unlink(missing_ok=True)
    target = OUT / "views-output"
    target.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, str(HERE / "views_run.py"), str(report), "summary"]
    cmd += ["--data-dir", str(data), *(PERIOD if period else ()), *argv]
    cmd += ["--output", str(target)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, env=env, capture_output=True, timeout=cap, preexec_fn=_limit, check=False
        )
    except subprocess.TimeoutExpired:
        return Run(None, None, None, f"> {cap:.0f} s")
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0 or not report.exists():
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return Run(None, None, None, f"failed: {last[0][:60]}")
    hwm = int(report.read_text().split()[1])
    return Run(took, hwm, target.stat().st_size if target.exists() else None, cpu=cpu)


def cell(run: Run) -> str:
    if run.seconds is None:
        return run.note
    size = f"{run.output / 1e6:.2f} MB" if run.output is not None else "-"
    rss = (run.rss_kib or 0) / 1024
    return f"{run.seconds:.2f} s ({run.cpu:.2f} s CPU), {rss:.0f} MiB, {size}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000, 1_000_000])
    ap.add_argument("--main", type=Path, default=Path("/work/main"))
    ap.add_argument("--time-cap", type=float, default=300.0)
    ap.add_argument("--skip-main-above", type=int, default=10**9)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        data = store(size, TODAY)
        for fmt in FORMATS:
            argv = ["--format", fmt]
            print(f"{size:,} {fmt} ...", file=sys.stderr, flush=True)
            ours = measure(OURS, data, argv, args.time_cap)
            before = (
                measure(args.main, data, argv, args.time_cap)
                if size <= args.skip_main_above
                else Run(None, None, None, "not run")
            )
            rows.append((f"{size:,}", fmt, cell(ours), cell(before)))
        drill = ["--domain", "d00007.example"]  # one domain of 5,000
        ours = measure(OURS, data, drill, args.time_cap)
        rows.append((f"{size:,}", "text --domain", cell(ours), "-"))
        day = ["--from", (TODAY - timedelta(days=1)).isoformat()]  # what a daily digest reads
        ours = measure(OURS, data, day, args.time_cap, period=False)
        before = measure(args.main, data, day, args.time_cap, period=False)
        rows.append((f"{size:,}", "text, last day", cell(ours), cell(before)))
    head = (
        "reports",
        "format",
        "ours: wall (CPU), peak RSS, output",
        "main: wall (CPU), peak RSS, output",
    )
    widths = [max(len(r[i]) for r in (*rows, head)) for i in range(4)]
    for r in (head, tuple("-" * w for w in widths), *rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
