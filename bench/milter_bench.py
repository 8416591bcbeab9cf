"""Milter and DKIM benchmark (not a test): prints one table to stdout, progress to stderr.

    sudo .venv/bin/python -m bench.milter_bench [--messages 300] [--connections 4] [--repeat 3]

1. Messages/s through a real Postfix (the test harness's throwaway instance on 127.0.0.1) that
   delivers by LMTP to ``tlsrpt-lmtp serve``: without a milter, with ``tlsrpt-lmtp milter`` in
   tap mode (every message is a report: the milter archives it with fsync before Postfix may
   queue it), and with the milter seeing mail for another address (accepted at DATA). "submit"
   is the SMTP clients' rate (``--connections`` sessions in parallel, one message per MAIL
   transaction); "end to end" runs until the LMTP server has logged every report. Each figure is
   the median of ``--repeat`` runs, the configurations taking turns; every run starts fresh.
2. DKIM verification per report (RSA-2048, dkimpy, key served by a loopback DNS server), with a
   warm key cache; and the pipeline's ingest with ``[dkim] policy`` "off" vs "verify".

Needs root and Postfix (as the end-to-end tests do), pymilter, and the netsim DNS server from
tests/. All traffic stays on 127.0.0.1; every count and wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.mta.harness import (
    LOOPBACK,
    POSTFIX_BIN,
    REPORT_RCPT,
    LmtpEndpoint,
    LmtpServer,
    PostfixInstance,
    wait_until,
)
from tests.support.dkim import key_pair, loopback_dns, report_mail, sign
from tests.support.lmtp_client import free_port
from tlsrpt_lmtp.ingest.dkim import DkimChecker, DkimConfig, build_checker
from tlsrpt_lmtp.ingest.pipeline import Pipeline

REPO = Path(__file__).resolve().parent.parent
OTHER_RCPT = f"postmaster@{REPORT_RCPT.partition('@')[2]}"
RUN_TIMEOUT = 120.0


def progress(text: str) -> None:
    print(f"milter_bench: {text}", file=sys.stderr, flush=True)


class BenchPostfix(PostfixInstance):
    def __init__(self, workdir: Path, lmtp: LmtpEndpoint, milter_port: int | None) -> None:
        super().__init__(workdir, lmtp)
        self.milter_port = milter_port

    def main_cf(self) -> dict[str, str]:
        extra = {}
        if self.milter_port is not None:
            extra = {
                "smtpd_milters": f"inet:{LOOPBACK}:{self.milter_port}",
                "milter_default_action": "tempfail",
                "milter_protocol": "6",
            }
        return {**super().main_cf(), **extra}


class MilterDaemon:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.events = workdir / "milter-events.jsonl"
        self.stderr = workdir / "milter.stderr"
        config = workdir / "milter.toml"
        config.write_text(f'[lmtp]\nrecipients = ["{REPORT_RCPT}"]\n[dkim]\npolicy = "off"\n')
        argv = [sys.executable, "-m", "tlsrpt_lmtp.ingest.milter", "--config", str(config)]
        argv += ["--listen", f"inet:{self.port}@{LOOPBACK}", "--data-dir", str(workdir / "data")]
        argv += ["--log-file", str(self.events)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=err, env=env)
        wait_until(
            lambda: b"milter on" in self.stderr.read_bytes(),
            what="the milter to listen",
            timeout=15,
            diagnostics=lambda: self.stderr.read_text(errors="replace"),
        )

    def reports(self) -> int:
        lines = self.events.read_text().splitlines()
        return sum(json.loads(line)["event"] == "tlsrpt.report" for line in lines if line)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while self.proc.poll() is None and time.monotonic() < deadline:
            # Wake libmilter's listener, which otherwise checks its stop flag every 5 s.
            with contextlib.suppress(OSError):
                socket.create_connection((LOOPBACK, self.port), timeout=1).close()
            time.sleep(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def submit(port: int, messages: Sequence[bytes], rcpt: str, connections: int) -> float:
    """Send every message (one MAIL transaction each) over ``connections`` parallel SMTP
    sessions; return the elapsed seconds."""
    errors: list[BaseException] = []

    def worker(chunk: Sequence[bytes]) -> None:
        try:
            with smtplib.SMTP(LOOPBACK, port, local_hostname="bench.test", timeout=60) as smtp:
                for raw in chunk:
                    smtp.sendmail("reporter@reporter.example", [rcpt], raw)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    chunks = [messages[i::connections] for i in range(connections)]
    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(RUN_TIMEOUT)
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"SMTP submission failed: {errors[0]!r}")
    return elapsed


def one_run(kind: str, messages: Sequence[bytes], connections: int) -> tuple[float, float]:
    """(submitted/s, end-to-end/s) for one fresh Postfix (+ milter) + LMTP server."""
    workdir = Path(tempfile.mkdtemp(prefix="tlsrpt-milter-bench-"))
    os.chmod(workdir, 0o755)
    server = LmtpServer(workdir, LmtpEndpoint.tcp(), recipients=(REPORT_RCPT, OTHER_RCPT))
    milter = MilterDaemon(workdir / "milter") if kind != "none" else None
    postfix = BenchPostfix(workdir, server.endpoint, milter.port if milter else None)
    try:
        server.start()
        postfix.start()
        rcpt = OTHER_RCPT if kind == "other" else REPORT_RCPT
        started = time.perf_counter()
        elapsed = submit(postfix.smtp_port, messages, rcpt, connections)
        wait_until(
            lambda: len(server.events("tlsrpt.report")) >= len(messages),
            what=f"{len(messages)} reports at the LMTP server",
            timeout=RUN_TIMEOUT,
            interval=0.05,
            diagnostics=postfix.diagnostics,
        )
        end_to_end = time.perf_counter() - started
        if milter is not None:
            expected = len(messages) if kind == "tap" else 0
            assert milter.reports() == expected, (milter.reports(), expected)
        return len(messages) / elapsed, len(messages) / end_to_end
    finally:
        postfix.stop()
        if milter is not None:
            milter.stop()
        server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def postfix_rows(count: int, connections: int, repeat: int) -> list[list[str]]:
    kinds = {
        "none": "Postfix → LMTP, no milter",
        "tap": "Postfix + milter (tap), report mail",
        "other": "Postfix + milter, mail to another address",
    }
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for r in range(repeat):
        for kind in kinds:
            messages = [
                report_mail(report_id=f"bench-{kind}-{r}-{i}", to=REPORT_RCPT) for i in range(count)
            ]
            sub, e2e = one_run(kind, messages, connections)
            progress(f"run {r + 1}/{repeat} {kind}: submit {sub:.1f}/s, end to end {e2e:.1f}/s")
            results[kind].append((sub, e2e))
    base_sub = statistics.median(s for s, _ in results["none"])
    base_e2e = statistics.median(e for _, e in results["none"])
    rows = []
    for kind, label in kinds.items():
        sub = statistics.median(s for s, _ in results[kind])
        e2e = statistics.median(e for _, e in results[kind])
        rows.append(
            [
                f"{label} ({count} msgs, {connections} conns)",
                f"{sub:,.1f} msg/s",
                f"{e2e:,.1f} msg/s",
                f"{100 * sub / base_sub:.0f}% / {100 * e2e / base_e2e:.0f}%",
            ]
        )
    return rows


def timed(call: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n * 1e6


def ingest_cost(messages: Sequence[bytes], checker: DkimChecker | None) -> float:
    """µs per ``Pipeline.ingest`` (archive with fsync, parse, store) over a fresh data dir."""
    with tempfile.TemporaryDirectory(prefix="tlsrpt-dkim-bench-") as tmp:
        pipeline = Pipeline.open(Path(tmp), lambda event: None, dkim=checker)
        raws = iter(messages)
        try:
            return timed(lambda: pipeline.ingest(next(raws), source="bench"), len(messages))
        finally:
            pipeline.close()


def dkim_rows(count: int) -> list[list[str]]:
    key = key_pair("bench")
    messages = [sign(report_mail(report_id=f"dkim-{i}"), key) for i in range(count)]
    with loopback_dns() as dns:
        dns.publish(key)
        checker = build_checker(DkimConfig(nameservers=(dns.nameserver,), timeout=2.0))
        assert checker is not None
        start = time.perf_counter()
        first = checker.verify(messages[0])  # cold: one DNS query
        cold = (time.perf_counter() - start) * 1e6
        assert first.signatures[0].result == "pass", first
        it = iter(messages)
        warm = timed(lambda: checker.verify(next(it)), count)
        assert all(checker.verify(m).signatures[0].result == "pass" for m in messages[:5])
        ingest = {
            "off": ingest_cost(messages, None),
            "verify": ingest_cost(messages, checker),
        }
    return [
        [
            f"DKIM verify, warm key cache, RSA-2048 ({count} reports)",
            f"{warm:,.0f} µs/report",
            "-",
            "-",
        ],
        ["DKIM verify, cold (incl. one loopback DNS query)", f"{cold:,.0f} µs/report", "-", "-"],
        [
            f"pipeline.ingest, [dkim] off / verify ({count} reports)",
            f"{ingest['off']:,.0f} / {ingest['verify']:,.0f} µs/report",
            "-",
            f"+{100 * (ingest['verify'] - ingest['off']) / ingest['off']:.0f}%",
        ],
    ]


def table(rows: list[list[str]]) -> str:
    header = ["measurement", "rate / cost", "end to end", "vs no milter (submit / e2e)"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join(
        [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.milter_bench", description=__doc__)
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-postfix", action="store_true", help="only the DKIM rows")
    args = p.parse_args(argv)
    count = max(1, min(args.messages, 5000))
    rows: list[list[str]] = []
    if not args.skip_postfix:
        if os.geteuid() != 0 or not POSTFIX_BIN.is_file():
            progress("Postfix rows skipped: they need root and Postfix")
        else:
            rows += postfix_rows(count, max(1, args.connections), max(1, args.repeat))
    rows += dkim_rows(count)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
