"""The typed events themselves (core/eventbase.py, core/events.py): the JSON object an event
becomes, its stable ids, and the encodability check, on values built here."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import orjson
import pytest

from tests.support.events import failure_event, policy_event
from tests.support.factories import detail, report_dict, sts_policy
from tlsrpt_lmtp.alerts.events import AlertRaised
from tlsrpt_lmtp.core.dkim import DkimResult, DkimVerdict
from tlsrpt_lmtp.core.eventbase import ABSENT, Event, event_types, values
from tlsrpt_lmtp.core.events import (
    EventIds,
    FailureReported,
    Invalid,
    ReportRef,
    check_encodable,
    invalid_event,
    report_events,
    stamp,
)
from tlsrpt_lmtp.core.model import MailMeta, Report
from tlsrpt_lmtp.core.report import parse_report

META = MailMeta(from_="r@reporter.example", subject="Report", message_id="<m@x>")


def _report(failures: int = 2) -> Report:
    made = [detail(count=1 + i, sending_ip=f"192.0.2.{i + 1}") for i in range(failures)]
    doc = report_dict(sts_policy("example.org", failure=failures, details=made), report_id="t")
    return parse_report(json.dumps(doc).encode())


def _rule(scope: tuple[object, ...], position: int, name: str) -> str:
    """docs/events.md's event_id: a hash of the scope, the position and the event name."""
    key = "\x1f".join(str(s) for s in scope) + f"\x1e{position}\x1e{name}"
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def test_the_json_object_starts_with_the_envelope_and_flattens_the_parts() -> None:
    event = dataclasses.replace(failure_event(), event_id="e" * 32)
    doc = event.to_dict("2026-11-30T08:00:00.000001Z")
    assert list(doc)[:4] == ["schema", "event", "event_id", "timestamp"]
    assert doc["event"] == "tlsrpt.failure" and doc["schema"] == 1
    assert list(doc)[4:] == [
        *ReportRef._fields,
        "policy_type",
        "policy_domain",
        "result_type",
        "sending_mta_ip",
        "receiving_mx_hostname",
        "receiving_mx_helo",
        "receiving_ip",
        "failed_session_count",
        "additional_information",
        "failure_reason_code",
    ]
    assert doc["failed_session_count"] == 3 and doc["receiving_mx_helo"] is None


def test_absent_fields_are_left_out_and_null_ones_written() -> None:
    plain = invalid_event("no report attachment found", META, archive_id="k", source="file")
    doc = plain.to_dict()
    assert "event_id" not in doc and "timestamp" not in doc
    assert not any(key.startswith("dkim_") for key in doc)
    assert doc["from"] == "r@reporter.example" and "from_" not in doc  # a keyword's field
    assert doc["report_id"] is None
    verdict = DkimVerdict(DkimResult.FAIL, None, False, "body hash mismatch")
    refused = invalid_event("DKIM fail", META, archive_id="k", source="file", dkim=verdict)
    doc = refused.to_dict()
    assert [k for k in doc if k.startswith("dkim_")] == [
        "dkim_result",
        "dkim_domain",
        "dkim_aligned",
        "dkim_reason",
    ]
    assert doc["dkim_domain"] is None and doc["dkim_result"] == "fail"


def test_events_are_frozen() -> None:
    event = policy_event()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.policy_domain = "evil.example"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")  # slots


def test_ids_follow_the_documented_rule_whether_stamped_or_given_while_built() -> None:
    report = _report()
    scope = ("k", *report.dedup_key)
    built = report_events(report, META, archive_id="k", source="lmtp", duplicate=False)
    stamped = stamp(built, *scope)
    given = report_events(
        report, META, archive_id="k", source="lmtp", duplicate=False, ids=EventIds(*scope)
    )
    expected = [_rule(scope, i, e.EVENT) for i, e in enumerate(built)]
    assert [e.event_id for e in stamped] == expected == [e.event_id for e in given]
    assert [e.to_dict() for e in stamped] == [e.to_dict() for e in given]
    assert all(e.event_id is ABSENT for e in built)  # stamp made copies


def test_stamp_keeps_an_id_and_counts_its_position() -> None:
    first = dataclasses.replace(policy_event(), event_id="kept")
    second = policy_event()
    out = stamp([first, second], "scope")
    assert out[0] is first
    assert out[1].event_id == _rule(("scope",), 1, "tlsrpt.policy")


def test_a_duplicate_gets_the_ids_of_its_report_event_only() -> None:
    report = _report()
    [event] = report_events(
        report, META, archive_id="k", source="lmtp", duplicate=True, ids=EventIds("k")
    )
    assert event.event_id == _rule(("k",), 0, "tlsrpt.report")


def test_check_encodable_finds_what_no_sink_could_write() -> None:
    check_encodable(
        [failure_event(), policy_event(), invalid_event("x", META, archive_id=None, source="f")]
    )
    with pytest.raises(TypeError):  # a lone surrogate in a part (the failure detail)
        check_encodable([failure_event(failure_reason_code="\ud800")])
    with pytest.raises(TypeError):  # in a field of the event
        check_encodable([invalid_event("\udfff", META, archive_id=None, source="f")])
    with pytest.raises(TypeError):  # in the report fields several events share
        bad = failure_event(report_id="\ud800")
        check_encodable([failure_event(), bad])
    with pytest.raises(TypeError):  # an integer no JSON reader keeps
        check_encodable([failure_event(failed_session_count=2**64)])


def test_values_hold_every_value_once_per_part() -> None:
    a, b = failure_event(), failure_event(result_type="dnssec-invalid")
    assert a.report is not b.report  # factories make one each: both are kept
    rows = values([a, b])
    flat = orjson.loads(orjson.dumps(rows))
    text = json.dumps(flat)
    assert "dnssec-invalid" in text and "certificate-expired" in text
    shared = FailureReported(report=a.report, policy=a.policy, detail=b.detail)
    assert len(values([a, shared])) == len(values([a])) + 2  # the event and its detail


def test_event_types_are_the_slotted_classes_with_a_name() -> None:
    found = event_types()
    assert FailureReported in found and Invalid in found and AlertRaised in found
    assert all("__slots__" in cls.__dict__ and cls.EVENT for cls in found)
    assert Event not in found and len({c.EVENT for c in found}) == len(found)
