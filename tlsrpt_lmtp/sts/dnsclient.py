"""DNS for the policy daemon: TXT discovery and addresses through the lean stub client
(sts.stub) when the nameservers are plain DNS; DANE presence (DNSSEC) through dnspython."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.nameserver
import dns.rdatatype
import dns.resolver

from tlsrpt_lmtp.core.dnstext import join_rr
from tlsrpt_lmtp.net.dns import why
from tlsrpt_lmtp.sts import stub


class Dane(StrEnum):
    PRESENT = "present"  # DNSSEC-validated usable TLSA on the MX hosts
    ABSENT = "absent"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TxtLookup:
    records: tuple[bytes, ...]
    error: str | None = None  # set when the answer is not definitive (timeout, SERVFAIL)
    ttl: int = 300


class DnsClient:
    def __init__(
        self, resolver: dns.asyncresolver.Resolver, dane: dns.asyncresolver.Resolver | None
    ):
        self._r = resolver
        self._dane = dane
        self._stub = _stub_for(resolver)
        # Address lookups started before anyone asked (start_addresses), by host name.
        self._early: dict[str, asyncio.Task[list[str]]] = {}
        if dane is not None:
            dane.use_edns(0, dns.flags.DO, 1232)
            dane.flags = dns.flags.RD | dns.flags.AD

    async def sts_txt(self, domain: str) -> TxtLookup:
        return await self.txt(f"_mta-sts.{domain}")

    async def txt(self, name: str) -> TxtLookup:
        """A name's TXT records, each RR's strings joined; ``error`` unless definitive."""
        if self._stub is not None:
            try:
                found = await self._stub.query(name, stub.TXT)
            except stub.DnsError as exc:
                return TxtLookup((), error=f"DNS lookup of {name} TXT failed: {exc.reason}")
            txt = tuple(v for v in found.values if isinstance(v, bytes))
            return TxtLookup(txt) if found.ttl is None else TxtLookup(txt, ttl=found.ttl)
        try:
            answer = await self._r.resolve(f"{name}.", "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return TxtLookup(())
        except dns.exception.DNSException as exc:
            return TxtLookup((), error=f"DNS lookup of {name} TXT failed: {why(exc)}")
        assert answer.rrset is not None
        records = tuple(join_rr(list(rr.strings)) for rr in answer.rrset)
        return TxtLookup(records, ttl=answer.rrset.ttl)

    def start_addresses(self, host: str) -> None:
        """Look up `host`'s addresses now; the next addresses(host) takes the answer. Each
        call must be followed by addresses(host) or forget_addresses(host)."""
        if host not in self._early:
            self._early[host] = asyncio.ensure_future(self._addresses(host))

    def forget_addresses(self, host: str) -> None:
        """Drop an address lookup start_addresses began, if nobody took it."""
        task = self._early.pop(host, None)
        if task is None:
            return
        if not task.done():
            task.cancel()
        elif not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning for a failure

    async def addresses(self, host: str) -> list[str]:
        task = self._early.pop(host, None)
        if task is not None:
            return await task
        return await self._addresses(host)

    async def _addresses(self, host: str) -> list[str]:
        if self._stub is not None:
            return await self._stub_addresses(self._stub, host)
        found: list[str] = []
        errors: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._r.resolve(f"{host}.", rdtype)
                found += [rr.to_text() for rr in answer]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                errors.append(why(exc))
        if not found and errors:
            raise OSError(f"cannot resolve {host}: {errors[0]}")
        return found

    async def _stub_addresses(self, client: stub.Stub, host: str) -> list[str]:
        answers = await asyncio.gather(
            client.query(host, stub.A), client.query(host, stub.AAAA), return_exceptions=True
        )
        found: list[str] = []
        errors: list[str] = []
        for answer in answers:
            if isinstance(answer, stub.DnsError):
                errors.append(answer.reason)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                found += [v for v in answer.values if isinstance(v, str)]
        if not found and errors:
            raise OSError(f"cannot resolve {host}: {errors[0]}")
        return found

    @property
    def checks_dane(self) -> bool:
        return self._dane is not None

    async def dane(self, domain: str) -> Dane:
        """PRESENT if the domain's MX hosts have DNSSEC-validated usable TLSA (RFC 7672)."""
        if self._dane is None:
            return Dane.ABSENT
        try:
            mx = await self._secure(f"{domain}.", "MX")
            if mx is None:
                return Dane.ABSENT
            hosts = [rr.exchange.to_text().rstrip(".") for rr in mx] or [domain]
            for host in hosts:
                tlsa = await self._secure(f"_25._tcp.{host}.", "TLSA")
                if tlsa and any(rr.usage in (2, 3) for rr in tlsa):
                    return Dane.PRESENT
        except dns.exception.DNSException:
            return Dane.ERROR
        return Dane.ABSENT

    async def _secure(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """The answer if DNSSEC-validated (AD) and non-empty, else None."""
        assert self._dane is not None
        try:
            answer = await self._dane.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None
        if not answer.response.flags & dns.flags.AD or answer.rrset is None:
            return None
        return answer


def _stub_for(resolver: dns.asyncresolver.Resolver) -> stub.Stub | None:
    """The lean client for the resolver's nameservers, if they are all plain DNS."""
    servers: list[tuple[str, int]] = []
    for ns in resolver.nameservers:
        if isinstance(ns, str):
            servers.append((ns, resolver.port))
        elif isinstance(ns, dns.nameserver.Do53Nameserver):
            servers.append((ns.address, ns.port))
        else:
            return None
    if not servers:
        return None
    return stub.Stub(servers, timeout=resolver.timeout, lifetime=resolver.lifetime)
