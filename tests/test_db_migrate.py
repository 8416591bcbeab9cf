"""`tlsrpt-lmtp db migrate` (store/transfer.py): a SQLite store filled from the real samples
copied into a private PostgreSQL gives the same `summary --format json`; everything is copied
(pending, quarantine, reports with policies and failures, alert state); a second run copies
nothing; a run killed with -9 mid-way and run again completes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.views_fill import generate
from tests.support.views import sample_files
from tlsrpt_lmtp.cli import _parser
from tlsrpt_lmtp.core.model import MailMeta
from tlsrpt_lmtp.ingest.pipeline import Pipeline
from tlsrpt_lmtp.store import Store, open_store
from tlsrpt_lmtp.store.migrate_cli import Bar, _safe
from tlsrpt_lmtp.store.transfer import _by_bytes
from tlsrpt_lmtp.views import cli as views_cli

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _fill(target: str, *, junk: int = 5, generated: int = 60) -> None:
    """The real samples through the pipeline, generated reports, quarantined and pending
    mail, alert state."""
    files = sample_files()
    if not files:
        pytest.skip("no real samples under ../shared/samples/real")
    pipeline = Pipeline(open_store(target), lambda _: None)
    store = pipeline.store
    try:
        for f in files:
            pipeline.ingest(f.read_bytes(), source="file")
        for i in range(junk):
            pipeline.ingest(f"Subject: junk {i}\r\n\r\nnot a report\r\n".encode(), source="lmtp")
        store.put([(b"Subject: still pending\r\n\r\nx", "lmtp")], "2026-05-31T00:00:00Z")
        with store.transaction(durable=False) as c:
            for n, report in enumerate(generate(generated, domains=8, orgs=3, days=20, seed=5)):
                store.add_report(c, report, meta=MailMeta(), archive_id=f"{n:064x}", received_at="")
        with store.alert_transaction() as c:
            c.execute(
                "INSERT INTO alert_state VALUES (?,?,?,?,?,?,?)",
                (
                    "example.com",
                    "certificate-expired",
                    "critical",
                    "new",
                    "2026-05-30T00:00:00Z",
                    2,
                    1,
                ),
            )
            c.execute(
                "INSERT INTO alert_budget VALUES (?,?,?,?)", ("other", "2026-05-30T00:00:00Z", 3, 0)
            )
    finally:
        pipeline.close()


def _migrate(source: str, dest: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tlsrpt_lmtp",
            "db",
            "migrate",
            "--from",
            source,
            "--to",
            dest,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def _summary(target: str) -> str:
    args = _parser().parse_args(["summary", "--format", "json", "--top", "0", "--database", target])
    out = io.StringIO()
    with redirect_stdout(out):
        assert views_cli.run(args, now=NOW) == 0
    return out.getvalue()


def _content(target: str) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every table's rows without the ids the destination gives anew (children by their
    report's key), as multisets."""
    store: Store = open_store(target)
    key = "r.organization_name, r.report_id, r.date_range_start, r.date_range_end"
    queries = {
        "messages": "SELECT archive_id, received_at, source, status, reason, from_addr, subject,"
        " message_id, attempts, raw FROM messages",
        "reports": "SELECT organization_name, report_id, date_range_start, date_range_end,"
        " contact_info, report_domain, submitter, archive_id, received_at, warnings,"
        " total_successful_session_count, total_failure_session_count FROM reports",
        "policies": f"SELECT {key}, p.policy_type, p.policy_domain, p.policy_string, p.mx_host,"
        " p.total_successful_session_count, p.total_failure_session_count"
        " FROM policies p JOIN reports r ON r.id = p.report",
        "failures": f"SELECT {key}, p.policy_domain, f.result_type, f.sending_mta_ip,"
        " f.receiving_mx_hostname, f.receiving_mx_helo, f.receiving_ip,"
        " f.failed_session_count, f.additional_information, f.failure_reason_code"
        " FROM failures f JOIN policies p ON p.id = f.policy JOIN reports r ON r.id = p.report",
        "alert_state": "SELECT * FROM alert_state",
        "alert_budget": "SELECT * FROM alert_budget",
    }
    try:
        return {
            table: Counter(
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in _values(row))
                for row in store.query(sql)
            )
            for table, sql in queries.items()
        }
    finally:
        store.close()


def _values(row: Any) -> list[Any]:
    return list(row.values()) if isinstance(row, dict) else list(row)


def test_migrate_copies_everything_and_the_summary_is_the_same(
    tmp_path: Path, postgres_url: str
) -> None:
    lite = f"sqlite:{tmp_path / 'tlsrpt.sqlite3'}"
    _fill(lite)
    done = _migrate(lite, postgres_url)
    assert done.returncode == 0, done.stderr
    assert "messages     [" in done.stderr and "100%" in done.stderr  # the progress bar
    source, copy = _content(lite), _content(postgres_url)
    for table in source:
        assert source[table] == copy[table], table
    statuses = Counter(row[3] for row in copy["messages"].elements())
    assert statuses["pending"] == 1 and statuses["invalid"] >= 5 and statuses["report"] > 10
    assert sum(copy["failures"].values()) > 0 and sum(copy["alert_state"].values()) == 1
    # Done means: the same summary on both backends.
    on_sqlite = _summary(lite)
    assert '"reports"' in on_sqlite and on_sqlite == _summary(postgres_url)
    # Idempotent: a second run copies nothing, by the unique keys.
    again = _migrate(lite, postgres_url, "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "messages: 0 copied" in again.stderr and "reports: 0 copied" in again.stderr
    assert "alert_state: 0 copied" in again.stderr
    assert _content(postgres_url) == copy
    # Any pair of stores: back from PostgreSQL into a new SQLite file, the same again.
    back = f"sqlite:{tmp_path / 'back.sqlite3'}"
    done = _migrate(postgres_url, back, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert _content(back) == source and _summary(back) == on_sqlite


def test_a_migration_killed_mid_way_completes_when_run_again(
    tmp_path: Path, postgres_url: str
) -> None:
    lite = f"sqlite:{tmp_path / 'tlsrpt.sqlite3'}"
    _fill(lite, junk=300, generated=200)
    total = sum(_content(lite)["messages"].values())
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tlsrpt_lmtp",
            "db",
            "migrate",
            "--from",
            lite,
            "--to",
            postgres_url,
            "--batch",
            "1",
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    dest = open_store(postgres_url)  # the schema is there once the child has opened it too
    try:
        copied = 0
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            copied = int(dest.query("SELECT count(*) AS n FROM messages")[0]["n"])
            if copied >= 20:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        assert proc.wait(60) == -signal.SIGKILL, "the migration ended before it was killed"
        partial = int(dest.query("SELECT count(*) AS n FROM messages")[0]["n"])
        assert 20 <= partial < total
        assert int(dest.query("SELECT count(*) AS n FROM reports")[0]["n"]) == 0
    finally:
        dest.close()
    done = _migrate(lite, postgres_url, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert f"messages: {total - partial} copied, {partial} already there" in done.stderr
    assert _content(lite) == _content(postgres_url)


def test_the_progress_bar() -> None:
    line = Bar.line("messages", 25, 100)
    assert line.startswith("messages") and "[" + "#" * 7 + "." * 23 + "]" in line
    assert line.endswith("25/100  25%")
    assert Bar.line("alert_state", 0, 0).endswith("0/0 100%")
    out = io.StringIO()
    bar = Bar(out, live=False)  # not a terminal: one line per tenth
    for done in range(0, 1001):
        bar("messages", done, 1000)
    bar("reports", 3, 3)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 + 1 and lines[-1].startswith("reports") and "\r" not in out.getvalue()
    live = io.StringIO()
    bar = Bar(live, live=True)
    bar("messages", 1, 2)
    bar("messages", 2, 2)
    bar.close()
    bar.close()  # once
    assert live.getvalue().startswith("\rmessages") and live.getvalue().endswith("100%\n")


def test_batches_are_bounded_in_bytes_and_urls_lose_their_password() -> None:
    sizes = [("a", 6), ("b", 6), ("c", 20), ("d", 1), ("e", 1)]
    assert _by_bytes(sizes, 12) == [["a", "b"], ["c"], ["d", "e"]]
    assert _by_bytes([], 12) == []
    assert _safe("postgresql://u:secret@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert _safe("postgresql://u@db/x") == "postgresql://u@db/x"
    assert _safe("sqlite:/var/lib/x") == "sqlite:/var/lib/x"


def test_an_unreachable_destination_is_a_clear_error(tmp_path: Path) -> None:
    from tests.support.servers import free_port

    lite = f"sqlite:{tmp_path / 'tlsrpt.sqlite3'}"
    open_store(lite).close()
    url = f"postgresql://u:hunter2@127.0.0.1:{free_port()}/x?connect_timeout=2"
    done = _migrate(lite, url)
    assert done.returncode == 2
    assert "cannot open --to postgresql://u:***@127.0.0.1" in done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr
    same = _migrate(lite, lite)
    assert same.returncode == 2 and "the same store" in same.stderr
