"""The private-address guard of the policy fetch (issue 14 item 3), through the loopback test
internet: `mta-sts.<domain>` resolves to an address of each class that is not globally
reachable; the fetch is refused (an `sts.fetch_error` event, sts-policy-fetch-error, with the
class in the reason) unless `allow_private_policy_hosts` is on, and with it on the loopback
policy host (IPv4, IPv4-mapped IPv6 and ::1) serves the policy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from dns.asyncresolver import Resolver as AsyncResolver

from tests.netsim.https import PolicyServer
from tests.support.events import plain
from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.net.dns import make_resolver
from tlsrpt_lmtp.sts.addresses import non_global
from tlsrpt_lmtp.sts.cache import PolicyCache
from tlsrpt_lmtp.sts.dnsclient import DnsClient
from tlsrpt_lmtp.sts.fetch import Fetcher, tls_context
from tlsrpt_lmtp.sts.reply import Answer, Kind
from tlsrpt_lmtp.sts.service import PolicyService

if TYPE_CHECKING:
    from tests.netsim.fixtures import NetSim

pytest_plugins = ["tests.netsim.fixtures"]

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.10.1", "link-local"),
    ("100.64.0.1", "shared (CGNAT)"),
    ("224.0.0.251", "multicast"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.10", "reserved"),
    ("0.0.0.0", "unspecified"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fd12:3456::1", "unique-local"),
    ("ff02::fb", "multicast"),
    ("2001:db8::1", "reserved"),
    ("::ffff:10.0.0.1", "IPv4-embedded private"),
    ("::ffff:127.0.0.1", "IPv4-embedded loopback"),
    ("64:ff9b::a9fe:1", "IPv4-embedded link-local"),
]


class Guarded:
    def __init__(self, netsim: NetSim, tmp_path: Path, *, allow: bool, port: int = 443) -> None:
        self.events: list[dict[str, Any]] = []  # as the event log has them
        dns = DnsClient(make_resolver(AsyncResolver, (netsim.nameserver,), 2.0), None)
        context = tls_context(str(netsim.ca_file))
        fetcher = Fetcher(dns.addresses, context, timeout=2.0, port=port, allow_private=allow)
        self.service = PolicyService(dns, fetcher, PolicyCache(tmp_path / "c.sqlite3"), self.record)

    def record(self, event: Event) -> None:
        self.events.append(plain(event))

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "sts.fetch_error"]


def point(netsim: NetSim, domain: str, address: str) -> None:
    host = f"mta-sts.{domain}"
    netsim.dns.remove(host)
    netsim.dns.set(host, "AAAA" if ":" in address else "A", address)


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_non_global_policy_host_is_refused_by_default(
    netsim: NetSim, tmp_path: Path, address: str, why: str
) -> None:
    netsim.publish_sts("inside.test")
    point(netsim, "inside.test", address)
    rig = Guarded(netsim, tmp_path, allow=False)
    answer = asyncio.run(rig.service.lookup("inside.test"))
    assert answer.kind is Kind.NO_POLICY
    [error] = rig.errors()
    assert error["result_type"] == "sts-policy-fetch-error"
    assert f"{address} ({why})" in error["reason"]
    assert "no globally reachable address" in error["reason"]
    assert netsim.https.requests_for("inside.test") == []


def test_every_address_is_judged_none_is_tried(netsim: NetSim, tmp_path: Path) -> None:
    netsim.publish_sts("both.test")
    netsim.dns.set("mta-sts.both.test", "A", "10.0.0.7", netsim.https.host)
    netsim.dns.set("mta-sts.both.test", "AAAA", "fd00::7")
    rig = Guarded(netsim, tmp_path, allow=False)
    assert asyncio.run(rig.service.lookup("both.test")).kind is Kind.NO_POLICY
    [error] = rig.errors()
    assert "10.0.0.7 (private)" in error["reason"] and "fd00::7 (unique-local)" in error["reason"]
    assert f"{netsim.https.host} (loopback)" in error["reason"]


@pytest.mark.parametrize("form", ["ipv4", "ipv4-mapped"])
def test_lab_option_fetches_from_the_loopback_policy_host(
    netsim: NetSim, tmp_path: Path, form: str
) -> None:
    netsim.publish_sts("lab.test")
    host = netsim.https.host
    point(netsim, "lab.test", host if form == "ipv4" else f"::ffff:{host}")
    rig = Guarded(netsim, tmp_path, allow=True)
    answer = asyncio.run(rig.service.lookup("lab.test"))
    assert answer.kind is Kind.POLICY and rig.errors() == []
    assert len(netsim.https.requests_for("lab.test")) == 1


def test_lab_option_fetches_from_ipv6_loopback(netsim: NetSim, tmp_path: Path) -> None:
    """A second policy server of the test internet on [::1] (same test CA), its own port."""
    netsim.publish_sts("six.test")
    point(netsim, "six.test", "::1")

    async def lookups() -> tuple[Answer, Answer, int]:
        server = PolicyServer("::1", 0, netsim.https.pki)
        server.set_site(
            "six.test", body=b"version: STSv1\nmode: enforce\nmx: mx1.six.test\nmax_age: 86400\n"
        )
        await server.start()
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        try:
            refused = await Guarded(
                netsim, tmp_path / "off", allow=False, port=port
            ).service.lookup("six.test")
            allowed = await Guarded(netsim, tmp_path / "on", allow=True, port=port).service.lookup(
                "six.test"
            )
        finally:
            await server.stop()
        return refused, allowed, len(server.requests_for("six.test"))

    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    refused, allowed, requests = asyncio.run(lookups())
    assert refused.kind is Kind.NO_POLICY
    assert allowed.kind is Kind.POLICY and allowed.policy is not None
    assert allowed.policy.mx == ("mx1.six.test",)
    assert requests == 1  # only the allowed lookup reached it


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2001:4860:4860::8888", "::ffff:1.1.1.1", "64:ff9b::808:808"],
)
def test_globally_reachable_addresses_pass(address: str) -> None:
    assert non_global(address) is None


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_classification(address: str, why: str) -> None:
    assert non_global(address) == why
