"""Parse and normalise an RFC 8460 report body (sans-I/O: JSON bytes in, a Report out).

Real senders break the RFC in many small ways (see QUIRKS.md in the shared samples). Each
deviation is accepted, normalised and recorded as a stable warning code on the report, so
nothing is lost and the SIEM can still see who sent what. Only a body that cannot identify
the report at all (not JSON, no report-id, no usable date range, no policies) is refused.

Memory stays bounded whatever the body: a small body that cannot expand much is loaded whole
with orjson (fast); any other is read as a stream (jsonstream.py). Either way at most
``max_failure_details`` failure details are kept as sent, the rest aggregated (aggregate.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import orjson

from tlsrpt_lmtp.core import jsonstream
from tlsrpt_lmtp.core.aggregate import DEFAULT_MAX_FAILURE_DETAILS, DETAILS_AGGREGATED, Overflow
from tlsrpt_lmtp.core.jsonstream import MAX_POLICIES, STREAMED
from tlsrpt_lmtp.core.model import (
    KNOWN_POLICY_TYPES,
    KNOWN_RESULT_TYPES,
    FailureDetail,
    Policy,
    Report,
)
from tlsrpt_lmtp.core.reportfields import (
    DETAIL_ALIASES,
    DETAIL_KEYS,
    ReportError,
    Warnings,
    count,
    date_time,
    detail,
    domain_of,
    mx_hosts,
    policy_domain,
    policy_strings,
    text,
)
from tlsrpt_lmtp.core.sanitize import MAX_COUNT

__all__ = [
    "DEFAULT_MAX_FAILURE_DETAILS",
    "KNOWN_POLICY_TYPES",
    "KNOWN_RESULT_TYPES",
    "ReportError",
    "parse_report",
    "parse_report_chunks",
    "report_from_json",
]

# Bodies up to WHOLE_MAX bytes whose estimated Python size is under WHOLE_BUDGET are loaded
# whole; the estimate is an upper bound per JSON token (a dict, a list, a string, a value).
WHOLE_MAX = 8 * 1024 * 1024
WHOLE_BUDGET = 48 * 1024 * 1024
_FEED = 256 * 1024
_ROOT, _ENTRY = jsonstream.report_schema((*DETAIL_KEYS, *DETAIL_ALIASES))


def parse_report(
    body: bytes,
    *,
    header_domain: str | None = None,
    max_failure_details: int = DEFAULT_MAX_FAILURE_DETAILS,
) -> Report:
    """Parse JSON bytes into a normalised Report.

    ``header_domain`` is the TLS-Report-Domain header of the mail, used when a policy
    lacks its policy-domain (Postfix + sys4 tlsrpt-reporter do that).
    """
    return parse_report_chunks(
        iter((body,)), header_domain=header_domain, max_failure_details=max_failure_details
    )


def parse_report_chunks(
    chunks: Iterable[bytes],
    *,
    header_domain: str | None = None,
    max_failure_details: int = DEFAULT_MAX_FAILURE_DETAILS,
) -> Report:
    """``parse_report`` over a body given in pieces (as decompression produces it).

    Errors raised by the ``chunks`` iterator itself (e.g. PayloadError) pass through.
    """
    warn = Warnings()
    details = _Details(warn, max_failure_details)
    rest = iter(chunks)
    head: list[bytes] = []
    size = 0
    for chunk in rest:
        head.append(chunk)
        size += len(chunk)
        if size > WHOLE_MAX:
            break
    else:
        body = head[0] if len(head) == 1 else b"".join(head)
        head = [body]
        if _cheap_to_load(body):
            doc = _load_whole(body, warn)
            return report_from_json(doc, header_domain=header_domain, _warn=warn, _details=details)
    doc = _load_stream(_replay(head, rest), warn, details)
    return report_from_json(doc, header_domain=header_domain, _warn=warn, _details=details)


def _cheap_to_load(body: bytes) -> bool:
    c = body.count
    estimate = 240 * c(b"{") + 72 * c(b"[") + 32 * c(b'"') + 40 * c(b",") + 2 * len(body)
    return estimate <= WHOLE_BUDGET


def _load_whole(body: bytes, warn: Warnings) -> Any:
    if body.startswith(b"\xef\xbb\xbf"):
        warn.add("utf8-bom")
        body = body[3:]
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # orjson is strict UTF-8 I-JSON; the stdlib also reads UTF-16/32 and big numbers.
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: JSONDecodeError, 4300+ digits
        raise ReportError(f"report body is not JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise ReportError("report body is not JSON: nested too deeply") from None
    warn.add("json-not-utf8-i-json")
    return doc


def _replay(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    head.reverse()
    while head:
        yield head.pop()
    yield from rest


def _load_stream(chunks: Iterator[bytes], warn: Warnings, details: _Details) -> Any:
    def pieces() -> Iterator[bytes]:
        # yajl re-reads a token that spans pieces from its start (a 32 MiB string in 64 KiB
        # pieces takes seconds), and one send makes one list of events: 256 KiB is both.
        pending: list[bytes] = []
        size = 0
        first = True
        for chunk in chunks:
            if first and chunk:
                first = False
                if chunk.startswith(b"\xef\xbb\xbf"):
                    warn.add("utf8-bom")
                    chunk = chunk[3:]
            for at in range(0, len(chunk), _FEED):
                piece = chunk[at : at + _FEED] if len(chunk) > _FEED else chunk
                pending.append(piece)
                size += len(piece)
                if size >= _FEED:
                    yield b"".join(pending)
                    pending, size = [], 0
        if pending:
            yield b"".join(pending)

    try:
        return jsonstream.load(pieces(), _ROOT, _ENTRY, details.add)
    except jsonstream.StreamError as exc:
        raise ReportError(str(exc)) from None


class _Details:
    """The failure details of one report as they arrive: the first ``limit`` kept, the rest
    folded (aggregate.Overflow); per policy the number seen and the (clamped) count sum."""

    def __init__(self, warn: Warnings, limit: int) -> None:
        if limit < 0:
            raise ValueError("max_failure_details must be >= 0")
        self.warn = warn
        self.budget = limit
        self.kept: dict[int, list[FailureDetail]] = {}
        self.seen: dict[int, int] = {}
        self.sums: dict[int, int] = {}
        self.overflow = Overflow(limit)

    def add(self, policy: int, raw: Any) -> None:
        if not isinstance(raw, dict):
            self.warn.add("failure-detail-invalid")
            return
        d = detail(raw, self.warn)
        seen, sums = self.seen, self.sums
        seen[policy] = seen.get(policy, 0) + 1
        total = sums.get(policy, 0) + d.failed_session_count
        sums[policy] = total if total <= MAX_COUNT else MAX_COUNT
        if self.budget > 0:
            self.budget -= 1
            self.kept.setdefault(policy, []).append(d)
        else:
            self.overflow.add(policy, d)

    def feed(self, value: Any, policy: int) -> None:
        if value is None or value is STREAMED:
            return
        if isinstance(value, dict):
            self.warn.add("failure-details-not-array")
            value = [value]
        if not isinstance(value, list):
            self.warn.add("failure-details-invalid")
            return
        for raw in value:
            self.add(policy, raw)

    def attach(self, policies: list[Policy]) -> tuple[Policy, ...]:
        extra = self.overflow.by_policy() if self.overflow.folded else {}
        if extra:
            self.warn.add(DETAILS_AGGREGATED)
        return tuple(
            replace(p, failure_details=(*self.kept.get(i, ()), *extra.get(i, ())))
            if i in self.seen
            else p
            for i, p in enumerate(policies)
        )


def report_from_json(
    doc: Any,
    *,
    header_domain: str | None = None,
    max_failure_details: int = DEFAULT_MAX_FAILURE_DETAILS,
    _warn: Warnings | None = None,
    _details: _Details | None = None,
) -> Report:
    warn = _warn or Warnings()
    details = _details or _Details(warn, max_failure_details)
    if not isinstance(doc, dict):
        raise ReportError(f"report is a JSON {type(doc).__name__}, not an object")
    report_id = text(doc.get("report-id"), warn)
    if not report_id:
        raise ReportError("report has no report-id")
    start, end = _date_range(doc.get("date-range"), warn)
    contact = text(doc.get("contact-info"), warn)
    if contact is None:
        warn.add("contact-info-missing")
    org = text(doc.get("organization-name"), warn)
    if not org:
        warn.add("organization-name-missing")
        org = domain_of(contact) or "unknown"
    raw_policies = doc.get("policies")
    if isinstance(raw_policies, dict):
        warn.add("policies-not-array")
        raw_policies = [raw_policies]
    if not isinstance(raw_policies, list):
        raise ReportError("report has no policies array")
    if len(raw_policies) > MAX_POLICIES:
        raise ReportError(f"report has more than {MAX_POLICIES} policies")
    drafts = [_policy(p, i, header_domain, warn, details) for i, p in enumerate(raw_policies)]
    policies = details.attach(drafts)
    return Report(
        organization_name=org,
        report_id=report_id,
        date_range_start=start,
        date_range_end=end,
        contact_info=contact,
        policies=policies,
        warnings=warn.codes(),
    )


def _date_range(value: Any, warn: Warnings) -> tuple[Any, Any]:
    if not isinstance(value, dict):
        raise ReportError("report has no date-range object")
    start = date_time(value.get("start-datetime"), "start-datetime", warn)
    end = date_time(value.get("end-datetime"), "end-datetime", warn)
    if end < start:
        warn.add("date-range-reversed")
    return start, end


def _policy(
    entry: Any, index: int, header_domain: str | None, warn: Warnings, details: _Details
) -> Policy:
    """The policy without its failure details (``_Details.attach`` adds them)."""
    if not isinstance(entry, dict):
        raise ReportError("a policies entry is not an object")
    policy = entry.get("policy")
    if not isinstance(policy, dict):
        warn.add("policy-missing")
        policy = {}
    ptype = text(policy.get("policy-type"), warn)
    if not ptype:
        warn.add("policy-type-missing")
        ptype = "unknown"
    ptype = ptype.lower()
    if ptype not in KNOWN_POLICY_TYPES:
        warn.add("policy-type-unknown")
    domain = policy_domain(policy.get("policy-domain"), header_domain, warn)
    strings = policy_strings(policy.get("policy-string"), ptype, warn)
    mx = mx_hosts(policy, warn)
    details.feed(entry.get("failure-details"), index)
    summary = entry.get("summary")
    if not isinstance(summary, dict):
        warn.add("summary-missing")
        summary = {}
    success = count(summary.get("total-successful-session-count"), warn, "summary")
    seen = details.seen.get(index, 0)
    detail_sum = details.sums.get(index, 0)
    if summary.get("total-failure-session-count") is None and seen:
        warn.add("summary-count-missing")
        failure = detail_sum
    else:
        failure = count(summary.get("total-failure-session-count"), warn, "summary")
    if seen and detail_sum != failure:
        warn.add("failure-count-mismatch")
    return Policy(
        policy_type=ptype,
        policy_domain=domain,
        policy_string=strings,
        mx_host=mx,
        total_successful_session_count=success,
        total_failure_session_count=failure,
        failure_details=(),
    )
