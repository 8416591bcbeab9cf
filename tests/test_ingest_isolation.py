"""Issue 8: no message stops ingest, no crash loops, events written at least once.

The pipeline-level tests use a real archive and store in a temporary directory; the ones
through ``serve`` and ``parse`` run the real commands as processes on loopback."""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.events import Recorder, plain
from tests.support.hostile import HOSTILE, surrogate_subject
from tests.support.lmtp import Server, children, statuses
from tests.support.lmtp_client import filled, small_filesystem, start_server, wait_for
from tests.support.mail import RCPT, report_json, report_mail
from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.ingest.delivery import Delivery, SinkError
from tlsrpt_lmtp.ingest.pipeline import Pipeline
from tlsrpt_lmtp.store.base import MAX_ATTEMPTS, Status

MAX_SAFE = 2**53 - 1
PARSE = (sys.executable, "-m", "tlsrpt_lmtp", "parse", "--dkim-policy", "off")


def all_events(path: Path) -> list[dict[str, object]]:
    """The complete lines written so far (the writer may be in the middle of one)."""
    text = path.read_text() if path.exists() else ""
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines()]


def report_ids(path: Path) -> list[object]:
    return [e["report_id"] for e in all_events(path) if e["event"] == "tlsrpt.report"]


# --- the pipeline ---------------------------------------------------------------------------


class Broken(Exception):
    pass


def test_a_message_whose_storing_raises_is_quarantined_and_the_rest_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder()
    pipeline = Pipeline.open(tmp_path, rec)
    original = pipeline.store.add_report

    def add_report(c: sqlite3.Connection, report: object, **kw: object) -> bool:
        if getattr(report, "report_id", "") == "bad":
            raise Broken("simulated bug")
        return original(c, report, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline.store, "add_report", add_report)
    keys = pipeline.archive_many([(report_json(rid=r), "lmtp") for r in ("ok1", "bad", "ok2")])
    results = {r.archive_id: r.valid for r in pipeline.process_pending()}
    assert [results[k] for k in keys] == [True, False, True]
    assert [pipeline.store.status(k) for k in keys] == [
        Status.REPORT,
        Status.INVALID,
        Status.REPORT,
    ]
    [invalid] = rec.named("tlsrpt.invalid")
    assert invalid["archive_id"] == keys[1]
    assert "simulated bug" in str(invalid["reason"])
    # nothing of the quarantined message was stored
    stored = pipeline.store.query("SELECT report_id FROM reports ORDER BY report_id")
    assert [r["report_id"] for r in stored] == ["ok1", "ok2"]


def test_a_message_interrupted_too_often_is_quarantined_as_poison(tmp_path: Path) -> None:
    rec = Recorder()
    pipeline = Pipeline.open(tmp_path, rec)
    [key] = pipeline.archive_many([(report_json(rid="p"), "lmtp")])
    for _ in range(MAX_ATTEMPTS):  # taken up, then the process "dies" each time
        [claimed] = pipeline.store.claim(10, 1 << 20)
        assert claimed.archive_id == key
    [result] = pipeline.process_pending()
    assert not result.valid
    assert pipeline.store.status(key) is Status.INVALID
    [invalid] = rec.named("tlsrpt.invalid")
    assert str(invalid["reason"]).startswith("poison:")
    assert invalid["source"] == "recovery"
    assert pipeline.store.get(key) == report_json(rid="p")  # kept, for reprocess


def test_a_message_taken_up_before_is_processed_alone(tmp_path: Path) -> None:
    pipeline = Pipeline.open(tmp_path, Recorder())
    keys = pipeline.archive_many([(report_json(rid=f"r{i}"), "lmtp") for i in range(5)])
    first = pipeline.store.claim(2, 1 << 20)  # "dies" with these two
    assert len(first) == 2 and {p.archive_id for p in first} <= set(keys)
    for _ in first:  # each suspect alone, then the rest together
        [suspect] = pipeline.store.claim(10, 1 << 20)
        assert suspect.interrupted
        pipeline.process_many([suspect])
    clean = pipeline.store.claim(10, 1 << 20)
    assert len(clean) == 3 and not any(p.interrupted for p in clean)


def test_claims_are_bounded_by_bytes(tmp_path: Path) -> None:
    pipeline = Pipeline.open(tmp_path, Recorder())
    pipeline.archive_many([(report_json(rid=f"r{i}"), "lmtp") for i in range(10)])
    size = len(report_json(rid="r0"))
    assert len(pipeline.store.claim(100, 3 * size)) == 3
    assert len(pipeline.store.claim(100, 1)) == 1  # always at least one


class FlakySink:
    """Fails with ENOSPC `failures` times, then records."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.events: list[dict[str, object]] = []

    def __call__(self, event: Event) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.events.append(plain(event))


def test_a_failing_sink_is_waited_for_and_nothing_is_dropped(tmp_path: Path) -> None:
    sink = FlakySink(failures=4)
    waits: list[float] = []
    delivery = Delivery(sink, retry=True, sleep=waits.append)
    pipeline = Pipeline.open(tmp_path, sink, delivery=delivery)
    result = pipeline.ingest(report_json(), source="lmtp")
    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert [e["event"] for e in sink.events[:3]] == [
        "tlsrpt.report",
        "tlsrpt.policy",
        "tlsrpt.failure",
    ]
    assert pipeline.store.status(result.archive_id) is Status.REPORT


def test_without_retry_a_sink_failure_leaves_the_message_pending_and_the_rerun_writes_it(
    tmp_path: Path,
) -> None:
    sink = FlakySink(failures=1)
    pipeline = Pipeline.open(tmp_path, sink)
    with pytest.raises(SinkError):
        pipeline.ingest(report_json(), source="file")
    [key] = [r["archive_id"] for r in pipeline.store.query("SELECT archive_id FROM messages")]
    assert pipeline.store.status(key) is Status.PENDING
    [result] = pipeline.process_pending()
    assert (result.reports, result.duplicates) == (1, 0)  # owed, not a duplicate
    report = [e for e in sink.events if e["event"] == "tlsrpt.report"]
    assert [(e["duplicate"], e["source"]) for e in report] == [(False, "recovery")]


def test_event_ids_are_stable_and_distinct(tmp_path: Path) -> None:
    first, second = Recorder(), Recorder()
    a = Pipeline.open(tmp_path / "a", first)
    b = Pipeline.open(tmp_path / "b", second)
    for p in (a, b):
        p.ingest(report_json(), source="lmtp")
        p.ingest(b"not a report", source="lmtp")
    ids = [e["event_id"] for e in first.events]
    assert ids == [e["event_id"] for e in second.events]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, str) and len(i) == 32 for i in ids)


# --- through the real commands --------------------------------------------------------------


def test_no_hostile_message_stops_the_server(tmp_path: Path) -> None:
    """Each hostile mail, then an honest report: the honest one always becomes events and
    the hostile one is finished (stored with warnings, or quarantined with a reason)."""
    server = Server(tmp_path)
    try:
        expected = []
        for i, (name, build) in enumerate(HOSTILE.items()):
            c = server.client()
            for raw in (build(), report_mail(rid=f"honest-{i}")):
                replies = c.deliver("r@example.net", [RCPT], raw)
                assert [code for code, _ in replies] == [250], name
            c.close()
            expected.append(f"honest-{i}")
        log = tmp_path / "events.jsonl"
        wait_for(lambda: set(expected) <= set(report_ids(log)), timeout=120)
        wait_for(lambda: "pending" not in statuses(tmp_path), timeout=60)
    finally:
        server.stop()
    with sqlite3.connect(tmp_path / "tlsrpt.sqlite3") as db:
        rows = db.execute("SELECT status, reason FROM messages").fetchall()
    assert len(rows) == 2 * len(HOSTILE)
    for status, reason in rows:
        assert status == "report" or (status == "invalid" and reason)
    for event in all_events(tmp_path / "events.jsonl"):
        for key, value in event.items():
            if isinstance(value, int) and not isinstance(value, bool):
                assert 0 <= value <= MAX_SAFE, (key, value)
    # no message made more than the documented number of events
    per_message: dict[object, int] = {}
    for event in all_events(tmp_path / "events.jsonl"):
        per_message[event["archive_id"]] = per_message.get(event["archive_id"], 0) + 1
    assert max(per_message.values()) <= 12_000


def test_parse_goes_on_after_a_hostile_message(tmp_path: Path) -> None:
    mails = tmp_path / "mails"
    mails.mkdir()
    (mails / "1-hostile.eml").write_bytes(surrogate_subject())
    (mails / "2-honest.eml").write_bytes(report_mail(rid="after"))
    out = subprocess.run(
        [*PARSE, "--data-dir", str(tmp_path / "data"), str(mails)],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert "after" in [e["report_id"] for e in events if e["event"] == "tlsrpt.report"]
    invalid = [e for e in events if e["event"] == "tlsrpt.invalid"]
    assert invalid and all(e["reason"] for e in invalid)


def test_stage2_that_died_is_restarted_without_any_delivery(tmp_path: Path) -> None:
    server = Server(tmp_path)
    try:
        [stage2] = children(server.proc.pid)
        os.kill(stage2, signal.SIGKILL)
        wait_for(lambda: children(server.proc.pid) not in ([], [stage2]), timeout=30)
        message = b"stage 2 process exited (-9); restarting it"
        wait_for(lambda: message in _peek(server.proc.stderr), timeout=10)
        c = server.client()  # and the new one does the work
        assert [r[0] for r in c.deliver("r@x", [RCPT], report_mail(rid="later"))] == [250]
        c.close()
        wait_for(lambda: "later" in report_ids(tmp_path / "events.jsonl"), timeout=30)
    finally:
        server.stop()


def many_failures_mail(rid: str, n: int = 200) -> bytes:
    details = [
        {
            "result-type": "certificate-expired",
            "sending-mta-ip": f"192.0.2.{i % 250}",
            "receiving-mx-hostname": f"mx{i}.example.org",
            "failed-session-count": 1,
        }
        for i in range(n)
    ]
    doc = json.loads(report_json(rid=rid))
    doc["policies"][0]["failure-details"] = details
    doc["policies"][0]["summary"]["total-failure-session-count"] = n
    return (
        b"From: reporter@example.net\r\nSubject: report\r\n"
        b"Content-Type: application/tlsrpt+json\r\n\r\n" + json.dumps(doc).encode() + b"\r\n"
    )


@pytest.mark.parametrize("kill", [False, True], ids=["disk-full", "disk-full-then-kill-9"])
def test_full_disk_under_the_event_file_drops_nothing(tmp_path: Path, kill: bool) -> None:
    """The event file's disk fills in the middle of a message's events: stage 2 waits (and
    says so); with `kill`, it is killed -9 there, between storing and emitting. Once space
    returns, every event is written, and those written twice carry the same event_id."""
    logs = tmp_path / "logs"
    with small_filesystem(logs, "256k"):
        proc, listen = start_server(
            tmp_path / "data", f"--log-file={logs / 'events.jsonl'}", f"--recipient={RCPT}"
        )
        server = Server.__new__(Server)
        server.data_dir, server.proc, server.listen = tmp_path / "data", proc, listen
        try:
            (logs / "events.jsonl").touch()
            with filled(logs):
                filler = logs / "filler"
                os.truncate(filler, filler.stat().st_size - 32768)  # room for some events
                c = server.client()
                assert [r[0] for r in c.deliver("r@x", [RCPT], many_failures_mail("full"))] == [250]
                c.close()
                assert proc.stderr is not None
                wait_for(lambda: b"cannot write events" in _peek(proc.stderr), timeout=30)
                assert statuses(server.data_dir) == ["pending"]
                before = all_events(logs / "events.jsonl")
                assert 0 < len(before) < 200, _peek(proc.stderr)  # stopped mid-message
                if kill:
                    [stage2] = children(proc.pid)
                    os.kill(stage2, signal.SIGKILL)
                    wait_for(lambda: children(proc.pid) not in ([], [stage2]), timeout=30)
            wait_for(lambda: statuses(server.data_dir) == ["report"], timeout=60)
            events = all_events(logs / "events.jsonl")
            stderr = _peek(proc.stderr)
        finally:
            server.stop()
    ids = [e["event_id"] for e in events]
    failures = {e["event_id"] for e in events if e["event"] == "tlsrpt.failure"}
    assert len(failures) == 200  # every failure detail, once or (after the kill) twice
    assert events[: len(before)] == before  # what was written stays, whole lines only
    if not kill:
        assert len(ids) == len(set(ids))  # nothing twice
        names = [e["event"] for e in events]
        assert (names.count("tlsrpt.report"), names.count("tlsrpt.policy")) == (1, 1)
        assert {e["source"] for e in events} == {"lmtp"}, stderr
    else:
        # written again from the start, with the same ids and content (but the source)
        again = [e for e in events[len(before) :] if e["event"] != "tlsrpt.alert"]
        assert [e["event_id"] for e in again[: len(before)]] == [e["event_id"] for e in before]
        assert {e["source"] for e in again} == {"recovery"}
        strip = [{k: v for k, v in e.items() if k not in ("source", "timestamp")} for e in again]
        assert strip[: len(before)] == [
            {k: v for k, v in e.items() if k not in ("source", "timestamp")} for e in before
        ]


_seen: dict[object, bytes] = {}


def _peek(stream: object) -> bytes:
    """What the server wrote to stderr so far (non-blocking)."""
    fd = stream.fileno()  # type: ignore[attr-defined]
    os.set_blocking(fd, False)
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        chunk = b""
    _seen[stream] = _seen.get(stream, b"") + chunk
    return _seen[stream]
