"""Run the whole benchmark and print one table (see bench/README.md).

    .venv/bin/python -m bench.run [--messages 2000] [--connections 1 8] [--time-cap 30]

Every ingest measurement runs in a fresh subprocess that reports its own VmHWM, so each
peak RSS belongs to that measurement alone. LMTP traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import corpus, table
from bench.lmtp_load import LoadResult, run_load, to_data
from bench.peer import PEER_VERSION, ensure_peer_venv
from bench.procs import LOOPBACK, Server, free_port, run_measured

OUT = Path(__file__).resolve().parent / "out"
IMPLS = ("ours", "parse", "parsedmarc", "floor")
COMPARED = ("ours", "parsedmarc", "floor")  # the table's columns
SPEEDUP_TARGET = 5.0  # x parsedmarc, email input
LMTP_TARGET = 0.70  # of the bare aiosmtpd LMTP rate
LARGE_RSS_LIMIT_MIB = 150
BOMB_RSS_LIMIT_MIB = 100


@dataclass(frozen=True)
class Ingested:
    """One implementation on one set of emails, over ``runs`` fresh worker processes."""

    files: int
    runs: int
    rates: tuple[float, ...] = ()
    peak_kib: int | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    problem: str = ""

    @property
    def rate(self) -> float | None:
        """Median reports/s; None unless every run finished."""
        return statistics.median(self.rates) if len(self.rates) == self.runs else None

    @property
    def all_ok(self) -> bool:
        return self.rate is not None and self.outcomes.get("ok", 0) == self.files * self.runs

    @property
    def refused_all(self) -> bool:
        """Nothing accepted and nothing crashed: every email was refused."""
        crashed = any(label.startswith("exception") for label in self.outcomes)
        return self.rate is not None and not self.outcomes.get("ok") and not crashed


def combine(files: int, reports: list[dict[str, Any]]) -> Ingested:
    """Fold worker reports (an empty dict for a run that failed) into one Ingested."""
    done = [report for report in reports if report]
    outcomes: Counter[str] = Counter()
    for report in done:
        outcomes.update(report["outcomes"])
    return Ingested(
        files,
        len(reports),
        tuple(report["files"] / report["seconds"] for report in done),
        max((report["vmhwm_kib"] for report in done), default=None),
        dict(outcomes),
        next((report["problem"] for report in done if report["problem"]), ""),
    )


@dataclass(frozen=True)
class Loaded:
    """One LMTP server kind at one concurrency, over several runs."""

    results: tuple[LoadResult, ...]

    @property
    def rate(self) -> float | None:
        rates = [result.rate for result in self.results if result.delivered]
        return statistics.median(rates) if len(rates) == len(self.results) else None

    @property
    def failed(self) -> int:
        return sum(result.failed for result in self.results)


class Bench:
    def __init__(self, out: Path, peer_python: Path) -> None:
        self.out = out
        self.pythons = {
            "ours": Path(sys.executable),
            "parse": Path(sys.executable),
            "floor": Path(sys.executable),
            "parsedmarc": peer_python,
        }
        self.notes: list[str] = []

    def _worker(self, impl: str, files: list[Path], tag: str) -> dict[str, Any]:
        argv = [str(self.pythons[impl]), "-m", "bench.worker", "--impl", impl]
        if impl == "ours":
            argv += ["--data-dir", str(self.out / "tmp" / f"ingest-{tag}")]
        print(f"  {impl:<10} {tag}: {len(files)} email(s)", file=sys.stderr, flush=True)
        done = run_measured([*argv, *map(str, files)], self.out / "logs" / f"{impl}-{tag}.log")
        if done.returncode != 0 or not done.report:
            lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
            self.notes.append(f"{impl} {tag}: failed: {lines[-1]}")
            return {}
        return done.report

    def ingest_all(self, files: list[Path], tag: str, repeat: int) -> dict[str, Ingested]:
        """Every implementation on ``files``, interleaved, ``repeat`` times."""
        reports: dict[str, list[dict[str, Any]]] = {impl: [] for impl in IMPLS}
        for run in range(repeat):
            for impl in IMPLS:
                reports[impl].append(self._worker(impl, files, f"{tag}-r{run}"))
        results = {impl: combine(len(files), reports[impl]) for impl in IMPLS}
        for impl, result in results.items():
            if result.problem:
                self.notes.append(f"{impl} {tag}: {result.outcomes}; first: {result.problem}")
        return results

    def _server_argv(self, kind: str, listen: str, tag: str) -> list[str]:
        if kind == "bare":
            return [sys.executable, "-m", "bench.bare_lmtp", "--listen", listen]
        data_dir = str(self.out / "tmp" / f"serve-{tag}")
        serve = ["serve", "--listen", listen, "--data-dir", data_dir, "--log-file", os.devnull]
        serve += ["--dkim-policy", "off"]  # the corpus's signatures are fake; see bench/README.md
        return [sys.executable, "-m", "tlsrpt_lmtp", *serve]

    def lmtp(
        self, kind: str, connections: int, payloads: list[bytes], cap: float, run: int
    ) -> LoadResult:
        port = free_port()
        tag = f"c{connections}-r{run}"
        argv = self._server_argv(kind, f"{LOOPBACK}:{port}", tag)
        print(f"  lmtp {kind:<5} {tag}: {len(payloads)} messages", file=sys.stderr, flush=True)
        log = self.out / "logs" / f"lmtp-{kind}-{tag}.log"
        with Server(argv, port, log) as server:
            if not server.wait_ready():
                self.notes.append(f"lmtp {kind} {tag}: server did not start (see {log})")
                return LoadResult()
            result = run_load(LOOPBACK, port, payloads, connections, cap)
            if kind == "ours":  # count until stage 2 has processed all it acknowledged
                result.seconds += drain_seconds(self.out / "tmp" / f"serve-{tag}", cap)
        if result.failed or result.capped:
            self.notes.append(
                f"lmtp {kind} {tag}: delivered {result.delivered}, failed {result.failed}, "
                f"time cap hit: {result.capped}; first failure: {result.first_failure}"
            )
        return result

    def lmtp_pair(
        self, connections: int, payloads: list[bytes], cap: float, repeat: int
    ) -> dict[str, Loaded]:
        """Bare and ours, interleaved, ``repeat`` times each."""
        runs: dict[str, list[LoadResult]] = {"bare": [], "ours": []}
        for run in range(repeat):
            for kind, results in runs.items():
                results.append(self.lmtp(kind, connections, payloads, cap, run))
        return {kind: Loaded(tuple(results)) for kind, results in runs.items()}


def drain_seconds(data_dir: Path, cap: float) -> float:
    """How long after the load the server still had acknowledged messages to process."""
    started = time.monotonic()
    with contextlib.closing(sqlite3.connect(data_dir / "tlsrpt.sqlite3", timeout=30)) as db:
        while time.monotonic() - started < cap:
            if not db.execute("SELECT count(*) FROM messages WHERE status='pending'").fetchone()[0]:
                break
            time.sleep(0.005)
    return time.monotonic() - started


def _mib_cell(result: Ingested, *, show_refusal: bool = False) -> str:
    text = table.mib(result.peak_kib)
    if show_refusal and result.rate is not None:
        text += " (refused)" if result.refused_all else " (accepted)"
    return text


def throughput_rows(size: str, results: dict[str, Ingested]) -> list[list[str]]:
    """Parsing alone is parsedmarc's work and carries the target; the full pipeline also
    archives durably (fsync), stores in SQLite and emits events, and is shown beside it."""
    ours, parse, peer, floor = (results[impl] for impl in IMPLS)
    passed = (
        None
        if parse.rate is None
        else (parse.all_ok and peer.rate is not None and parse.rate >= SPEEDUP_TARGET * peer.rate)
    )
    return [
        [
            f"{size}: parse reports/s ({parse.files} emails)",
            table.rate(parse.rate),
            table.rate(peer.rate),
            table.rate(floor.rate),
            "",
            f"{table.ratio(parse.rate, peer.rate)} "
            f"({table.ratio(parse.rate, floor.rate)} of floor)",
            f">= {SPEEDUP_TARGET:g}x parsedmarc",
            table.verdict(passed),
        ],
        [
            f"{size}: full pipeline reports/s (+archive, store, events)",
            table.rate(ours.rate),
            "",
            "",
            "",
            table.ratio(ours.rate, peer.rate),
            "",
            "ok" if ours.all_ok else "n/a",
        ],
        [
            f"{size}: peak RSS (pipeline)",
            *(_mib_cell(results[i]) for i in COMPARED),
            "",
            "",
            "",
            "",
        ],
    ]


def rss_row(label: str, results: dict[str, Ingested], limit_mib: int, *, bomb: bool) -> list[str]:
    ours = results["ours"]
    passed = (
        None
        if ours.peak_kib is None
        else (ours.peak_kib < limit_mib * 1024 and (ours.refused_all if bomb else ours.all_ok))
    )
    cells = [_mib_cell(results[impl], show_refusal=bomb) for impl in COMPARED]
    target = f"< {limit_mib} MiB" + (", refused" if bomb else "")
    return [label, *cells, "", "", target, table.verdict(passed)]


def lmtp_row(connections: int, pair: dict[str, Loaded], messages: int) -> list[str]:
    ours, bare = pair["ours"], pair["bare"]
    passed = (
        None
        if ours.rate is None
        else (not ours.failed and bare.rate is not None and ours.rate >= LMTP_TARGET * bare.rate)
    )
    return [
        f"LMTP end to end, {connections} conn: msgs/s ({messages} msgs)",
        table.rate(ours.rate),
        "",
        "",
        table.rate(bare.rate),
        table.ratio(ours.rate, bare.rate, percent=True),
        f">= {LMTP_TARGET:.0%} of bare",
        table.verdict(passed),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="tlsrpt_lmtp benchmark: one table")
    parser.add_argument("--messages", type=int, default=2000, help="LMTP messages per run")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--time-cap", type=float, default=30.0, help="seconds per LMTP run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per rate (median)")
    parser.add_argument("--seed", type=int, default=corpus.DEFAULT_SEED)
    args = parser.parse_args(argv)

    shutil.rmtree(OUT / "tmp", ignore_errors=True)
    shutil.rmtree(OUT / "logs", ignore_errors=True)
    print("corpus ...", file=sys.stderr, flush=True)
    corpus.generate(OUT / "corpus", args.seed)
    bench = Bench(OUT, ensure_peer_venv())
    emails = {size: sorted((OUT / "corpus" / size).glob("*.eml")) for size in corpus.SIZES}

    print("ingest ...", file=sys.stderr, flush=True)
    rows: list[list[str]] = []
    raw: dict[str, Any] = {}
    for size, files in emails.items():
        raw[size] = bench.ingest_all(files, size, args.repeat)
        rows += throughput_rows(size, raw[size])
    raw["one-large"] = bench.ingest_all(emails["large"][:1], "one-large", 1)
    label = "10,000-detail report: peak RSS (1 email)"
    rows.append(rss_row(label, raw["one-large"], LARGE_RSS_LIMIT_MIB, bomb=False))
    raw["bomb"] = bench.ingest_all([OUT / "corpus" / "bomb" / "bomb.eml"], "bomb", 1)
    label = "1 GiB gzip bomb: peak RSS (1 email)"
    rows.append(rss_row(label, raw["bomb"], BOMB_RSS_LIMIT_MIB, bomb=True))

    print("lmtp ...", file=sys.stderr, flush=True)
    payloads = [to_data(path.read_bytes()) for path in emails["small"][: args.messages]]
    for conns in args.connections:
        raw[f"lmtp-c{conns}"] = pair = bench.lmtp_pair(conns, payloads, args.time_cap, args.repeat)
        rows.append(lmtp_row(conns, pair, len(payloads)))

    print(
        f"\ntlsrpt_lmtp benchmark: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"parsedmarc {PEER_VERSION}, corpus seed {args.seed}; rates are medians of "
        f"{args.repeat} runs; peak RSS = max VmHWM of the measurement's own processes; "
        "ratio = ours / parsedmarc (reports/s) or ours / bare (LMTP)"
    )
    print(table.render(rows))
    for note in bench.notes:
        print(f"note: {note}")
    (OUT / "results.json").write_text(json.dumps(raw, default=asdict, indent=2))


if __name__ == "__main__":
    main()
