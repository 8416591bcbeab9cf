"""The policy file (RFC 8461 §3.2) and MX matching (§4.1), sans-I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from tlsrpt_lmtp.core.names import canonical
from tlsrpt_lmtp.sts.domain import DomainError, mx_pattern

MAX_POLICY_SIZE = 64 * 1024
MAX_AGE_LIMIT = 31557600  # §3.2 prose; RFC errata 7282
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_MAX_AGE = re.compile(r"[0-9]{1,10}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Mode(StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


class PolicyError(ValueError):
    """The policy file is invalid (TLSRPT result type sts-policy-invalid)."""


@dataclass(frozen=True, slots=True)
class StsPolicy:
    mode: Mode
    max_age: int
    mx: tuple[str, ...]
    lines: tuple[str, ...]  # the policy as "key: value" lines, for TLSRPT policy-string

    def matches(self, host: str) -> bool:
        return any(mx_matches(p, host) for p in self.mx)


def parse_policy(body: bytes) -> StsPolicy:
    if len(body) > MAX_POLICY_SIZE:
        raise PolicyError(f"policy is larger than {MAX_POLICY_SIZE} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("policy is not UTF-8") from None
    fields: dict[str, str] = {}
    mx: list[str] = []
    lines: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        value = value.strip(" \t")
        if not colon or not value or not _KEY.fullmatch(key):
            raise PolicyError(f"invalid policy line {line!r}")
        if _CONTROL.search(value):
            raise PolicyError(f"control character in policy line {line!r}")
        if key == "mx":
            mx.append(_mx_pattern(value))
        elif key in fields:
            continue  # §3.2: the first of duplicated fields wins
        else:
            fields[key] = value
        lines.append(f"{key}: {value}")
    if fields.get("version") != "STSv1":
        raise PolicyError("policy has no 'version: STSv1'")
    try:
        mode = Mode(fields.get("mode", ""))
    except ValueError:
        raise PolicyError(
            f"policy mode {fields.get('mode')!r} is not enforce/testing/none"
        ) from None
    max_age_text = fields.get("max_age", "")
    if not _MAX_AGE.fullmatch(max_age_text):
        raise PolicyError(f"policy max_age {max_age_text!r} is not 1-10 digits")
    if mode is not Mode.NONE and not mx:
        raise PolicyError("policy has no mx line")
    max_age = min(int(max_age_text), MAX_AGE_LIMIT)
    return StsPolicy(mode, max_age, tuple(dict.fromkeys(mx)), tuple(lines))


def _mx_pattern(value: str) -> str:
    try:
        return mx_pattern(value)
    except DomainError as exc:
        raise PolicyError(f"invalid mx pattern {value!r}: {exc}") from None


def mx_matches(pattern: str, host: str) -> bool:
    """§4.1: exact (case-insensitive), or '*.' standing for exactly one leftmost label."""
    host = canonical(host)
    pattern = canonical(pattern)
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return host == pattern


# What this daemon keeps of a policy (the RFC sets no limit): the memory bound per cached domain.
MAX_MX_LINES = 100
MAX_POLICY_LINES = 200


def checked_policy(body: bytes) -> StsPolicy:
    """The policy in ``body`` if it parses and is within this daemon's bounds."""
    policy = parse_policy(body)
    _check_bounds(policy)
    return policy


def _check_bounds(policy: StsPolicy) -> None:
    if len(policy.mx) > MAX_MX_LINES:
        raise PolicyError(
            f"policy has {len(policy.mx)} mx lines (this daemon takes {MAX_MX_LINES})"
        )
    if len(policy.lines) > MAX_POLICY_LINES:
        raise PolicyError(
            f"policy has {len(policy.lines)} lines (this daemon takes {MAX_POLICY_LINES})"
        )
