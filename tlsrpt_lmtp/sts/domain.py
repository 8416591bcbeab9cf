"""Turning a lookup key into a policy domain (RFC 8461 §3.4), sans-I/O."""

from __future__ import annotations

import functools
import ipaddress

from tlsrpt_lmtp.core.names import to_ascii


class DomainError(ValueError):
    pass


def to_a_label(name: str) -> str:
    """Lower-case A-label form of a host name (``names.to_ascii``) with two labels at least and
    a TLD that is not numeric; raises DomainError if it is not one."""
    result = to_ascii(name)
    if result is None:
        raise DomainError(f"{name.strip()[:300]!r} is not a valid host name")
    labels = result.split(".")
    if len(labels) < 2:
        raise DomainError(f"{result!r} is not a host name")
    if labels[-1].isdigit():
        raise DomainError(f"{result!r} looks like an address")
    return result


def mx_pattern(value: str) -> str:
    """An MTA-STS mx pattern (RFC 8461 §4.1: a host name, or "*." and one) in A-label form;
    raises DomainError if it is not one."""
    wildcard = value.startswith("*.")
    name = to_a_label(value[2:] if wildcard else value)
    return f"*.{name}" if wildcard else name


@functools.lru_cache(maxsize=4096)
def policy_domain(key: str) -> str | None:
    """The domain to look up for a Postfix/Exim key, or None when there is no MTA-STS for it.

    None for parent-domain keys ('.example.com', which Postfix tries after the domain
    itself and which MTA-STS never applies to, §3.4), address literals and non-names.
    '[host]:port' (a nexthop without MX lookup) is the host's own domain.
    """
    key = key.strip()
    if not key or key.startswith("."):
        return None
    if key.startswith("["):
        host, sep, _ = key[1:].partition("]")
        if not sep:
            return None
        key = host
    elif key.count(":") == 1:
        key = key.partition(":")[0]
    if ":" in key or key[-1:].isdigit():  # only then can it be an address literal
        try:
            ipaddress.ip_address(key.removeprefix("ipv6:").removeprefix("IPv6:"))
            return None
        except ValueError:
            pass
    try:
        return to_a_label(key)
    except DomainError:
        return None
