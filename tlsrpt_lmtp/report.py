"""Parse and normalise an RFC 8460 report body (sans-I/O: JSON bytes in, a Report out).

Real senders break the RFC in many small ways (see QUIRKS.md in the shared samples). Each
deviation is accepted, normalised and recorded as a stable warning code on the report, so
nothing is lost and the SIEM can still see who sent what. Only a body that cannot identify
the report at all (not JSON, no report-id, no usable date range, no policies) is refused.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson

from tlsrpt_lmtp.model import FailureDetail, Policy, Report
from tlsrpt_lmtp.names import canonical, to_ascii

KNOWN_POLICY_TYPES = frozenset({"sts", "tlsa", "no-policy-found"})
# IANA "STARTTLS Validation Result Types" (RFC 8460 §6.6); the registry may grow.
KNOWN_RESULT_TYPES = frozenset(
    {
        "starttls-not-supported",
        "certificate-host-mismatch",
        "certificate-expired",
        "certificate-not-trusted",
        "validation-failure",
        "tlsa-invalid",
        "dnssec-invalid",
        "dane-required",
        "sts-policy-fetch-error",
        "sts-policy-invalid",
        "sts-webpki-invalid",
    }
)
# Misspellings and spec inconsistencies seen in the wild, mapped to the RFC's key.
_DETAIL_ALIASES = {
    "receiving-mx-host-name": "receiving-mx-hostname",
    "receiving-mx-host": "receiving-mx-hostname",
    "additional-info-uri": "additional-information",
    "additional-info": "additional-information",
}


class ReportError(ValueError):
    """The body is not a usable TLS report; the message says why, for the invalid event."""


class _Warnings:
    """Collects warning codes once each, in first-seen order."""

    def __init__(self) -> None:
        self._codes: dict[str, None] = {}

    def add(self, code: str) -> None:
        self._codes.setdefault(code, None)

    def codes(self) -> tuple[str, ...]:
        return tuple(self._codes)


def parse_report(body: bytes, *, header_domain: str | None = None) -> Report:
    """Parse JSON bytes into a normalised Report.

    ``header_domain`` is the TLS-Report-Domain header of the mail, used when a policy
    lacks its policy-domain (Postfix + sys4 tlsrpt-reporter do that).
    """
    warn = _Warnings()
    if body.startswith(b"\xef\xbb\xbf"):
        warn.add("utf8-bom")
        body = body[3:]
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson is strict UTF-8 I-JSON; the stdlib also reads UTF-16/32 and big numbers.
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReportError(f"report body is not JSON: {exc}") from None
        except RecursionError:
            raise ReportError("report body is not JSON: nested too deeply") from None
        warn.add("json-not-utf8-i-json")
    return report_from_json(doc, header_domain=header_domain, warn=warn)


def report_from_json(
    doc: Any, *, header_domain: str | None = None, warn: _Warnings | None = None
) -> Report:
    warn = warn or _Warnings()
    if not isinstance(doc, dict):
        raise ReportError(f"report is a JSON {type(doc).__name__}, not an object")
    report_id = _text(doc.get("report-id"))
    if not report_id:
        raise ReportError("report has no report-id")
    start, end = _date_range(doc.get("date-range"), warn)
    contact = _text(doc.get("contact-info"))
    if contact is None:
        warn.add("contact-info-missing")
    org = _text(doc.get("organization-name"))
    if not org:
        warn.add("organization-name-missing")
        org = _domain_of(contact) or "unknown"
    raw_policies = doc.get("policies")
    if isinstance(raw_policies, dict):
        warn.add("policies-not-array")
        raw_policies = [raw_policies]
    if not isinstance(raw_policies, list):
        raise ReportError("report has no policies array")
    policies = tuple(_policy(p, header_domain, warn) for p in raw_policies)
    return Report(
        organization_name=org,
        report_id=report_id,
        date_range_start=start,
        date_range_end=end,
        contact_info=contact,
        policies=policies,
        warnings=warn.codes(),
    )


def _date_range(value: Any, warn: _Warnings) -> tuple[datetime, datetime]:
    if not isinstance(value, dict):
        raise ReportError("report has no date-range object")
    start = _datetime(value.get("start-datetime"), "start-datetime", warn)
    end = _datetime(value.get("end-datetime"), "end-datetime", warn)
    if end < start:
        warn.add("date-range-reversed")
    return start, end


def _datetime(value: Any, name: str, warn: _Warnings) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise ReportError(f"date-range has no {name}")
    text = value.strip()
    if len(text) > 10 and text[10] in " t":
        text = text[:10] + "T" + text[11:]
    if text[-1:] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(f"date-range {name} is not an RFC 3339 date-time: {value!r}") from None
    if parsed.tzinfo is None:
        warn.add("datetime-without-timezone")
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _policy(entry: Any, header_domain: str | None, warn: _Warnings) -> Policy:
    if not isinstance(entry, dict):
        raise ReportError("a policies entry is not an object")
    policy = entry.get("policy")
    if not isinstance(policy, dict):
        warn.add("policy-missing")
        policy = {}
    ptype = _text(policy.get("policy-type"))
    if not ptype:
        warn.add("policy-type-missing")
        ptype = "unknown"
    ptype = ptype.lower()
    if ptype not in KNOWN_POLICY_TYPES:
        warn.add("policy-type-unknown")
    domain = _policy_domain(policy.get("policy-domain"), header_domain, warn)
    strings = _policy_strings(policy.get("policy-string"), ptype, warn)
    mx = _mx_hosts(policy, warn)
    details = _failure_details(entry.get("failure-details"), warn)
    summary = entry.get("summary")
    if not isinstance(summary, dict):
        warn.add("summary-missing")
        summary = {}
    success = _count(summary.get("total-successful-session-count"), warn, "summary")
    detail_sum = sum(d.failed_session_count for d in details)
    if summary.get("total-failure-session-count") is None and details:
        warn.add("summary-count-missing")
        failure = detail_sum
    else:
        failure = _count(summary.get("total-failure-session-count"), warn, "summary")
    if details and detail_sum != failure:
        warn.add("failure-count-mismatch")
    return Policy(
        policy_type=ptype,
        policy_domain=domain,
        policy_string=strings,
        mx_host=mx,
        total_successful_session_count=success,
        total_failure_session_count=failure,
        failure_details=details,
    )


def _policy_domain(value: Any, header_domain: str | None, warn: _Warnings) -> str | None:
    domain = _text(value)
    if not domain:
        warn.add("policy-domain-missing")
        if not header_domain:
            return None
        warn.add("policy-domain-from-header")
        domain = header_domain
    ascii_name = to_ascii(domain)
    if ascii_name is None:
        warn.add("policy-domain-invalid")
        return canonical(domain)
    if not domain.isascii():
        warn.add("policy-domain-not-a-label")
    return ascii_name


def _policy_strings(value: Any, ptype: str, warn: _Warnings) -> tuple[str, ...]:
    if value is None:
        if ptype in ("sts", "tlsa"):
            warn.add("policy-string-missing")
        return ()
    if isinstance(value, str):
        warn.add("policy-string-not-array")
        value = [value]
    if not isinstance(value, list):
        warn.add("policy-string-invalid")
        return ()
    strings = [s if isinstance(s, str) else json.dumps(s) for s in value]
    # Microsoft sends TLSA records as one string holding a JSON array of strings.
    if len(strings) == 1 and strings[0].lstrip().startswith("["):
        try:
            inner = json.loads(strings[0])
        except json.JSONDecodeError:
            inner = None
        if isinstance(inner, list) and all(isinstance(s, str) for s in inner):
            warn.add("policy-string-json-encoded")
            strings = inner
    if ptype == "sts":
        strings = [_sts_line(s, warn) for s in strings]
    return tuple(strings)


def _sts_line(line: str, warn: _Warnings) -> str:
    key, sep, val = line.partition(":")
    if not sep:
        return line
    tidy = f"{key.strip()}: {val.strip()}"
    if tidy != line:
        warn.add("policy-string-spacing")
    return tidy


def _mx_hosts(policy: dict[str, Any], warn: _Warnings) -> tuple[str, ...]:
    value = policy.get("mx-host")
    if value is None and "mx-host-pattern" in policy:
        warn.add("mx-host-pattern-key")
        value = policy.get("mx-host-pattern")
    if value is None:
        return ()
    if isinstance(value, str):
        warn.add("mx-host-not-array")
        value = [value] if value else []
    if not isinstance(value, list):
        warn.add("mx-host-invalid")
        return ()
    return tuple(canonical(s) for s in value if isinstance(s, str) and s.strip())


def _failure_details(value: Any, warn: _Warnings) -> tuple[FailureDetail, ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        warn.add("failure-details-not-array")
        value = [value]
    if not isinstance(value, list):
        warn.add("failure-details-invalid")
        return ()
    return tuple(_detail(d, warn) for d in value if _is_detail(d, warn))


def _is_detail(value: Any, warn: _Warnings) -> bool:
    if isinstance(value, dict):
        return True
    warn.add("failure-detail-invalid")
    return False


_DETAIL_KEYS = frozenset(
    {
        "result-type",
        "sending-mta-ip",
        "receiving-mx-hostname",
        "receiving-mx-helo",
        "receiving-ip",
        "failed-session-count",
        "additional-information",
        "failure-reason-code",
    }
)


def _detail(d: dict[str, Any], warn: _Warnings) -> FailureDetail:
    # Reports can hold thousands of details: the common, well-formed case stays cheap.
    if not d.keys() <= _DETAIL_KEYS:
        d = _canonical_keys(d, warn)
    result = _text(d.get("result-type"))
    if not result:
        warn.add("result-type-missing")
        result = "unknown"
    result = result.lower()
    if result not in KNOWN_RESULT_TYPES:
        warn.add("result-type-unknown")
    count = d.get("failed-session-count")
    if type(count) is not int or count < 0:
        if count is None:
            warn.add("failed-session-count-missing")
            count = 0
        else:
            count = _count(count, warn, "detail")
    get = d.get
    return FailureDetail(
        result,
        _ip(get("sending-mta-ip"), warn),
        _host(get("receiving-mx-hostname")),
        _text(get("receiving-mx-helo")) or None,
        _ip(get("receiving-ip"), warn),
        count,
        _text(get("additional-information")) or None,
        _text(get("failure-reason-code")) or None,
    )


def _canonical_keys(raw: dict[str, Any], warn: _Warnings) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for key, val in raw.items():
        canonical = _DETAIL_ALIASES.get(key)
        if canonical is not None:
            warn.add(f"misspelled-key:{key}")
            d.setdefault(canonical, val)
        else:
            d[key] = val
    return d


def _count(value: Any, warn: _Warnings, where: str) -> int:
    if value is None:
        warn.add(f"{where}-count-missing")
        return 0
    if isinstance(value, bool):
        warn.add("count-not-integer")
        return int(value)
    if isinstance(value, int):
        if value < 0:
            warn.add("count-negative")
            return 0
        return value
    if isinstance(value, float) and value.is_integer():
        warn.add("count-not-integer")
        return max(int(value), 0)
    if isinstance(value, str) and value.strip().isdigit():
        warn.add("count-not-integer")
        return int(value.strip())
    warn.add("count-invalid")
    return 0


def _ip(value: Any, warn: _Warnings) -> str | None:
    if type(value) is str and value:
        return value.strip()
    text = _text(value)
    if text == "":
        warn.add("empty-ip")
        return None
    return text


def _host(value: Any) -> str | None:
    text = value.strip() if type(value) is str else _text(value)
    return canonical(text) if text else None


def _text(value: Any) -> str | None:
    if type(value) is str:
        return value.strip()
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float):
        return str(value)
    return None


def _domain_of(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].strip(" >").lower() or None
