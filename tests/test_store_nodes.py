"""Three `serve` nodes on one PostgreSQL store (issue 12): an LMTP client spreads 300 reports
across them, 30 of them sent again to another node in a second message; one node is killed
with -9 half-way (the MTA then delivers to the others, as to another MX). Every report is
stored once and emitted once (the same event_id each time it is written: a node killed after
writing a message's events and before marking it finished leaves it to another node, which
writes the same events again, at least once), the copies are flagged as duplicates, alert
dedup is shared, and nothing is left pending."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.lmtp_client import NO_DKIM, LMTPClient, address_of, free_port
from tests.support.mail import RCPT, report_mail
from tests.support.servers import PostgresServer
from tlsrpt_lmtp.store import open_store

REPORTS = 300
COPIES = range(0, REPORTS, 10)  # these reports also go, in another message, to another node
KILL_AFTER = 150  # deliveries before node 0 stalls, then is killed
ORPHANS = 10  # messages node 0 accepts while stalled: only the other nodes can process them
DEADLINE = 240.0  # seconds for the whole run, deliveries and draining


class Node:
    def __init__(self, base: Path, n: int, url: str) -> None:
        self.dir = base / f"node{n}"
        self.dir.mkdir()
        self.listen = f"127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "tlsrpt_lmtp", "serve",
                "--data-dir", str(self.dir), "--database", url, "--listen", self.listen,
                "--log-file", str(self.dir / "events.jsonl"), f"--recipient={RCPT}", *NO_DKIM,
            ],
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: kill -9 takes stage 2 along
        )  # fmt: skip
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline().decode()
        if "LMTP on" not in line:
            self.kill()
            raise AssertionError(f"node {n} did not start: {line}")

    def deliver(self, raw: bytes) -> bool:
        return self.replies(raw) == [250]

    def replies(self, raw: bytes) -> list[int]:
        """The DATA reply codes ([] when the node cannot be reached)."""
        try:
            c = LMTPClient(address_of(self.listen), timeout=30)
        except OSError:
            return []
        try:
            c.cmd("LHLO client.example")
            return [code for code, _ in c.deliver("reporter@example.net", [RCPT], raw)]
        except (OSError, ConnectionError):
            return []
        finally:
            c.sock.close()

    def stage2_pid(self) -> int:
        """The stage 2 process ``serve`` started (its only child)."""
        pid = self.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def events(self) -> list[dict[str, object]]:
        path = self.dir / "events.jsonl"
        if not path.exists():
            return []
        lines = path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture
def nodes(tmp_path: Path, postgres_url: str) -> Iterator[list[Node]]:
    started: list[Node] = []
    try:
        for n in range(3):
            started.append(Node(tmp_path, n, postgres_url))
        yield started
    finally:
        for node in started:
            node.stop()


def message(i: int, copy: int) -> bytes:
    """Report r<i> in a mail of its own (a copy is another message: another archive id)."""
    return f"Message-ID: <r{i}.{copy}@reporter.example>\r\n".encode() + report_mail(f"r{i}")


def deliver(nodes: list[Node], raw: bytes, first: int, deadline: float) -> None:
    """Like an MTA: the first node, else the next one, until one accepts (bounded)."""
    while time.monotonic() < deadline:
        for k in range(len(nodes)):
            if nodes[(first + k) % len(nodes)].deliver(raw):
                return
        time.sleep(0.2)
    raise AssertionError("no node accepted the message in time")


def test_three_nodes_share_one_store_and_survive_a_kill(
    nodes: list[Node], postgres_url: str
) -> None:
    deadline = time.monotonic() + DEADLINE
    orphans: list[str] = []
    grabbed: set[str] = set()
    copied: list[str] = []
    for i in range(REPORTS):
        if i == KILL_AFTER:
            # every stage 2 stalls; the mail node 0 accepts meanwhile is archived in the
            # shared store and nowhere else
            for node in nodes:
                os.kill(node.stage2_pid(), signal.SIGSTOP)
        if KILL_AFTER <= i < KILL_AFTER + ORPHANS:
            assert nodes[0].deliver(message(i, 0))
            orphans.append(f"r{i}")
            continue
        if i == KILL_AFTER + ORPHANS:
            # a fourth "node" claims some of it and dies (its session ends), node 0 dies
            thief = open_store(postgres_url)
            grabbed = {p.archive_id for p in thief.claim(5, 1 << 20)}
            thief.close()
            nodes[0].kill()
            for node in nodes[1:]:
                os.kill(node.stage2_pid(), signal.SIGCONT)
        deliver(nodes, message(i, 0), i % 3, deadline)
        if i in COPIES:
            deliver(nodes, message(i, 1), (i + 1) % 3, deadline)
            copied.append(f"r{i}")
    with psycopg.connect(postgres_url, autocommit=True) as db:
        while time.monotonic() < deadline:
            (pending,) = db.execute(
                "SELECT COUNT(*) FROM messages WHERE status = 'pending'"
            ).fetchone() or (1,)
            if pending == 0:
                break
            time.sleep(0.5)
        statuses = dict(
            db.execute("SELECT status, COUNT(*) FROM messages GROUP BY status").fetchall()
        )
        stored = db.execute("SELECT report_id, COUNT(*) FROM reports GROUP BY report_id").fetchall()
        retried = db.execute(
            "SELECT archive_id, attempts FROM messages WHERE archive_id = ANY(%s)",
            (sorted(grabbed),),
        ).fetchall()
    for node in nodes[1:]:
        node.stop()
    assert statuses == {"report": REPORTS + len(copied)}, statuses  # nothing pending
    assert sorted(r for r, _ in stored) == sorted(f"r{i}" for i in range(REPORTS))
    assert all(n == 1 for _, n in stored)

    fresh: dict[str, set[str]] = defaultdict(set)
    dups: dict[str, set[str]] = defaultdict(set)
    alerts: dict[tuple[object, ...], set[str]] = defaultdict(set)
    for node in nodes:
        for e in node.events():
            if e.get("event") == "tlsrpt.report":
                (dups if e["duplicate"] else fresh)[str(e["report_id"])].add(str(e["event_id"]))
            elif e.get("event") == "tlsrpt.alert":
                alerts[(e["rule"], e["domain"], e["result_type"])].add(str(e["event_id"]))
    assert sorted(fresh) == sorted(f"r{i}" for i in range(REPORTS))
    assert all(len(ids) == 1 for ids in fresh.values())  # emitted once (one event_id)
    assert sorted(dups) == sorted(copied) and len(copied) > 20  # the copies, flagged
    assert all(len(ids) == 1 for ids in dups.values())
    assert alerts and all(len(ids) == 1 for ids in alerts.values()), alerts  # shared dedup
    # the dead claimer's messages were taken again (their attempt counted), as recoveries
    assert len(grabbed) == 5 and sorted(a for a, _ in retried) == sorted(grabbed)
    assert all(attempts == 2 for _, attempts in retried)
    sources = {
        str(e["source"])
        for node in nodes
        for e in node.events()
        if e.get("event") == "tlsrpt.report" and e.get("archive_id") in grabbed
    }
    assert sources == {"recovery"}
    # what the dead node accepted was processed by the others
    by_dead = {str(e["report_id"]) for e in nodes[0].events() if e.get("event") == "tlsrpt.report"}
    assert len(orphans) == ORPHANS and not by_dead & set(orphans)


def test_a_node_answers_451_while_the_database_is_away_then_carries_on(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    node = Node(tmp_path, 0, url)
    admin = psycopg.connect(postgres_server.url, autocommit=True)
    try:
        assert node.deliver(message(1, 0))
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(f'ALTER DATABASE "{name}" RENAME TO "{name}_away"')
        assert node.replies(message(2, 0)) == [451]  # the MTA keeps it and retries
        admin.execute(f'ALTER DATABASE "{name}_away" RENAME TO "{name}"')
        assert node.deliver(message(2, 0))
        deadline = time.monotonic() + 90  # stage 2 waits the outage out with backoff
        with psycopg.connect(url, autocommit=True) as db:
            while time.monotonic() < deadline:
                rows = db.execute("SELECT status FROM messages ORDER BY status").fetchall()
                if rows == [("report",), ("report",)]:
                    break
                time.sleep(0.5)
            assert rows == [("report",), ("report",)]
    finally:
        node.stop()
        admin.close()
        postgres_server.drop_database(url)
