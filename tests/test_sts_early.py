"""Early address lookups (issue 14 item 1): a discovery whose TXT answer is slow looks up
`mta-sts.<domain>`'s addresses meanwhile, through the loopback test internet.

The lookup is DNS only and is taken by the fetch (no second query), dropped when the TXT
record says there is no policy or fails, and its addresses pass the same private-address
guard as any other.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dns.asyncresolver import Resolver as AsyncResolver

from tests.support.events import plain
from tlsrpt_lmtp.net.dns import make_resolver
from tlsrpt_lmtp.sts.cache import PolicyCache
from tlsrpt_lmtp.sts.dnsclient import DnsClient
from tlsrpt_lmtp.sts.fetch import Fetcher, tls_context
from tlsrpt_lmtp.sts.reply import Answer, Kind
from tlsrpt_lmtp.sts.service import PolicyService, Timing

if TYPE_CHECKING:
    from tests.netsim.fixtures import NetSim

pytest_plugins = ["tests.netsim.fixtures"]


class Rig:
    def __init__(
        self, netsim: NetSim, tmp_path: Path, early: float | None, allow: bool = True
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self.dns = DnsClient(make_resolver(AsyncResolver, (netsim.nameserver,), 2.0), None)
        ctx = tls_context(str(netsim.ca_file))
        fetcher = Fetcher(self.dns.addresses, ctx, timeout=2.0, allow_private=allow)
        cache = PolicyCache(tmp_path / "cache.sqlite3")
        timing = Timing(early_addresses=early)
        self.service = PolicyService(
            self.dns, fetcher, cache, lambda e: self.events.append(plain(e)), timing=timing
        )

    def lookup(self, domain: str) -> Answer:
        async def run() -> Answer:
            answer = await asyncio.wait_for(self.service.lookup(domain), 30)
            await asyncio.sleep(0)  # let a cancelled early lookup finish cancelling
            return answer

        return asyncio.run(run())


def address_queries(netsim: NetSim, domain: str) -> int:
    return len(netsim.dns.queries_for(f"mta-sts.{domain}", "A"))


def test_early_lookup_is_taken_by_the_fetch(netsim: NetSim, tmp_path: Path) -> None:
    netsim.publish_sts("early.test")
    rig = Rig(netsim, tmp_path, early=0.0)
    assert rig.lookup("early.test").kind is Kind.POLICY
    assert address_queries(netsim, "early.test") == 1
    assert len(netsim.https.requests_for("early.test")) == 1
    assert rig.dns._early == {}


def test_slow_txt_answer_overlaps_the_address_lookup(netsim: NetSim, tmp_path: Path) -> None:
    netsim.publish_sts("slowtxt.test")
    netsim.dns.fail("_mta-sts.slowtxt.test", "delay", "TXT", delay=1.0)
    rig = Rig(netsim, tmp_path, early=Timing().early_addresses)
    assert rig.lookup("slowtxt.test").kind is Kind.POLICY
    [txt] = netsim.dns.queries_for("_mta-sts.slowtxt.test", "TXT")
    [a] = netsim.dns.queries_for("mta-sts.slowtxt.test", "A")
    assert a.time < txt.time + 1.0  # asked before the TXT answer was even sent


def test_early_lookup_is_dropped_without_a_policy(netsim: NetSim, tmp_path: Path) -> None:
    netsim.dns.set("mta-sts.notxt.test", "A", netsim.https_address)
    rig = Rig(netsim, tmp_path, early=0.0)
    assert rig.lookup("notxt.test").kind is Kind.NO_POLICY
    assert netsim.https.requests_for("notxt.test") == []
    assert rig.dns._early == {}


def test_early_lookup_is_dropped_when_the_txt_lookup_fails(netsim: NetSim, tmp_path: Path) -> None:
    netsim.publish_sts("txtfail.test")
    netsim.dns.fail("_mta-sts.txtfail.test", "servfail")
    rig = Rig(netsim, tmp_path, early=0.0)
    answer = rig.lookup("txtfail.test")
    assert answer.kind is Kind.NO_POLICY and "failed" in (answer.reason or "")
    assert netsim.https.requests_for("txtfail.test") == []
    assert rig.dns._early == {}


def test_early_addresses_pass_the_private_address_guard(netsim: NetSim, tmp_path: Path) -> None:
    netsim.publish_sts("guarded.test")
    rig = Rig(netsim, tmp_path, early=0.0, allow=False)
    assert rig.lookup("guarded.test").kind is Kind.NO_POLICY
    [error] = [e for e in rig.events if e["event"] == "sts.fetch_error"]
    assert "loopback" in error["reason"] and "allow_private_policy_hosts" in error["reason"]
    assert netsim.https.requests_for("guarded.test") == []


def test_without_early_lookups_one_after_the_other(netsim: NetSim, tmp_path: Path) -> None:
    netsim.publish_sts("serial.test")
    netsim.dns.fail("_mta-sts.serial.test", "delay", "TXT", delay=0.2)
    rig = Rig(netsim, tmp_path, early=None)
    assert rig.lookup("serial.test").kind is Kind.POLICY
    [txt] = netsim.dns.queries_for("_mta-sts.serial.test", "TXT")
    [a] = netsim.dns.queries_for("mta-sts.serial.test", "A")
    assert a.time >= txt.time + 0.2
