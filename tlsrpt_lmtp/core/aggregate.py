"""Bound the failure details of a report without losing a session (sans-I/O).

A report may list any number of failure details; each becomes a stored row and an event. The
first ``limit`` details of a report (across its policies, in order) are kept as they are.
Every later one is folded into an aggregated row of its policy, whose
``failed_session_count`` is the sum of the folded counts (never above MAX_COUNT), so every
total stays right. The aggregation key gets coarser when it has to:

1. (policy, result_type, sending_mta_ip, receiving_mx_hostname) while there are at most
   ``limit`` such keys;
2. else (policy, result_type), with sending_mta_ip and receiving_mx_hostname null, while
   there are at most ``limit`` of those;
3. else one row per policy, with result_type ``"aggregated"``.

An aggregated row has receiving_mx_helo, receiving_ip and additional_information null and
failure_reason_code ``AGGREGATED`` (``"aggregated"``), and its report carries the warning
``failure-details-aggregated``. A report therefore ends with at most
``limit + max(limit, number of its policies)`` failure details.
"""

from __future__ import annotations

from dataclasses import replace

from tlsrpt_lmtp.core.model import FailureDetail, Report
from tlsrpt_lmtp.core.sanitize import MAX_COUNT

DEFAULT_MAX_FAILURE_DETAILS = 10_000
AGGREGATED = "aggregated"
DETAILS_AGGREGATED = "failure-details-aggregated"

_Key = tuple[int, str, str | None, str | None]


class Overflow:
    """The folded details of one report, keyed as the module docstring says."""

    __slots__ = ("folded", "level", "limit", "rows")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.level = 0
        self.rows: dict[_Key, int] = {}
        self.folded = 0

    def add(self, policy: int, d: FailureDetail) -> None:
        if self.level == 0:
            key: _Key = (policy, d.result_type, d.sending_mta_ip, d.receiving_mx_hostname)
        elif self.level == 1:
            key = (policy, d.result_type, None, None)
        else:
            key = (policy, AGGREGATED, None, None)
        rows = self.rows
        total = rows.get(key, 0) + d.failed_session_count
        rows[key] = total if total <= MAX_COUNT else MAX_COUNT
        self.folded += 1
        while len(self.rows) > self.limit and self.level < 2:
            self._coarsen()

    def _coarsen(self) -> None:
        self.level += 1
        coarse: dict[_Key, int] = {}
        for (policy, result_type, _, _), count in self.rows.items():
            key = (policy, result_type if self.level == 1 else AGGREGATED, None, None)
            coarse[key] = min(coarse.get(key, 0) + count, MAX_COUNT)
        self.rows = coarse

    def by_policy(self) -> dict[int, list[FailureDetail]]:
        out: dict[int, list[FailureDetail]] = {}
        for (policy, result_type, ip, mx), count in self.rows.items():
            row = FailureDetail(result_type, ip, mx, None, None, count, None, AGGREGATED)
            out.setdefault(policy, []).append(row)
        return out


def cap_failure_details(report: Report, limit: int = DEFAULT_MAX_FAILURE_DETAILS) -> Report:
    """``report`` with at most ``limit`` failure details kept as sent, the rest aggregated."""
    if limit < 0:
        raise ValueError("limit must be >= 0")
    if sum(len(p.failure_details) for p in report.policies) <= limit:
        return report
    overflow = Overflow(limit)
    budget = limit
    kept: list[tuple[FailureDetail, ...]] = []
    for index, policy in enumerate(report.policies):
        take = min(budget, len(policy.failure_details))
        budget -= take
        kept.append(policy.failure_details[:take])
        for d in policy.failure_details[take:]:
            overflow.add(index, d)
    extra = overflow.by_policy()
    policies = tuple(
        replace(p, failure_details=(*kept[i], *extra.get(i, ())))
        for i, p in enumerate(report.policies)
    )
    warnings = tuple(dict.fromkeys((*report.warnings, DETAILS_AGGREGATED)))
    return replace(report, policies=policies, warnings=warnings)
