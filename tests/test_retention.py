"""Retention (ingest/retention.py, store/prune.py, `tlsrpt-lmtp prune`): exactly the finished
raw messages received before the cut-off go (pending never, reports only when asked), in
bounded short transactions that leave the archive writable, and a dry run deletes nothing. On
both backends: SQLite (a file) and PostgreSQL (a private server, tests/support/servers.py)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.events import plain
from tests.support.factories import detail, report_dict, sts_policy, tlsrpt_email
from tlsrpt_lmtp.config import ConfigError, load, load_policy
from tlsrpt_lmtp.core.events import Event, iso
from tlsrpt_lmtp.core.retention import (
    Counts,
    Retention,
    RetentionError,
    parse_retention,
    prune_event,
)
from tlsrpt_lmtp.ingest.pipeline import Pipeline
from tlsrpt_lmtp.ingest.retention import Pruner, Scheduled
from tlsrpt_lmtp.store import DB_NAME, open_store
from tlsrpt_lmtp.store.base import ArchiveError, Store
from tlsrpt_lmtp.store.sqlite import SqliteStore

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=500)
RECENT = NOW - timedelta(days=10)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / DB_NAME}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@dataclass
class Filled:
    """A store filled through the real pipeline, at chosen arrival times."""

    target: str
    events: list[dict[str, Any]] = field(default_factory=list)  # as the event log has them
    when: datetime = NOW
    serial: int = 0

    def __post_init__(self) -> None:
        self.db: Store = open_store(self.target)
        self.pipeline = Pipeline(self.db, self.record, clock=lambda: self.when)

    def record(self, event: Event) -> None:
        self.events.append(plain(event))

    @property
    def sqlite(self) -> bool:
        return self.target.startswith("sqlite:")

    @property
    def path(self) -> Path:
        return Path(self.target.removeprefix("sqlite:")).parent

    def report(self, at: datetime, *, ended: datetime | None = None, details: int = 1) -> str:
        """A report mail received at ``at`` about the day that ended at ``ended``."""
        self.when = at
        self.serial += 1
        end = ended or at
        doc = report_dict(
            sts_policy(
                failure=details,
                details=[detail(count=1, sending_ip=f"192.0.2.{i % 250}") for i in range(details)],
            ),
            report_id=f"r{self.serial}",
            start=iso(end - timedelta(days=1) + timedelta(seconds=1)),
            end=iso(end),
        )
        raw = tlsrpt_email(gzip.compress(json.dumps(doc).encode()))
        result = self.pipeline.ingest(raw, source="file")
        assert result.reports == 1
        return result.archive_id

    def junk(self, at: datetime) -> str:
        """A message that ends in the quarantine."""
        self.when = at
        self.serial += 1
        result = self.pipeline.ingest(
            f"Subject: not a report {self.serial}\r\n\r\nhello\r\n".encode(), source="lmtp"
        )
        assert not result.valid
        return result.archive_id

    def pending(self, at: datetime) -> str:
        """Archived, never processed (stage 2 has not taken it up yet)."""
        self.when = at
        self.serial += 1
        [key] = self.pipeline.archive_many([(f"Subject: p{self.serial}\r\n\r\nx".encode(), "lmtp")])
        return key

    def ids(self, table: str, key: str = "archive_id") -> set[str]:
        return {r[key] for r in self.db.query(f"SELECT {key} FROM {table}")}

    def count(self, table: str) -> int:
        return int(self.db.query(f"SELECT count(*) AS n FROM {table}")[0]["n"])

    def dump(self, *tables: str) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for table in tables or ("messages", "reports", "policies", "failures"):
            found = self.db.query(f"SELECT * FROM {table} ORDER BY 1")
            rows += [
                (table, *(bytes(v) if isinstance(v, memoryview) else v for v in _values(r)))
                for r in found
            ]
        return rows


def _values(row: Any) -> list[Any]:
    """A row's values: sqlite3.Row iterates them, psycopg's dict rows their names."""
    return list(row.values()) if isinstance(row, dict) else list(row)


@pytest.fixture
def store(target: str) -> Any:
    s = Filled(target)
    yield s
    s.db.close()


@pytest.fixture
def lite(tmp_path: Path) -> Any:
    """SQLite only: what is about that engine (its transactions, its file)."""
    s = Filled(f"sqlite:{tmp_path / DB_NAME}")
    yield s
    s.db.close()


def _mixed(store: Filled) -> dict[str, set[str]]:
    """Old and recent messages of every status."""
    kinds: dict[str, set[str]] = {k: set() for k in ("old_done", "old_bad", "old_pending", "new")}
    for _ in range(5):
        kinds["old_done"].add(store.report(OLD))
    for _ in range(3):
        kinds["old_bad"].add(store.junk(OLD))
    for _ in range(2):
        kinds["old_pending"].add(store.pending(OLD))
    for _ in range(4):
        kinds["new"].add(store.report(RECENT))
    kinds["new"] |= {store.junk(RECENT), store.junk(RECENT), store.pending(RECENT)}
    return kinds


def _pruner(store: Filled, raw: str = "400d", reports: str = "", batch: int = 500) -> Pruner:
    return Pruner(store.db, Retention.parse(raw, reports), batch=batch, clock=lambda: NOW)


def test_prune_deletes_exactly_the_old_finished_messages(store: Filled) -> None:
    kinds = _mixed(store)
    sizes = {
        r["archive_id"]: r["n"]
        for r in store.db.query("SELECT archive_id, length(raw) AS n FROM messages")
    }
    reports_before = store.dump("reports", "policies", "failures")
    result = _pruner(store, batch=2).run()
    assert store.ids("messages") == kinds["old_pending"] | kinds["new"]
    assert result.counts == Counts(
        messages=5,
        quarantined=3,
        raw_bytes=sum(sizes[k] for k in kinds["old_done"] | kinds["old_bad"]),
        reports=0,
        rows=8,
    )
    assert result.pending_kept == 2 and result.complete and not result.dry_run
    assert result.batches == 4  # 8 rows, 2 per transaction
    # The normalised reports stay, those of the deleted messages included.
    assert store.count("reports") == 9
    assert store.ids("reports") >= kinds["old_done"]
    assert store.dump("reports", "policies", "failures") == reports_before
    # Pending mail is never deleted, however old: stage 2 still finishes it.
    finished = {r.archive_id for r in store.pipeline.process_pending()}
    assert kinds["old_pending"] <= finished


def test_dry_run_counts_what_a_run_deletes_and_deletes_nothing(store: Filled) -> None:
    _mixed(store)
    for _ in range(2):
        store.report(OLD, ended=NOW - timedelta(days=800), details=3)
    before = store.dump()
    dry = _pruner(store, reports="730d").run(dry_run=True)
    assert store.dump() == before
    assert dry.dry_run and dry.batches == 0
    real = _pruner(store, reports="730d", batch=3).run()
    assert dry.counts == real.counts
    assert dry.pending_kept == real.pending_kept == 2
    assert real.counts.reports == 2
    assert store.dump() != before


def test_batches_are_bounded_short_transactions(lite: Filled) -> None:
    store = lite
    assert isinstance(store.db, SqliteStore)
    for _ in range(10):
        store.junk(OLD)
    for _ in range(3):
        store.report(OLD, ended=NOW - timedelta(days=800), details=4)  # 1 + 1 + 4 rows each
    statements: list[str] = []
    store.db._db.set_trace_callback(statements.append)
    seen: list[Counts] = []
    result = _pruner(store, reports="730d", batch=3).run(on_batch=seen.append)
    store.db._db.set_trace_callback(None)
    # Messages: 3 + 3 + 3 + 3 + 1; reports (6 rows each, more than a batch): one at a time.
    assert [c.rows for c in seen] == [3, 3, 3, 3, 1, 6, 6, 6]
    assert [c.reports for c in seen] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert result.batches == len(seen) == 8
    assert store.count("reports") == store.count("policies") == store.count("failures") == 0
    # Each batch is its own transaction: never more than one batch of DELETEs between them
    # (the trace repeats a statement for each foreign-key cascade it sets off: counted once).
    per_transaction: list[set[str]] = []
    for sql in statements:
        if sql.startswith("BEGIN"):
            per_transaction.append(set())
        elif sql.startswith(("DELETE FROM messages", "DELETE FROM reports")):
            per_transaction[-1].add(sql)
    assert max(map(len, per_transaction)) == 3
    assert sum(map(len, per_transaction)) == 13 + 3  # 10 junk + 3 report mails, 3 reports


def test_reports_are_pruned_only_with_report_retention(store: Filled) -> None:
    old_report = store.report(RECENT, ended=NOW - timedelta(days=800), details=2)
    new_report = store.report(RECENT, details=2)
    assert _pruner(store, raw="400d").run().counts == Counts()
    assert store.ids("reports") == {old_report, new_report}
    result = _pruner(store, raw="off", reports="730d").run()
    assert result.counts == Counts(reports=1, rows=1 + 1 + 2)
    assert store.ids("reports") == {new_report}
    # Policies and failure details go with their report; the raw mail is not touched.
    assert store.count("policies") == 1 and store.count("failures") == 2
    assert store.ids("messages") == {old_report, new_report}


def test_the_archive_stays_writable_between_batches(lite: Filled) -> None:
    """Between two batches the prune holds no lock: a put from another connection (the LMTP
    server's process) that will not wait at all goes through."""
    store = lite
    for _ in range(12):
        store.junk(OLD)
    server = open_store(store.target)
    server.query("PRAGMA busy_timeout=0")
    put: list[str] = []

    def archive_one(_: Counts) -> None:
        put.extend(
            server.put([(f"Subject: during {len(put)}\r\n\r\nx".encode(), "lmtp")], iso(NOW))
        )

    try:
        result = _pruner(store, batch=4).run(on_batch=archive_one)
    finally:
        server.close()
    assert result.batches == 3 and len(put) == 3
    assert store.ids("messages") == set(put)


def test_a_concurrent_archive_put_succeeds_during_a_prune_command(store: Filled) -> None:
    """`tlsrpt-lmtp prune` in its own process, small batches, while this process archives
    messages as the LMTP server does: every put succeeds, all of them stay, the old go."""
    for _ in range(300):
        store.junk(OLD)
    stop = threading.Event()
    put: list[str] = []
    errors: list[Exception] = []
    started = threading.Event()

    def archiving() -> None:
        server = open_store(store.target)
        try:
            for n in range(5000):  # bounded; ends with the prune
                try:
                    put.extend(
                        server.put([(f"Subject: live {n}\r\n\r\nx".encode(), "lmtp")], iso(NOW))
                    )
                except ArchiveError as exc:
                    errors.append(exc)
                started.set()
                if stop.is_set():
                    break
        finally:
            server.close()

    thread = threading.Thread(target=archiving)
    thread.start()
    try:
        assert started.wait(30)
        done = _prune_command(store.target, "--older-than", "400d", "--batch", "5")
    finally:
        stop.set()
        thread.join(60)
    assert done.returncode == 0, done.stderr
    assert not errors
    assert "deleted 300 raw messages" in done.stderr
    assert store.ids("messages") == set(put)
    assert put


def _prune_command(where: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`tlsrpt-lmtp prune` on a data directory (a Path) or a store (sqlite:… / postgresql://…)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    place = ["--data-dir", str(where)] if isinstance(where, Path) else ["--database", where]
    return subprocess.run(
        [sys.executable, "-m", "tlsrpt_lmtp", "prune", *place, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_prune_command_dry_run_then_real_run(store: Filled, tmp_path: Path) -> None:
    kinds = _mixed(store)
    before = store.dump()
    log = tmp_path / "prune.jsonl"
    dry = _prune_command(store.target, "--older-than", "400d", "--dry-run", "--log-file", str(log))
    assert dry.returncode == 0, dry.stderr
    assert "would delete 8 raw messages" in dry.stderr and "kept 2 pending" in dry.stderr
    assert store.dump() == before
    real = _prune_command(store.target, "--older-than", "400d", "--log-file", str(log))
    assert real.returncode == 0, real.stderr
    assert "deleted 8 raw messages" in real.stderr
    assert store.ids("messages") == kinds["old_pending"] | kinds["new"]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["event"], e["dry_run"], e["messages"], e["quarantined"]) for e in events] == [
        ("tlsrpt.prune", True, 5, 3),
        ("tlsrpt.prune", False, 5, 3),
    ]
    assert all(e["pending_kept"] == 2 and e["trigger"] == "command" for e in events)


def test_prune_command_refuses_without_a_retention(tmp_path: Path) -> None:
    open_store(tmp_path / DB_NAME).close()
    done = _prune_command(tmp_path)
    assert done.returncode == 2 and "nothing to prune" in done.stderr
    done = _prune_command(tmp_path, "--older-than", "soon")
    assert done.returncode == 2 and "expected a duration" in done.stderr
    done = _prune_command(tmp_path / "none", "--older-than", "1d")
    assert done.returncode == 2 and "no store" in done.stderr


def test_deleted_mail_does_not_live_on_in_the_file(lite: Filled) -> None:
    store = lite
    marker = b"personal-data-7f3a9c"
    store.when = OLD
    store.pipeline.ingest(b"Subject: x\r\n\r\n" + marker * 200, source="lmtp")
    store.db.query("PRAGMA wal_checkpoint(TRUNCATE)")
    assert marker in (store.path / DB_NAME).read_bytes()
    _pruner(store).run()
    store.db.query("PRAGMA wal_checkpoint(TRUNCATE)")
    assert marker not in (store.path / DB_NAME).read_bytes()


def test_scheduled_prune_runs_in_slices_then_waits(store: Filled) -> None:
    for _ in range(7):
        store.junk(OLD)
    clock = [0.0]
    scheduled = Scheduled(
        _pruner(store, batch=2), every=3600, slice_batches=2, monotonic=lambda: clock[0]
    )
    assert scheduled.tick() is None and scheduled.busy  # 4 of 7
    assert store.count("messages") == 3
    done = scheduled.tick()  # the rest, and the pass is over
    assert done is not None and not scheduled.busy
    event = plain(done)
    assert (event["event"], event["trigger"], event["quarantined"], event["batches"]) == (
        "tlsrpt.prune",
        "schedule",
        7,
        4,
    )
    store.junk(OLD)
    assert scheduled.tick() is None and store.count("messages") == 1  # not due yet
    clock[0] = 3600.0
    event = scheduled.tick()
    assert event is not None and event.quarantined == 1
    clock[0] = 7200.0
    assert scheduled.tick() is None  # nothing deleted: no event


def test_stage2_prunes_after_the_pending_mail(store: Filled, tmp_path: Path) -> None:
    from tlsrpt_lmtp.ingest.stage2 import follow

    kinds = _mixed(store)
    read, write = os.pipe()
    os.close(write)  # EOF: finish what is pending, then return
    try:
        follow(store.pipeline, read, prune=Scheduled(_pruner(store), slice_batches=100))
    finally:
        os.close(read)
    # The old pending messages were finished first (their events written), then, being
    # finished and old, deleted with the rest.
    written = {e["archive_id"] for e in store.events if e["event"] == "tlsrpt.invalid"}
    assert kinds["old_pending"] <= written
    assert store.ids("messages") == kinds["new"]
    statuses = {r["status"] for r in store.db.query("SELECT status FROM messages")}
    assert statuses == {"report", "invalid"}
    [event] = [e for e in store.events if e["event"] == "tlsrpt.prune"]
    assert (event["messages"], event["quarantined"], event["pending_kept"]) == (5, 3 + 2, 0)


@pytest.mark.parametrize(
    ("raw", "reports", "error"),
    [
        ("400x", "", "expected a duration"),
        ("0d", "", "longer than 0"),
        ("", "30d", "at least 90d"),
        ("1d", "-5d", "expected a duration"),
    ],
)
def test_bad_retention_settings_are_refused(raw: str, reports: str, error: str) -> None:
    with pytest.raises(RetentionError, match=error):
        Retention.parse(raw, reports)


def test_retention_settings_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[storage]\nretention = "400d"\nreport_retention = "104w"\n')
    config = load(path, {})
    kept = Retention.parse(config.retention, config.report_retention)
    assert kept == Retention(timedelta(days=400), timedelta(weeks=104))
    assert load_policy(path, {}).data_dir  # the policy daemon reads the same file
    assert not Retention.parse(load(None, {}).retention, "").enabled  # default: keep all
    assert parse_retention("off") is None and parse_retention("12h") == timedelta(hours=12)
    path.write_text('[storage]\nretention = "forever"\n')
    with pytest.raises(ConfigError, match="retention"):
        load(path, {})


def test_prune_events_match_their_schemas(store: Filled, tmp_path: Path) -> None:
    pytest.importorskip("jsonschema")
    from tests.support.schemas import BothFormats

    _mixed(store)
    store.report(OLD, ended=NOW - timedelta(days=800))
    sink = BothFormats(tmp_path)
    pruner = _pruner(store, reports="730d", batch=4)
    try:
        sink(prune_event(pruner.run(dry_run=True), trigger="command", now=NOW))
        sink(prune_event(pruner.run(), trigger="command", now=NOW))
        store.junk(OLD)
        scheduled = Scheduled(_pruner(store, raw="1d"))
        event = scheduled.tick()
        assert event is not None
        sink(event)
    finally:
        sink.close()
    docs = sink.check()
    assert [d["tlsrpt"]["quarantined"] for d in docs["ecs"]] == [3, 3, 2 + 1]
    assert [d["event"]["type"] for d in docs["ecs"]] == [["deletion"]] * 3
    assert docs["json"][1]["reports"] == 1 and docs["json"][2]["trigger"] == "schedule"
    assert "retention (dry run): 9 raw messages" in docs["ecs"][0]["message"]


def test_serve_prunes_by_its_config_and_keeps_accepting(lite: Filled, tmp_path: Path) -> None:
    """The real server with `[storage] retention`: its stage 2 prunes at start (one
    tlsrpt.prune event), and mail delivered meanwhile is archived and processed."""
    store = lite
    from tests.support.lmtp import events
    from tests.support.lmtp_client import LMTPClient, address_of, start_server, wait_for
    from tests.support.mail import RCPT, report_mail

    kinds = _mixed(store)
    store.db.close()
    config = tmp_path / "tlsrpt.toml"
    config.write_text('[storage]\nretention = "400d"\n')
    data = store.path
    proc, listen = start_server(data, f"--config={config}", f"--log-file={data / 'events.jsonl'}")
    try:
        client = LMTPClient(address_of(listen))
        client.cmd("LHLO test.example")
        assert [code for code, _ in client.deliver("r@example.net", [RCPT], report_mail())] == [250]
        client.close()
        wait_for(lambda: any(e["event"] == "tlsrpt.prune" for e in events(data)), timeout=30)
        wait_for(lambda: any(e["event"] == "tlsrpt.report" for e in events(data)), timeout=30)
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stderr:
            proc.stderr.close()
    [prune] = [e for e in events(data) if e["event"] == "tlsrpt.prune"]
    assert prune["trigger"] == "schedule"
    store.db = open_store(store.target)
    left = store.ids("messages")
    # Stage 2 finished the old pending messages first (their events are written), and being
    # old and finished they went with the rest.
    written = {e.get("archive_id") for e in events(data)}
    assert kinds["old_pending"] <= written
    [delivered] = left - kinds["new"]
    assert delivered in written
    assert prune["messages"] + prune["quarantined"] == len(kinds["old_done"] | kinds["old_bad"]) + 2


def test_nodes_pruning_one_postgresql_at_once_share_the_work(postgres_url: str) -> None:
    """Three nodes' prunes on one shared store at the same time: every old message is deleted
    once (the counts add up to it exactly), none waits for a row another holds, and the
    pending and recent mail stay."""
    store = Filled(postgres_url)
    try:
        old = {store.junk(OLD) for _ in range(120)}
        kept = {store.pending(OLD), store.junk(RECENT)}
        nodes = [open_store(postgres_url) for _ in range(3)]
        start = threading.Barrier(len(nodes))
        results: list[Counts] = []
        errors: list[BaseException] = []

        def node(db: Store) -> None:
            try:
                start.wait(30)
                pruner = Pruner(db, Retention.parse("400d", ""), batch=4, clock=lambda: NOW)
                results.append(pruner.run().counts)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=node, args=(db,)) for db in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for db in nodes:
            db.close()
        assert not errors
        assert sum(c.quarantined for c in results) == len(old) and len(results) == 3
        assert store.ids("messages") == kept
    finally:
        store.db.close()
