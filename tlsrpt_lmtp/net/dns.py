"""Small DNS helpers shared by the policy daemon, DKIM and `check` (all use dnspython)."""

from __future__ import annotations

import ipaddress
from typing import TypeVar

import dns.exception
import dns.nameserver
import dns.resolver

R = TypeVar("R", bound=dns.resolver.BaseResolver)


def make_resolver(kind: type[R], nameservers: tuple[str, ...], timeout: float) -> R:
    """A dnspython resolver (``dns.resolver.Resolver`` or ``dns.asyncresolver.Resolver``);
    nameservers as 'IP', 'IP:PORT' or '[IPv6]:PORT', none meaning /etc/resolv.conf."""
    resolver = kind(configure=not nameservers)
    if nameservers:
        resolver.nameservers = [nameserver(ns) for ns in nameservers]
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)
    return resolver


def nameserver(text: str) -> dns.nameserver.Nameserver:
    """A configured nameserver ('IP', 'IP:PORT', '[IPv6]:PORT') for a dnspython resolver."""
    return dns.nameserver.Do53Nameserver(*parse_nameserver(text))


def parse_nameserver(text: str) -> tuple[str, int]:
    """'IP', 'IP:PORT' or '[IPv6]:PORT' → (address, port); ValueError if not an address."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    host = host.strip("[]")
    ipaddress.ip_address(host)
    number = int(port or 53)
    if not 0 < number < 65536:
        raise ValueError(f"port {number} out of range")
    return host, number


def why(exc: dns.exception.DNSException) -> str:
    """A DNS failure in a few words, for logs and findings."""
    if isinstance(exc, dns.resolver.LifetimeTimeout | dns.exception.Timeout):
        return "timeout"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no nameserver answered (SERVFAIL or refused)"
    return type(exc).__name__
