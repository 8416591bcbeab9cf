"""Normalise one value of a report: texts, counts, addresses, dates, failure details, policy
strings and MX hosts.

Every text goes through ``sanitize.clean_text`` and every count through the clamp, so what
leaves here can always be encoded, stored and emitted (see sanitize.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tlsrpt_lmtp.core.jsonstream import MAX_LIST_ITEMS
from tlsrpt_lmtp.core.model import KNOWN_RESULT_TYPES, FailureDetail
from tlsrpt_lmtp.core.names import canonical, to_ascii
from tlsrpt_lmtp.core.sanitize import COUNT_CLAMPED, MAX_COUNT, clean_text

# Misspellings and spec inconsistencies seen in the wild, mapped to the RFC's key.
DETAIL_ALIASES = {
    "receiving-mx-host-name": "receiving-mx-hostname",
    "receiving-mx-host": "receiving-mx-hostname",
    "additional-info-uri": "additional-information",
    "additional-info": "additional-information",
}
DETAIL_KEYS = frozenset(
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


class ReportError(ValueError):
    """The body is not a usable TLS report; the message says why, for the invalid event."""


class Warnings:
    """Collects warning codes once each, in first-seen order."""

    def __init__(self) -> None:
        self._codes: dict[str, None] = {}

    def add(self, code: str) -> None:
        self._codes.setdefault(code, None)

    def codes(self) -> tuple[str, ...]:
        return tuple(self._codes)


def text(value: Any, warn: Warnings) -> str | None:
    """A scalar as stripped, safe text; None for null and for containers."""
    if type(value) is str:
        s = value.strip()
    elif value is None:
        return None
    elif isinstance(value, str):
        s = str(value).strip()
    elif isinstance(value, int):
        s = _int_text(value)
    elif isinstance(value, float):
        s = str(value)
    else:
        return None
    if len(s) <= 256 and s.isascii() and "\x00" not in s:
        return s  # the common case, without a call
    s, codes = clean_text(s)
    for code in codes:
        warn.add(code)
    return s


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # more digits than int -> str converts (sys.set_int_max_str_digits)
        return "9" * 64


def count(value: Any, warn: Warnings, where: str) -> int:
    """A session count as an int in [0, MAX_COUNT], with a warning for anything else."""
    if value is None:
        warn.add(f"{where}-count-missing")
        return 0
    if isinstance(value, bool):
        warn.add("count-not-integer")
        return int(value)
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        warn.add("count-not-integer")
        n = int(value)
    elif isinstance(value, str) and _is_digits(digits := value.strip()):
        warn.add("count-not-integer")
        digits = digits.lstrip("0") or "0"
        n = int(digits) if len(digits) <= 18 else MAX_COUNT + 1
    else:
        warn.add("count-invalid")
        return 0
    if n < 0:
        warn.add("count-negative")
        return 0
    if n > MAX_COUNT:
        warn.add(COUNT_CLAMPED)
        return MAX_COUNT
    return n


def _is_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def detail(d: dict[str, Any], warn: Warnings) -> FailureDetail:
    # Reports can hold millions of details: the common, well-formed case stays cheap (absent
    # fields cost no call).
    if not d.keys() <= DETAIL_KEYS:
        d = _canonical_keys(d, warn)
    get = d.get
    result = get("result-type")
    result = text(result, warn) if result is not None else None
    if not result:
        warn.add("result-type-missing")
        result = "unknown"
    result = result.lower()
    if result not in KNOWN_RESULT_TYPES:
        warn.add("result-type-unknown")
    n = get("failed-session-count")
    if type(n) is not int or n < 0 or n > MAX_COUNT:
        if n is None:
            warn.add("failed-session-count-missing")
            n = 0
        else:
            n = count(n, warn, "detail")
    v = [get(k) for k in _OPTIONAL]
    return FailureDetail(
        result,
        ip(v[0], warn) if v[0] is not None else None,
        host(v[1], warn) if v[1] is not None else None,
        (text(v[2], warn) or None) if v[2] is not None else None,
        ip(v[3], warn) if v[3] is not None else None,
        n,
        (text(v[4], warn) or None) if v[4] is not None else None,
        (text(v[5], warn) or None) if v[5] is not None else None,
    )


_OPTIONAL = (
    "sending-mta-ip",
    "receiving-mx-hostname",
    "receiving-mx-helo",
    "receiving-ip",
    "additional-information",
    "failure-reason-code",
)


def _canonical_keys(raw: dict[str, Any], warn: Warnings) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for key, val in raw.items():
        canonical = DETAIL_ALIASES.get(key)
        if canonical is not None:
            warn.add(f"misspelled-key:{key}")
            d.setdefault(canonical, val)
        else:
            d[key] = val
    return d


def ip(value: Any, warn: Warnings) -> str | None:
    t = text(value, warn)
    if t == "":
        warn.add("empty-ip")
        return None
    return t


def host(value: Any, warn: Warnings) -> str | None:
    t = text(value, warn)
    return canonical(t) if t else None


def domain_of(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].strip(" >").lower() or None


def date_time(value: Any, name: str, warn: Warnings) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise ReportError(f"date-range has no {name}")
    t = value.strip()[:64]
    if len(t) > 10 and t[10] in " t":
        t = t[:10] + "T" + t[11:]
    if t[-1:] in "zZ":
        t = t[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(t)
        if parsed.tzinfo is None:
            warn.add("datetime-without-timezone")
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 9999 east of UTC, or year 1 west
        shown = clean_text(value, 80)[0]
        raise ReportError(f"date-range {name} is not an RFC 3339 date-time: {shown!r}") from None


def policy_domain(value: Any, header_domain: str | None, warn: Warnings) -> str | None:
    domain = text(value, warn)
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


def _list(value: list[Any], warn: Warnings) -> list[Any]:
    if len(value) > MAX_LIST_ITEMS:
        warn.add("list-truncated")
        return value[:MAX_LIST_ITEMS]
    return value


def _safe(s: str, warn: Warnings) -> str:
    s, codes = clean_text(s)
    for code in codes:
        warn.add(code)
    return s


def _scalar_json(value: Any) -> str | None:
    """A non-string policy-string item as JSON text; None for a container."""
    if value is None or isinstance(value, bool | float):
        return json.dumps(value)
    if isinstance(value, int):
        return text(value, Warnings())
    return None


def policy_strings(value: Any, ptype: str, warn: Warnings) -> tuple[str, ...]:
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
    strings: list[str] = []
    for item in _list(value, warn):
        s = item if isinstance(item, str) else _scalar_json(item)
        if s is None:
            warn.add("policy-string-invalid")
        else:
            strings.append(_safe(s, warn))
    # Microsoft sends TLSA records as one string holding a JSON array of strings.
    if len(strings) == 1 and strings[0].lstrip().startswith("["):
        try:
            inner = json.loads(strings[0])
        except (ValueError, RecursionError):
            inner = None
        if isinstance(inner, list) and all(isinstance(s, str) for s in inner):
            warn.add("policy-string-json-encoded")
            strings = [_safe(s, warn) for s in _list(inner, warn)]
    if ptype == "sts":
        strings = [_sts_line(s, warn) for s in strings]
    return tuple(strings)


def _sts_line(line: str, warn: Warnings) -> str:
    key, sep, val = line.partition(":")
    if not sep:
        return line
    tidy = f"{key.strip()}: {val.strip()}"
    if tidy != line:
        warn.add("policy-string-spacing")
    return tidy


def mx_hosts(policy: dict[str, Any], warn: Warnings) -> tuple[str, ...]:
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
    hosts = (text(s, warn) if isinstance(s, str) else None for s in _list(value, warn))
    return tuple(canonical(h) for h in hosts if h)
