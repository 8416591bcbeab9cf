"""Sanitising at the boundary: every text and count a mail or report can carry is storable and
emittable (sanitize.py, and its use by the report parser and the MIME reader)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

import orjson
import pytest

from bench.hostile import hostile_messages, mail, report_doc
from tests.support.factories import detail, gzip_member, report_dict, sts_policy, to_json
from tlsrpt_lmtp.core.events import invalid_event, report_events
from tlsrpt_lmtp.core.mime import extract
from tlsrpt_lmtp.core.model import Extracted
from tlsrpt_lmtp.core.report import parse_report
from tlsrpt_lmtp.core.sanitize import MAX_COUNT, MAX_TEXT, clamp_count, clamped_sum, clean_text

# --------------------------------------------------------------------------------------------
# the pure functions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean", "codes"),
    [
        ("plain", "plain", ()),
        ("caf\u00e9 \u2603", "caf\u00e9 \u2603", ()),
        ("a\x00b", "a\ufffdb", ("text-replaced",)),
        ("\ud800", "\ufffd", ("text-replaced",)),
        ("x\udc00y\ud800", "x\ufffdy\ufffd", ("text-replaced",)),
        ("\ud83d\ude00", "\U0001f600", ("text-replaced",)),  # a pair as two code points
        ("tab\tand\nnewline", "tab\tand\nnewline", ()),  # JSON escapes these; kept
    ],
)
def test_clean_text(raw: str, clean: str, codes: tuple[str, ...]) -> None:
    assert clean_text(raw) == (clean, codes)
    clean.encode("utf-8")


def test_clean_text_truncates_long_text() -> None:
    text, codes = clean_text("x" * (MAX_TEXT + 5))
    assert (len(text), codes) == (MAX_TEXT, ("text-truncated",))
    assert clean_text("\x00" * 5000)[1] == ("text-truncated", "text-replaced")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, (0, False)), (MAX_COUNT, (MAX_COUNT, False)), (MAX_COUNT + 1, (MAX_COUNT, True))],
)
def test_clamp_count(value: int, expected: tuple[int, bool]) -> None:
    assert clamp_count(value) == expected
    assert clamp_count(-1) == (0, True)
    assert clamp_count(10**400) == (MAX_COUNT, True)


def test_clamped_sum_never_passes_the_maximum() -> None:
    assert clamped_sum([MAX_COUNT, MAX_COUNT, MAX_COUNT]) == MAX_COUNT
    assert clamped_sum([1, 2, 3]) == 6
    assert clamped_sum([]) == 0


def test_report_totals_are_clamped_even_for_a_report_built_by_hand() -> None:
    report = parse_report(to_json(report_dict(sts_policy(), sts_policy("b.example"))))
    big = tuple(
        dataclasses.replace(p, total_successful_session_count=MAX_COUNT) for p in report.policies
    )
    report = dataclasses.replace(report, policies=big)
    assert report.total_successful_session_count == MAX_COUNT


# --------------------------------------------------------------------------------------------
# counts in reports
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "count", "codes"),
    [
        (b"9223372036854775808", MAX_COUNT, {"count-clamped"}),
        (b"1e300", MAX_COUNT, {"count-clamped", "count-not-integer"}),
        (b'"' + b"9" * 5000 + b'"', MAX_COUNT, {"count-clamped", "count-not-integer"}),
        (b'"0000000000000000000000042"', 42, {"count-not-integer"}),
        (b"-" + b"9" * 40, 0, {"count-negative"}),
        (b"true", 1, {"count-not-integer"}),
        (b'"\xc2\xb2"', 0, {"count-invalid"}),  # superscript two: isdigit(), not int()-able
        (str(MAX_COUNT).encode(), MAX_COUNT, set()),
    ],
)
def test_summary_counts_are_clamped(raw: bytes, count: int, codes: set[str]) -> None:
    body = to_json(report_dict(sts_policy(success=123456)))
    body = body.replace(b"123456", raw)
    report = parse_report(body)
    assert report.policies[0].total_successful_session_count == count
    assert codes <= set(report.warnings)
    assert ("count-clamped" in report.warnings) == ("count-clamped" in codes)


def test_detail_count_is_clamped() -> None:
    body = to_json(report_dict(sts_policy(failure=5, details=[detail(count=777)])))
    report = parse_report(body.replace(b"777", b"1" * 30))
    assert report.policies[0].failure_details[0].failed_session_count == MAX_COUNT
    assert "count-clamped" in report.warnings


def test_sum_of_policies_and_of_details_stays_within_the_maximum() -> None:
    policies = [sts_policy(f"d{i}.example", success=MAX_COUNT) for i in range(3)]
    details = [detail(count=MAX_COUNT), detail(count=MAX_COUNT)]
    policies.append(sts_policy("e.example", failure=MAX_COUNT, details=details))
    report = parse_report(to_json(report_dict(*policies)))
    assert report.total_successful_session_count == MAX_COUNT
    assert report.total_failure_session_count == MAX_COUNT
    assert "failure-count-mismatch" not in report.warnings  # the clamped sum equals the total


def test_bad_date_years_are_refused_not_raised() -> None:
    from tlsrpt_lmtp.core.report import ReportError

    doc = report_dict(end="9999-12-31T23:59:59-05:00")
    with pytest.raises(ReportError, match="not an RFC 3339 date-time"):
        parse_report(to_json(doc))


# --------------------------------------------------------------------------------------------
# every value storable and emittable
# --------------------------------------------------------------------------------------------


def _values(obj: Any) -> list[Any]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [v for f in dataclasses.fields(obj) for v in _values(getattr(obj, f.name))]
    if isinstance(obj, tuple | list):
        return [v for item in obj for v in _values(item)]
    return [obj]


def assert_safe(ex: Extracted) -> None:
    """What stage 2 does with the values: encode, store in SQLite, dump events."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (v)")
    for value in _values(ex):
        if isinstance(value, str):
            value.encode("utf-8")
            assert "\x00" not in value
            assert len(value) <= MAX_TEXT
        if isinstance(value, int):
            assert 0 <= value <= MAX_COUNT
        db.execute("INSERT INTO t VALUES (?)", (value if not hasattr(value, "isoformat") else 0,))
    for report in ex.reports:
        assert 0 <= report.total_failure_session_count <= MAX_COUNT
        assert 0 <= report.total_successful_session_count <= MAX_COUNT
        for event in report_events(report, ex.meta, archive_id="a", source="test", duplicate=False):
            json.loads(orjson.dumps(event.to_dict()))
    for reason in ex.errors:
        orjson.dumps(invalid_event(reason, ex.meta, archive_id="a", source="test").to_dict())
        reason.encode("utf-8")


_CHEAP = [
    "valid-small",
    "subject-lone-surrogate",
    "json-lone-surrogate",
    "count-2^63",
    "count-1e300",
    "count-digit-string",
    "count-negative-bool",
    "count-sum-overflow",
    "encoded-words-50k",
]


@pytest.fixture(scope="module")
def hostile() -> dict[str, bytes]:
    return hostile_messages(only=_CHEAP)


@pytest.mark.parametrize("name", _CHEAP)
def test_hostile_message_gives_safe_values(hostile: dict[str, bytes], name: str) -> None:
    ex = extract(hostile[name])
    assert_safe(ex)
    assert len(ex.reports) == 1, ex.errors


def test_lone_surrogate_subject_is_replaced_and_flagged(hostile: dict[str, bytes]) -> None:
    ex = extract(hostile["subject-lone-surrogate"])
    assert ex.meta.subject == "\ufffd"
    assert "text-replaced" in ex.warnings
    assert "text-replaced" in ex.reports[0].warnings


def test_surrogate_and_nul_in_json_are_replaced_and_flagged(hostile: dict[str, bytes]) -> None:
    [report] = extract(hostile["json-lone-surrogate"]).reports
    assert report.organization_name == "Hostile \ufffd \ufffd Sender"
    assert "text-replaced" in report.warnings


def test_every_header_and_report_string_is_sanitised() -> None:
    bad = "\\ud800\\u0000"
    doc = report_doc()
    doc["report-id"] = "id-@"
    doc["contact-info"] = "c@"
    pol = doc["policies"][0]
    pol["policy"]["policy-string"] = ["version: STSv1@"]
    pol["policy"]["mx-host"] = ["mx@"]
    pol["policy"]["policy-domain"] = "d@.example"
    pol["failure-details"] = [
        {
            "result-type": "validation-failure@",
            "sending-mta-ip": "@",
            "receiving-mx-hostname": "@",
            "receiving-mx-helo": "@",
            "receiving-ip": "@",
            "failed-session-count": 1,
            "additional-information": "@",
            "failure-reason-code": "@",
        }
    ]
    body = json.dumps(doc).replace("@", bad).encode()
    raw = mail([gzip_member(body)], subject="=?utf-7?q?+2AA-?=")
    raw = raw.replace(b"hostile@hostile.example", b"\xed\xa0\x80@x\x00")  # raw 8-bit header
    ex = extract(raw)
    assert_safe(ex)
    [report] = ex.reports
    assert "\ufffd" in report.report_id
    assert report.policies[0].failure_details[0].failure_reason_code == "\ufffd\ufffd"


def test_attachment_file_name_in_an_error_is_sanitised() -> None:
    raw = mail([b"not a report"], filename="x\x00.json.gz", content_type="application/gzip")
    ex = extract(raw)
    assert ex.reports == ()
    assert_safe(ex)


def test_policy_string_deeply_nested_items_do_not_raise() -> None:
    doc = report_dict()
    doc["policies"][0]["policy"]["policy-string"] = ["[" * 900 + "]" * 900]
    deep: Any = []
    for _ in range(500):
        deep = [deep]
    doc["policies"][0]["policy"]["mx-host"] = [deep, "mx.example.com"]
    report = parse_report(to_json(doc))
    assert report.policies[0].mx_host == ("mx.example.com",)


def test_report_with_huge_integer_digits_is_refused_clearly() -> None:
    from tlsrpt_lmtp.core.report import ReportError

    body = to_json(report_dict(sts_policy(success=123456))).replace(b"123456", b"9" * 5000)
    with pytest.raises(ReportError, match="not JSON"):
        parse_report(body)
