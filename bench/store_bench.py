"""Ingest rate and `summary` time: the SQLite store beside PostgreSQL, one node and three.

    .venv/bin/python -m bench.store_bench [--messages 2000] [--connections 8] [--time-cap 300]

Each run starts the ``serve`` nodes (their own processes, DKIM off) on a fresh store, sends
``--messages`` small report mails (distinct reports) over ``--connections`` LMTP sessions in
all, spread evenly over the nodes, and measures until every message is processed (nothing
pending): messages per second end to end. Then ``summary --format json --top 0`` reads the
store once (seconds, one process). PostgreSQL is a private server (tests/support/servers.py),
fsync on, on this machine's loopback; SQLite is one file. Bounded: a run stops at the time cap.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.lmtp_load import run_load, to_data
from tests.support.servers import free_port, postgres_instance
from tlsrpt_lmtp.store import open_store


def mail(i: int) -> bytes:
    doc = {
        "organization-name": f"Bench Org {i % 7}",
        "date-range": {
            "start-datetime": f"2026-05-{1 + i % 28:02d}T00:00:00Z",
            "end-datetime": f"2026-05-{1 + i % 28:02d}T23:59:59Z",
        },
        "contact-info": "tlsrpt@bench.example",
        "report-id": f"bench-{i}",
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.bench.example"],
                    "policy-domain": f"d{i % 50}.bench.example",
                    "mx-host": ["mx.bench.example"],
                },
                "summary": {"total-successful-session-count": 90, "total-failure-session-count": 1},
                "failure-details": [
                    {
                        "result-type": "certificate-expired",
                        "sending-mta-ip": f"192.0.2.{i % 250}",
                        "receiving-mx-hostname": "mx.bench.example",
                        "failed-session-count": 1,
                    }
                ],
            }
        ],
    }
    return (
        b"From: reporter@bench.example\r\nTo: tlsrpt@bench.example\r\n"
        b"Subject: Report Domain: bench.example Submitter: bench.example\r\n"
        b"Content-Type: application/tlsrpt+json\r\n\r\n" + json.dumps(doc).encode() + b"\r\n"
    )


def start(work: Path, n: int, database: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    data = work / f"node{n}"
    data.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tlsrpt_lmtp", "serve", "--data-dir", str(data),
            "--database", database, "--listen", f"127.0.0.1:{port}",
            "--log-file", str(data / "events.jsonl"), "--dkim-policy", "off",
        ],
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    if "LMTP on" not in proc.stderr.readline().decode():
        os.killpg(proc.pid, signal.SIGKILL)
        raise RuntimeError("serve did not start")
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    if proc.stderr is not None:
        proc.stderr.close()


def run(database: str, nodes: int, messages: int, connections: int, cap: float) -> list[str]:
    payloads = [to_data(mail(i)) for i in range(messages)]
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        started = [start(Path(tmp), n, database) for n in range(nodes)]
        store = open_store(database)
        try:
            t0 = time.monotonic()
            accepted: list[float] = []

            def load(port: int, part: list[bytes]) -> None:
                run_load("127.0.0.1", port, part, max(1, connections // nodes), cap)
                accepted.append(time.monotonic() - t0)

            loads = [
                threading.Thread(target=load, args=(port, payloads[n::nodes]))
                for n, (_, port) in enumerate(started)
            ]
            for t in loads:
                t.start()
            for t in loads:
                t.join(cap + 30)
            done = 0
            while time.monotonic() - t0 < cap:
                rows = store.query("SELECT COUNT(*) AS n FROM messages WHERE status <> 'pending'")
                done = int(rows[0]["n"])
                if done >= messages:
                    break
                time.sleep(0.1)
            ingest = time.monotonic() - t0
        finally:
            store.close()
            for proc, _ in started:
                stop(proc)
        t1 = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "tlsrpt_lmtp", "summary", "--data-dir", tmp,
             "--database", database, "--format", "json", "--top", "0"],
            check=True, capture_output=True, timeout=cap,
        )  # fmt: skip
        summary = time.monotonic() - t1
    backend = database.split(":", 1)[0]
    stage1 = messages / max(accepted, default=ingest)
    return [
        backend,
        str(nodes),
        f"{done:,}/{messages:,}",
        f"{stage1:,.0f}/s",
        f"{done / ingest:,.0f}/s",
        f"{summary:.2f} s",
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--connections", type=int, default=6)
    p.add_argument("--time-cap", type=float, default=300.0)
    args = p.parse_args(argv)
    rows = [["store", "nodes", "processed", "accepted (250)", "processed (end to end)", "summary"]]
    with tempfile.TemporaryDirectory(prefix="store-bench-sqlite-") as lite:
        rows.append(run(f"sqlite:{lite}/tlsrpt.sqlite3", 1, args.messages, args.connections,
                        args.time_cap))  # fmt: skip
    with postgres_instance(fsync="on") as server:
        for nodes in (1, 3):
            url = server.create_database()
            rows.append(run(url, nodes, args.messages, args.connections, args.time_cap))
            server.drop_database(url)
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
