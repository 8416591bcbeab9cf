"""No amplification: at most ``limit`` failure details per report kept as sent, the rest
aggregated with every total intact (aggregate.py, applied while parsing by report.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.factories import detail, report_dict, sts_policy, to_json
from tlsrpt_lmtp.core.aggregate import AGGREGATED, DEFAULT_MAX_FAILURE_DETAILS, cap_failure_details
from tlsrpt_lmtp.core.model import Report
from tlsrpt_lmtp.core.report import parse_report
from tlsrpt_lmtp.core.sanitize import MAX_COUNT


def _details(n: int, *, ips: int = 1, types: int = 1, count: int = 1) -> list[dict[str, Any]]:
    return [
        detail(
            f"type-{i % types}" if types > 1 else "validation-failure",
            count,
            sending_ip=f"10.0.{i % ips // 256}.{i % ips % 256}",
            mx=f"mx{i % 3}.example.com",
        )
        for i in range(n)
    ]


def _report(*policy_details: list[dict[str, Any]]) -> bytes:
    policies = [
        sts_policy(f"d{i}.example", failure=sum(d["failed-session-count"] for d in ds), details=ds)
        for i, ds in enumerate(policy_details)
    ]
    return to_json(report_dict(*policies))


def _n(report: Report) -> int:
    return sum(len(p.failure_details) for p in report.policies)


def _sums(report: Report) -> list[int]:
    return [sum(d.failed_session_count for d in p.failure_details) for p in report.policies]


def test_default_limit() -> None:
    assert DEFAULT_MAX_FAILURE_DETAILS == 10_000


def test_under_the_limit_nothing_changes() -> None:
    report = parse_report(_report(_details(5)), max_failure_details=5)
    assert cap_failure_details(report, 5) is report
    assert "failure-details-aggregated" not in report.warnings


def test_first_details_kept_in_order_across_policies_rest_aggregated_per_key() -> None:
    body = _report(_details(4, ips=4), _details(6, ips=2, count=2))
    full = parse_report(body, max_failure_details=100)
    capped = cap_failure_details(full, 5)
    assert capped.policies[0].failure_details == full.policies[0].failure_details
    assert capped.policies[1].failure_details[0] == full.policies[1].failure_details[0]
    rows = capped.policies[1].failure_details[1:]
    # 5 details folded, 2 sending IPs x 3 MX names -> keys in first-seen order
    keys = [(r.sending_mta_ip, r.receiving_mx_hostname, r.failed_session_count) for r in rows]
    assert keys == [
        ("10.0.0.1", "mx1.example.com", 2),
        ("10.0.0.0", "mx2.example.com", 2),
        ("10.0.0.1", "mx0.example.com", 2),
        ("10.0.0.0", "mx1.example.com", 2),
        ("10.0.0.1", "mx2.example.com", 2),
    ]
    assert all(r.failure_reason_code == AGGREGATED and r.receiving_ip is None for r in rows)
    assert _sums(capped) == _sums(full)
    assert capped.total_failure_session_count == full.total_failure_session_count
    assert capped.warnings == (*full.warnings, "failure-details-aggregated")


def test_too_many_keys_aggregate_per_result_type_then_per_policy() -> None:
    body = _report(_details(300, ips=300, types=3))
    full = parse_report(body, max_failure_details=1000)
    by_type = cap_failure_details(full, 10)
    rows = by_type.policies[0].failure_details[10:]
    assert [(r.result_type, r.sending_mta_ip, r.receiving_mx_hostname) for r in rows] == [
        ("type-1", None, None),
        ("type-2", None, None),
        ("type-0", None, None),
    ]
    per_policy = cap_failure_details(full, 2)
    assert [r.result_type for r in per_policy.policies[0].failure_details[2:]] == [AGGREGATED]
    for capped in (by_type, per_policy):
        assert _sums(capped) == _sums(full) == [300]


@pytest.mark.parametrize("limit", [0, 1, 3, 7, 50])
def test_bound_holds_and_totals_stay_right(limit: int) -> None:
    policies = [_details(40, ips=40, types=5), _details(3), _details(25, ips=2, types=25)]
    full = parse_report(_report(*policies), max_failure_details=10**6)
    capped = cap_failure_details(full, limit)
    assert _n(capped) <= limit + max(limit, len(capped.policies))
    assert _sums(capped) == _sums(full)
    assert [p.total_failure_session_count for p in capped.policies] == [
        p.total_failure_session_count for p in full.policies
    ]


@pytest.mark.parametrize("limit", [0, 1, 3, 7, 50, 10_000])
def test_capping_while_parsing_equals_capping_after(limit: int) -> None:
    body = _report(_details(40, ips=40, types=5), _details(3), _details(25, ips=2, types=25))
    full = parse_report(body, max_failure_details=10**6)
    assert parse_report(body, max_failure_details=limit) == cap_failure_details(full, limit)


def test_aggregated_sums_are_clamped() -> None:
    body = _report([detail(count=MAX_COUNT), detail(count=MAX_COUNT), detail(count=MAX_COUNT)])
    report = parse_report(body, max_failure_details=1)
    assert [d.failed_session_count for d in report.policies[0].failure_details] == [
        MAX_COUNT,
        MAX_COUNT,
    ]
    assert report.total_failure_session_count == MAX_COUNT


def test_negative_limit_is_refused() -> None:
    report = parse_report(_report(_details(2)))
    with pytest.raises(ValueError, match="limit"):
        cap_failure_details(report, -1)
