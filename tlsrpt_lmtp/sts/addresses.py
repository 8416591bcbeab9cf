"""Which addresses a policy fetch may connect to, sans-I/O.

A policy host is named by whoever controls a domain's DNS, so without a guard any domain's
owner could make every relay running the daemon open TLS connections into the relay's own
loopback or internal network. Only globally reachable unicast addresses pass (IANA special
purpose registries); IPv4 embedded in IPv6 (mapped, NAT64) is judged as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from typing import Any

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_V4 = [
    (ipaddress.IPv4Network("0.0.0.0/8"), "unspecified"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback"),
    (ipaddress.IPv4Network("10.0.0.0/8"), "private"),
    (ipaddress.IPv4Network("172.16.0.0/12"), "private"),
    (ipaddress.IPv4Network("192.168.0.0/16"), "private"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local"),
    (_CGNAT, "shared (CGNAT)"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "multicast"),
]
_V6 = [
    (ipaddress.IPv6Network("::/128"), "unspecified"),
    (ipaddress.IPv6Network("::1/128"), "loopback"),
    (ipaddress.IPv6Network("fe80::/10"), "link-local"),
    (ipaddress.IPv6Network("fc00::/7"), "unique-local"),
    (ipaddress.IPv6Network("ff00::/8"), "multicast"),
]


def non_global(text: str) -> str | None:
    """Why `text` is not a globally reachable unicast address, or None when it is."""
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return "not an IP address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            why = non_global(str(embedded))
            return f"IPv4-embedded {why}" if why else None
        table: list[tuple[Any, str]] = _V6
    else:
        table = _V4
    for network, name in table:
        if address in network:
            return name
    if not address.is_global or address.is_private:
        return "reserved"  # documentation, benchmarking, future use, broadcast, ...
    return None
