"""The ingest pipeline with a real archive and store in a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.events import Recorder
from tests.support.mail import report_json
from tlsrpt_lmtp.ingest.pipeline import Pipeline
from tlsrpt_lmtp.store.base import ArchiveError, Status

COMMON = {"schema", "event", "report_id", "organization_name", "date_range_start"}


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def pipeline(tmp_path: Path, rec: Recorder) -> Pipeline:
    p = Pipeline.open(tmp_path, rec)
    yield p  # type: ignore[misc]
    p.close()


def test_report_is_archived_stored_and_emitted(pipeline: Pipeline, rec: Recorder) -> None:
    raw = report_json()
    result = pipeline.ingest(raw, source="test")
    assert result.valid and result.reports == 1 and result.duplicates == 0
    assert pipeline.store.get(result.archive_id) == raw
    assert pipeline.store.status(result.archive_id) is Status.REPORT
    [report] = rec.named("tlsrpt.report")
    assert report["archive_id"] == result.archive_id
    assert report["total_successful_session_count"] == 10
    assert report["total_failure_session_count"] == 3
    assert report["duplicate"] is False
    [policy] = rec.named("tlsrpt.policy")
    assert policy["policy_domain"] == "example.org" and policy["mx_host"] == ["mx.example.org"]
    [failure] = rec.named("tlsrpt.failure")
    assert failure["result_type"] == "certificate-expired"
    assert failure["sending_mta_ip"] == "192.0.2.1"
    rows = pipeline.store.query("SELECT result_type, failed_session_count FROM failures")
    assert [tuple(r) for r in rows] == [("certificate-expired", 3)]


def test_duplicate_is_logged_once_without_policy_events(pipeline: Pipeline, rec: Recorder) -> None:
    pipeline.ingest(report_json(), source="test")
    rec.events.clear()
    # Same report, different bytes (e.g. re-sent with other whitespace): still a duplicate.
    again = pipeline.ingest(report_json() + b"\n", source="test")
    assert again.duplicates == 1
    assert [e["event"] for e in rec.events] == ["tlsrpt.report"]
    assert rec.events[0]["duplicate"] is True
    assert len(pipeline.store.query("SELECT * FROM reports")) == 1


def test_dedup_key_is_wider_than_report_id(pipeline: Pipeline, rec: Recorder) -> None:
    """QUIRKS §7: Google reuses an id pattern; another org or day is another report."""
    pipeline.ingest(report_json(rid="same"), source="t")
    pipeline.ingest(report_json(rid="same", org="Other Org"), source="t")
    pipeline.ingest(report_json(rid="same", day="2026-11-21"), source="t")
    assert [e["duplicate"] for e in rec.named("tlsrpt.report")] == [False, False, False]
    assert len(pipeline.store.query("SELECT * FROM reports")) == 3


def test_message_without_report_is_quarantined_and_logged(
    pipeline: Pipeline, rec: Recorder
) -> None:
    raw = b"From: someone@example.com\r\nSubject: hello\r\nMessage-ID: <x@y>\r\n\r\njust text\r\n"
    result = pipeline.ingest(raw, source="test")
    assert not result.valid
    assert pipeline.store.status(result.archive_id) is Status.INVALID
    [invalid] = rec.named("tlsrpt.invalid")
    assert invalid["reason"] == "no report attachment found"
    assert invalid["from"] == "someone@example.com" and invalid["subject"] == "hello"
    assert invalid["message_id"] == "<x@y>"
    assert invalid.keys() | {"schema"} >= COMMON
    [row] = pipeline.store.query("SELECT status, reason FROM messages")
    assert tuple(row) == ("invalid", "no report attachment found")


def test_reprocess_takes_a_message_out_of_quarantine(pipeline: Pipeline, rec: Recorder) -> None:
    result = pipeline.ingest(b"{not json", source="test")
    assert pipeline.store.status(result.archive_id) is Status.INVALID
    # Simulate a fixed parser by re-running different bytes under the same key.
    pipeline.process(report_json(), result.archive_id, source="reprocess")
    assert pipeline.store.status(result.archive_id) is Status.REPORT


def test_archive_failure_raises_and_emits_nothing(tmp_path: Path, rec: Recorder) -> None:
    pipeline = Pipeline.open(tmp_path, rec)
    pipeline.store.query("PRAGMA query_only=ON")  # every write now fails, like a full disk
    with pytest.raises(ArchiveError):
        pipeline.ingest(report_json(), source="test")
    assert rec.events == []
    pipeline.close()


def test_interrupted_processing_is_finished_at_next_start(tmp_path: Path, rec: Recorder) -> None:
    pipeline = Pipeline.open(tmp_path, rec)
    [key] = pipeline.archive_many([(report_json(), "lmtp")])  # crash before stage 2
    pipeline.close()
    again = Pipeline.open(tmp_path, rec)
    [result] = again.process_pending()
    assert (result.archive_id, result.reports) == (key, 1)
    assert again.store.status(key) is Status.REPORT
    assert [e["source"] for e in rec.named("tlsrpt.report")] == ["recovery"]
    again.close()


def test_a_batch_is_archived_in_one_commit(pipeline: Pipeline) -> None:
    keys = pipeline.archive_many([(report_json(rid=str(i)), "lmtp") for i in range(5)])
    assert len(set(keys)) == 5
    assert all(pipeline.store.status(k) is Status.PENDING for k in keys)


def test_same_bytes_archive_once(pipeline: Pipeline) -> None:
    a = pipeline.ingest(report_json(), source="t").archive_id
    b = pipeline.ingest(report_json(), source="t").archive_id
    assert a == b
    assert len(list(pipeline.store.scan(Status.REPORT))) == 1


def test_database_is_not_world_readable(pipeline: Pipeline) -> None:
    pipeline.ingest(report_json(), source="t")
    assert os.stat(pipeline.store.path).st_mode & 0o007 == 0
