"""Large or dense report bodies are read as a stream (jsonstream.py) in bounded memory, to the
same Report the whole-document path gives."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.factories import detail, report_dict, sts_policy, tlsa_policy, to_json
from tests.support.samples import real_sample, shared_dir
from tlsrpt_lmtp.core import report as report_module
from tlsrpt_lmtp.core.decompress import open_payload
from tlsrpt_lmtp.core.jsonstream import MAX_LIST_ITEMS, MAX_POLICIES
from tlsrpt_lmtp.core.model import Report
from tlsrpt_lmtp.core.report import ReportError, parse_report, parse_report_chunks

MiB = 1024 * 1024


def _streamed(body: bytes, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> Report:
    with monkeypatch.context() as m:
        m.setattr(report_module, "WHOLE_MAX", 0)
        return parse_report_chunks(_pieces(body, 7), **kw)


def _pieces(body: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(body), size):
        yield body[at : at + size]


def _same(a: Report, b: Report) -> None:
    """Equal, except that warnings may come in another order (details are read first)."""
    assert a.__class__ is b.__class__
    assert {**_fields(a), "warnings": None} == {**_fields(b), "warnings": None}
    assert sorted(a.warnings) == sorted(b.warnings)


def _fields(r: Report) -> dict[str, Any]:
    return {name: getattr(r, name) for name in r.__slots__}


def _quirky_docs() -> dict[str, Any]:
    misspelled = detail(**{"receiving-mx-host-name": "MX.example.", "additional-info": "u"})
    del misspelled["receiving-mx-hostname"]
    docs: dict[str, Any] = {
        "plain": report_dict(),
        "details": report_dict(sts_policy(failure=3, details=[detail(count=1)] * 3)),
        "tlsa-json-encoded": report_dict(tlsa_policy(records=[json.dumps(["3 1 1 AB"])])),
        "policies-object": {**report_dict(), "policies": sts_policy()},
        "details-object": report_dict({**sts_policy(failure=1), "failure-details": detail()}),
        "misspelled": report_dict(sts_policy(failure=1, details=[misspelled])),
        "unknown-keys": {
            **report_dict(sts_policy(failure=1, details=[{**detail(), "x": [{"y": [1]}]}])),
            "extra": {"deep": [[[{"a": 1}]]]},
        },
        "container-where-scalar": {**report_dict(), "organization-name": {"a": [1, 2]}},
        "bad-items": report_dict({**sts_policy(), "failure-details": [1, [2], None, detail()]}),
        "long-list": report_dict(
            {
                **sts_policy(),
                "policy": {
                    **sts_policy()["policy"],
                    "mx-host": [f"mx{i}.example" for i in range(MAX_LIST_ITEMS + 10)],
                    "policy-string": ["version: STSv1", {"x": 1}, 7, None, True],
                },
            }
        ),
        "surrogate-free-unicode": report_dict(org="R\u00e9porteur \u2603"),
    }
    return docs


@pytest.mark.parametrize("name", sorted(_quirky_docs()))
def test_stream_and_whole_document_give_the_same_report(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = to_json(_quirky_docs()[name])
    for limit in (0, 1, 10_000):
        whole = parse_report(body, max_failure_details=limit)
        _same(_streamed(body, monkeypatch, max_failure_details=limit), whole)


def test_real_samples_stream_to_the_same_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shared_dir() / "samples" / "real"
    if not real.is_dir():
        pytest.skip(f"shared samples not found at {real}")
    names = sorted(p.name for p in real.glob("*.json"))
    assert names
    for name in names:
        body = real_sample(name).read_bytes()
        try:
            whole = parse_report(body)
        except ReportError:
            continue
        _same(_streamed(body, monkeypatch), whole)


def test_utf8_bom_is_read_on_the_stream_path(monkeypatch: pytest.MonkeyPatch) -> None:
    body = b"\xef\xbb\xbf" + to_json(report_dict())
    assert "utf8-bom" in _streamed(body, monkeypatch).warnings


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 100 + b"]" * 100, "report is a JSON list"),
        (
            to_json({**report_dict(), "x": "@"}).replace(b'"@"', b"[" * 70 + b"]" * 70),
            "nested too deeply",
        ),
        (
            to_json({**report_dict(), "policies": [sts_policy()] * (MAX_POLICIES + 1)}),
            f"more than {MAX_POLICIES} policies",
        ),
        (to_json(report_dict())[:-5], "not JSON"),
        (to_json(report_dict()) + b"{}", "not JSON"),
        (b'{"policies": [], "policies": []}', "twice"),
        (to_json(report_dict()).replace(b"100", b"9" * 30), "not JSON"),  # yajl: int overflow
    ],
    ids=["array", "deep", "policies", "truncated", "trailing", "duplicate", "big-int"],
)
def test_stream_path_refuses_clearly(
    body: bytes, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ReportError, match=reason):
        _streamed(body, monkeypatch)


def test_too_many_policies_refused_on_the_whole_path_too() -> None:
    body = to_json({**report_dict(), "policies": [sts_policy()] * (MAX_POLICIES + 1)})
    with pytest.raises(ReportError, match=f"more than {MAX_POLICIES} policies"):
        parse_report(body)


def test_dense_body_is_not_loaded_whole() -> None:
    """8 MiB of empty objects would be ~180 MiB of Python dicts: the estimate sends it to the
    stream; a real 10,000-detail report (2-4 MB) stays on the fast whole-document path."""
    dense = to_json({**report_dict(), "x": "@"}).replace(b'"@"', b"[" + b"{}," * (MiB) + b"{}]")
    assert not report_module._cheap_to_load(dense)
    details = [detail(sending_ip=f"192.0.2.{i % 250}") for i in range(10_000)]
    real = json.dumps(report_dict(sts_policy(failure=10_000, details=details)), indent=4)
    assert report_module._cheap_to_load(real.encode())


def _peak(run: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_dense_body_streams_in_small_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = report_dict()
    body = to_json({**doc, "x": "@"}).replace(b'"@"', b"[" + b"{}," * MiB + b"{}]")
    monkeypatch.setattr(report_module, "WHOLE_MAX", 0)
    report, peak = _peak(lambda: parse_report(body))
    assert report.report_id == doc["report-id"]
    # One send of 256 KiB makes up to ~170,000 events (~11 MiB): the bound, whatever the size.
    assert peak < 16 * MiB, f"peak {peak} for a {len(body)}-byte body"


def _many_details(n: int) -> bytes:
    one = b'{"failed-session-count":1},'
    doc = to_json(report_dict(sts_policy(failure=n)))
    head, tail = doc.split(b'"summary"')
    return head + b'"failure-details":[' + one * (n - 1) + one[:-1] + b'],"summary"' + tail


def test_many_failure_details_stream_in_small_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    body = _many_details(50_000)
    monkeypatch.setattr(report_module, "WHOLE_MAX", 0)
    report, peak = _peak(lambda: parse_report(body, max_failure_details=1000))
    assert len(report.policies[0].failure_details) == 1001
    assert peak < 8 * MiB, f"peak {peak} for {len(body)} bytes of JSON"


def test_million_failure_details_from_gzip_are_aggregated() -> None:
    """The issue's hostile mail: ~1,000,000 details in a small gzip, decompressed as a stream."""
    data = gzip.compress(_many_details(1_000_000), compresslevel=1)
    report = parse_report_chunks(open_payload(data).chunks, max_failure_details=1000)
    details = report.policies[0].failure_details
    assert len(details) == 1001
    assert details[-1].failed_session_count == 999_000
    assert report.total_failure_session_count == 1_000_000
    assert "failure-count-mismatch" not in report.warnings
    assert "failure-details-aggregated" in report.warnings


def test_size_hint_covers_what_an_extracted_message_holds() -> None:
    from tlsrpt_lmtp.core.mime import extract

    details = [
        detail(sending_ip=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", receiving_ip=f"::{i:x}")
        for i in range(12_000)
    ]
    data = gzip.compress(to_json(report_dict(sts_policy(failure=12_000, details=details))))
    tracemalloc.start()
    try:
        ex = extract(data)
        held = tracemalloc.get_traced_memory()[0]
        del ex
        held -= tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    ex = extract(data)
    kept = ex.reports[0].policies[0].failure_details
    assert len(kept) == 12_000  # 10,000 as sent + 2,000 keys of one folded detail each
    assert kept[-1].failure_reason_code == "aggregated"
    assert held <= ex.size_hint <= 2 * held
