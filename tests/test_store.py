"""The store interface, the same tests on both backends: SQLite (a file) and PostgreSQL (a
private server started by tests/support/servers.py); then what only a shared store does."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from bench.views_fill import generate
from tests.support.mail import report_json
from tests.support.procs import free_port
from tests.support.servers import PostgresServer
from tests.support.views import sample_files
from tlsrpt_lmtp.alerts import absence
from tlsrpt_lmtp.alerts.rules import Alert
from tlsrpt_lmtp.alerts.state import HELD_REPEAT, AlertState
from tlsrpt_lmtp.core.model import MailMeta
from tlsrpt_lmtp.ingest.pipeline import Pipeline
from tlsrpt_lmtp.store import Store, open_reader, open_store, schema
from tlsrpt_lmtp.store.base import ArchiveError, Status, StoreUnavailable
from tlsrpt_lmtp.views import cli, jsonout
from tlsrpt_lmtp.views.period import Period, make_period

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'tlsrpt.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(target: str) -> Iterator[Store]:
    s = open_store(target)
    try:
        yield s
    finally:
        s.close()


def test_archive_put_is_idempotent_and_reads_back(store: Store) -> None:
    a, b = report_json(rid="a"), report_json(rid="b")
    keys = store.put([(a, "lmtp"), (b, "lmtp")], "2026-06-01T00:00:00Z")
    assert store.put([(a, "lmtp")], "2026-06-01T00:00:01Z") == keys[:1]
    assert store.get(keys[0]) == a and store.get("0" * 64) is None
    assert store.status(keys[1]) is Status.PENDING and store.pending_count() == 2
    assert [k for k, _ in store.scan(Status.PENDING)] == sorted(keys)


def test_claim_bounds_the_batch_and_takes_an_interrupted_message_alone(store: Store) -> None:
    raws = [report_json(rid=f"r{i}") for i in range(5)]
    for i, raw in enumerate(raws):
        store.put([(raw, "lmtp")], f"2026-06-01T00:00:0{i}Z")
    first = store.claim(2, 1 << 20)
    assert [p.raw for p in first] == raws[:2] and all(p.attempts == 0 for p in first)
    # never finished (the process "died"): taken again, one at a time, attempts counted
    again = store.claim(10, 1 << 20)
    assert [(p.raw, p.attempts, p.interrupted) for p in again] == [(raws[0], 1, True)]
    assert len(store.claim(10, len(raws[0]))) == 1  # max_bytes; at least one


def test_reports_are_deduplicated_and_a_pending_owner_is_not_a_duplicate(store: Store) -> None:
    [key] = store.put([(b"raw", "lmtp")], "2026-06-01T00:00:00Z")
    report = next(generate(1, seed=3))
    with store.transaction(durable=False) as c:
        assert store.add_report(c, report, meta=MailMeta(), archive_id=key, received_at="x")
        # the same message again while pending (its processing was interrupted): still owed
        assert store.add_report(c, report, meta=MailMeta(), archive_id=key, received_at="x")
        # another message with the same report: a duplicate
        assert not store.add_report(c, report, meta=MailMeta(), archive_id="b" * 64, received_at="")
        store.finish_message(c, key, status=Status.REPORT, reason=None, meta=MailMeta())
    with store.transaction(durable=False) as c:  # finished: now a duplicate for it too
        assert not store.add_report(c, report, meta=MailMeta(), archive_id=key, received_at="")
    assert store.query("SELECT COUNT(*) AS n FROM reports")[0]["n"] == 1
    policies = store.query("SELECT COUNT(*) AS n FROM policies")[0]["n"]
    assert policies == len(report.policies)
    assert store.status(key) is Status.REPORT


def test_a_savepoint_undoes_one_message_only(store: Store) -> None:
    one, two = list(generate(2, seed=4))
    with store.transaction(durable=False) as c:
        store.add_report(c, one, meta=MailMeta(), archive_id="a" * 64, received_at="")
        with pytest.raises(ZeroDivisionError), store.savepoint(c):
            store.add_report(c, two, meta=MailMeta(), archive_id="b" * 64, received_at="")
            _ = 1 / 0
    rows = store.query("SELECT report_id FROM reports")
    assert [r["report_id"] for r in rows] == [one.report_id]


def test_alert_state_holds_a_repeat_on_both_backends(store: Store) -> None:
    state = AlertState(store)
    alert = Alert("warning", "r", ("r",), "d.example", "x", "m", 1, (), "sts", "enforce")
    window = timedelta(hours=24)
    assert state.claim_within(alert, NOW, window, None) == 0
    assert state.claim_within(alert, NOW + timedelta(hours=1), window, None) == HELD_REPEAT
    assert state.claim(alert, NOW + timedelta(days=2), window) == 1  # one repeat suppressed
    state.close()  # not its store: still open
    assert store.query("SELECT sent FROM alert_state")[0]["sent"] == 2


def _fill(target: str) -> None:
    """The same reports into a store: generated ones, plus the real samples if present."""
    store = open_store(target)
    try:
        with store.transaction(durable=False) as c:
            for n, report in enumerate(generate(400, domains=25, orgs=6, days=60, seed=7)):
                key = f"{n:064x}"
                store.add_report(c, report, meta=MailMeta(), archive_id=key, received_at="")
    finally:
        store.close()
    files = sample_files()
    if files:
        pipeline = Pipeline(open_store(target), lambda _: None)
        try:
            for f in files:
                pipeline.ingest(f.read_bytes(), source="test")
        finally:
            pipeline.close()


def _views(target: str) -> list[str]:
    db = open_reader(target)
    try:
        out = []
        since = make_period(since=None, date_from="2026-05-01", date_to=None, now=NOW)
        for period, domain, top in ((Period(), None, 0), (since, None, 5), (Period(), None, 3)):
            out.append(jsonout.render(cli.summarise(db, period, domain, now=NOW, top=top)))
        s = cli.summarise(db, Period(), None, now=NOW, top=0)
        for d in s.domains[:4]:
            drill = cli.summarise(db, Period(), d.domain, now=NOW, top=2)
            out.append(jsonout.render(drill))
        config = absence.AbsenceConfig(active_days=2, window_days=14, silent_days=3)
        for when in (NOW, NOW - timedelta(days=20)):
            found = absence.find(db, when, config)
            out.append(json.dumps([f.__repr__() for f in found]))
        return out
    finally:
        db.close()


def test_views_give_identical_results_on_both_backends(tmp_path: Path, postgres_url: str) -> None:
    lite = f"sqlite:{tmp_path / 'tlsrpt.sqlite3'}"
    for t in (lite, postgres_url):
        _fill(t)
    on_sqlite, on_postgres = _views(lite), _views(postgres_url)
    assert json.loads(on_sqlite[0])["totals"]["reports"] >= 400
    assert json.loads(on_sqlite[-1]) and json.loads(on_sqlite[-2])  # findings, not nothing
    assert len(on_sqlite) == len(on_postgres)
    for a, b in zip(on_sqlite, on_postgres, strict=True):
        assert a == b


def test_an_old_sqlite_store_is_migrated_forward(tmp_path: Path) -> None:
    path = tmp_path / "tlsrpt.sqlite3"
    old = sqlite3.connect(path)  # schema 2: no attempts, no claim columns, no version table
    old.execute(
        "CREATE TABLE messages (archive_id TEXT PRIMARY KEY, received_at TEXT NOT NULL,"
        " source TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, from_addr TEXT,"
        " subject TEXT, message_id TEXT, raw BLOB NOT NULL)"
    )
    old.execute(
        "INSERT INTO messages VALUES ('k', 't', 'lmtp', 'pending', NULL, NULL, NULL, NULL, x'00')"
    )
    old.commit()
    old.close()
    store = open_store(path)
    try:
        assert schema.version(store._db, "sqlite") == schema.SCHEMA_VERSION  # type: ignore[attr-defined]
        [claimed] = store.claim(10, 1 << 20)
        assert (claimed.archive_id, claimed.attempts) == ("k", 0)
    finally:
        store.close()


def test_nodes_starting_at_once_create_the_schema_once(postgres_url: str) -> None:
    stores: list[Store] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(open_store(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(stores) == 6
    rows = stores[0].query("SELECT version FROM schema_version")
    assert [r["version"] for r in rows] == [schema.SCHEMA_VERSION]
    for s in stores:
        s.close()


def test_two_nodes_never_claim_the_same_message_and_a_dead_nodes_work_is_taken(
    postgres_url: str,
) -> None:
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        raws = [report_json(rid=f"r{i}") for i in range(6)]
        a.put([(raw, "lmtp") for raw in raws], "2026-06-01T00:00:00Z")
        got_a = {p.archive_id for p in a.claim(3, 1 << 20)}
        got_b = {p.archive_id for p in b.claim(10, 1 << 20)}
        assert len(got_a) == 3 and len(got_b) == 3 and not got_a & got_b
        c = open_store(postgres_url)
        try:
            assert c.claim(10, 1 << 20) == []  # a and b are alive: their claims hold
            a.close()  # node a dies: its session ends
            again = c.claim(10, 1 << 20)
            assert len(again) == 1 and again[0].archive_id in got_a and again[0].attempts == 1
        finally:
            c.close()
    finally:
        a.close()
        b.close()


def test_the_same_report_from_two_nodes_is_stored_once(postgres_url: str) -> None:
    reports = list(generate(30, domains=5, orgs=3, seed=11))
    outcomes: list[list[bool]] = []

    def node(order: list[int], key: str) -> None:
        store = open_store(postgres_url)
        try:
            with store.transaction(durable=False) as c:
                store.reserve(c, [reports[i].dedup_key for i in order])
                outcomes.append(
                    [
                        store.add_report(
                            c, reports[i], meta=MailMeta(), archive_id=key, received_at=""
                        )
                        for i in order
                    ]
                )
        finally:
            store.close()

    forward = list(range(30))
    threads = [
        threading.Thread(target=node, args=(forward, "a" * 64)),
        threading.Thread(target=node, args=(forward[::-1], "b" * 64)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(outcomes) == 2  # no deadlock, no error
    assert sum(outcomes[0]) + sum(outcomes[1]) == 30  # each report new on exactly one node
    check = open_store(postgres_url)
    try:
        assert check.query("SELECT COUNT(*) AS n FROM reports")[0]["n"] == 30
    finally:
        check.close()


def test_an_unreachable_database_refuses_the_message_until_it_is_back(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    store = open_store(url)
    admin = psycopg.connect(postgres_server.url, autocommit=True)
    try:
        # the database disappears (connections cut, renamed away)
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(f'ALTER DATABASE "{name}" RENAME TO "{name}_away"')
        with pytest.raises(ArchiveError):
            store.put([(b"one", "lmtp")], "2026-06-01T00:00:00Z")  # → LMTP 451
        with pytest.raises(StoreUnavailable):
            store.claim(10, 1 << 20)  # stage 2 waits and retries
        admin.execute(f'ALTER DATABASE "{name}_away" RENAME TO "{name}"')
        [key] = store.put([(b"one", "lmtp")], "2026-06-01T00:00:00Z")  # reconnected
        assert store.status(key) is Status.PENDING
    finally:
        store.close()
        admin.close()
        postgres_server.drop_database(url)
    with pytest.raises(StoreUnavailable):
        open_store(f"postgresql://nobody@127.0.0.1:{free_port()}/none")


def test_the_commands_take_database_and_agree_across_backends(
    tmp_path: Path, postgres_url: str
) -> None:
    """parse, summary and show with --database: the same summary from both backends."""
    files = sample_files()[:12]
    if not files:
        pytest.skip("no real samples in ../shared/samples/real")
    outputs = []
    for database in (f"sqlite:{tmp_path / 'cli.sqlite3'}", postgres_url):
        base = [sys.executable, "-m", "tlsrpt_lmtp"]
        common = ["--data-dir", str(tmp_path / "data"), "--database", database]
        parsed = subprocess.run(
            [*base, "parse", *map(str, files), *common, "--dkim-policy", "off"],
            capture_output=True,
            timeout=120,
            check=True,
        )
        events = [json.loads(line) for line in parsed.stdout.splitlines()]
        key = next(str(e["archive_id"]) for e in events if e["event"] == "tlsrpt.report")
        shown = subprocess.run(
            [*base, "show", key, *common], capture_output=True, timeout=60, check=True
        )
        assert shown.stdout in {f.read_bytes() for f in files}
        summary = subprocess.run(
            [*base, "summary", "--format", "json", "--top", "0", *common],
            capture_output=True,
            timeout=120,
            check=True,
        )
        doc = json.loads(summary.stdout)
        doc.pop("generated_at")
        outputs.append(doc)
    assert outputs[0]["totals"]["reports"] > 0
    assert outputs[0] == outputs[1]
    assert not (tmp_path / "data" / "tlsrpt.sqlite3").exists()  # --database, not data_dir


def test_a_node_starts_while_another_is_inside_a_transaction(postgres_url: str) -> None:
    """At the current schema version, opening the store runs no DDL: it does not wait for
    (nor time out behind) a transaction another node holds open on the tables."""
    first = open_store(postgres_url)
    try:
        with first.transaction(durable=False) as c:
            c.execute("UPDATE messages SET attempts = attempts WHERE archive_id = ?", ("x",))
            second = open_store(postgres_url)
            assert second.pending_count() == 0
            second.close()
    finally:
        first.close()


def test_a_postgresql_url_without_the_driver_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    import tlsrpt_lmtp.store
    from tlsrpt_lmtp.store.base import StoreUnavailable

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "tlsrpt_lmtp.store.postgres", raising=False)
    monkeypatch.delattr(tlsrpt_lmtp.store, "postgres", raising=False)
    for opening in (open_store, open_reader):
        with pytest.raises(StoreUnavailable, match=r"tlsrpt-lmtp\[postgres\]"):
            opening("postgresql://nobody@127.0.0.1:1/none")
