"""Asking the network about a domain (DNS, the HTTPS policy, the MX hosts): the I/O side.

Reuses the policy daemon's adapters, so the check sees what the daemon would see:
``sts.dnsclient`` (dnspython, the configured name servers and timeout) and ``sts.fetch``
(the strict HTTPS policy fetch and its TLS context, also used for the STARTTLS probes).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from tlsrpt_lmtp.check.observed import MxHost, MxLookup, Observations, PolicyFetch
from tlsrpt_lmtp.check.probe import probe
from tlsrpt_lmtp.core.names import canonical
from tlsrpt_lmtp.net.dns import make_resolver, why
from tlsrpt_lmtp.sts.dnsclient import DnsClient
from tlsrpt_lmtp.sts.fetch import WELL_KNOWN, Fetcher, FetchError, tls_context


@dataclass(frozen=True, slots=True)
class Settings:
    nameservers: tuple[str, ...] = ()  # empty: /etc/resolv.conf
    ca_file: str | None = None  # empty: the system's trust store
    dns_timeout: float = 5.0
    fetch_timeout: float = 10.0
    allow_private_policy_hosts: bool = False  # as the policy daemon: refused by default
    smtp_timeout: float = 15.0  # per probed address, the whole SMTP + TLS dialogue
    helo: str = "localhost"
    max_addresses: int = 4  # probed per MX host


class Network:
    """The adapters for one run, built from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.resolver = make_resolver(
            dns.asyncresolver.Resolver, settings.nameservers, settings.dns_timeout
        )
        self.dns = DnsClient(self.resolver, None)
        self.context: ssl.SSLContext = tls_context(settings.ca_file)
        self.fetcher = Fetcher(
            self.dns.addresses,
            self.context,
            timeout=settings.fetch_timeout,
            allow_private=settings.allow_private_policy_hosts,
        )

    async def observe(self, domain: str) -> Observations:
        tlsrpt, sts, policy, mx = await asyncio.gather(
            self.dns.txt(f"_smtp._tls.{domain}"),
            self.dns.sts_txt(domain),
            self.policy(domain),
            self.mx(domain),
        )
        return Observations(domain, tlsrpt, sts, policy, mx)

    async def policy(self, domain: str) -> PolicyFetch:
        url = f"https://mta-sts.{domain}{WELL_KNOWN}"
        try:
            body = await self.fetcher.fetch(domain)
        except FetchError as exc:
            return PolicyFetch(url, None, exc.reason, exc.result_type)
        return PolicyFetch(url, body)

    async def mx_names(self, domain: str) -> MxLookup:
        """The MX hosts (names and preferences only, nothing resolved or probed)."""
        try:
            answer = await self.resolver.resolve(f"{domain}.", "MX")
        except dns.resolver.NXDOMAIN:
            return MxLookup(error=f"{domain} does not exist (NXDOMAIN)")
        except dns.resolver.NoAnswer:
            return MxLookup((MxHost(domain, 0),), implicit=True)
        except dns.exception.DNSException as exc:
            return MxLookup(error=f"DNS lookup of {domain} MX failed: {why(exc)}")
        records = sorted({(rr.preference, canonical(rr.exchange.to_text())) for rr in answer})
        if any(not name for _, name in records):
            return MxLookup(null_mx=True)
        return MxLookup(tuple(MxHost(name, pref) for pref, name in records))

    async def mx(self, domain: str) -> MxLookup:
        names = await self.mx_names(domain)
        hosts = await asyncio.gather(*(self.mx_host(h) for h in names.hosts))
        return MxLookup(tuple(hosts), names.implicit, names.null_mx, names.error)

    async def mx_host(self, host: MxHost) -> MxHost:
        try:
            addresses = await self.dns.addresses(host.name)
        except OSError as exc:
            return MxHost(host.name, host.preference, error=str(exc))
        if not addresses:
            return MxHost(host.name, host.preference, error=f"{host.name} has no A/AAAA record")
        addresses = addresses[: self.settings.max_addresses]
        probes = await asyncio.gather(
            *(
                probe(
                    host.name,
                    address,
                    self.context,
                    timeout=self.settings.smtp_timeout,
                    helo=self.settings.helo,
                )
                for address in addresses
            )
        )
        return MxHost(host.name, host.preference, tuple(addresses), None, tuple(probes))


async def observe(domain: str, settings: Settings) -> Observations:
    return await Network(settings).observe(domain)
