"""RFC 8461 checklist items that need DNS and HTTPS, against the loopback test internet.

The service runs with the real dnspython resolver and the real HTTPS fetcher, pointed at
tests/netsim's DNS server and test CA; only the clock is the test's, so max_age and the
5-minute retry rule can be crossed without waiting. Test names carry the checklist number.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from dns.asyncresolver import Resolver as AsyncResolver

from tests.support.events import plain
from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.net.dns import make_resolver
from tlsrpt_lmtp.sts.cache import PolicyCache
from tlsrpt_lmtp.sts.dnsclient import DnsClient
from tlsrpt_lmtp.sts.fetch import Fetcher, tls_context
from tlsrpt_lmtp.sts.netstring import Decoder, encode
from tlsrpt_lmtp.sts.policy import Mode
from tlsrpt_lmtp.sts.reply import Answer, Kind, postfix_reply
from tlsrpt_lmtp.sts.server import ReplyOptions, line_handler, listen, listen_socketmap
from tlsrpt_lmtp.sts.service import PolicyService

if TYPE_CHECKING:
    from tests.netsim.fixtures import NetSim

pytest_plugins = ["tests.netsim.fixtures"]

T = TypeVar("T")
DAY = 86400


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Rig:
    """A PolicyService wired to netsim, with its events recorded."""

    def __init__(self, netsim: NetSim, cache_file: Path, *, dane: bool = False) -> None:
        self.netsim = netsim
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []  # as the event log has them
        self.cache_file = cache_file
        self.service = self._build(dane)

    def _build(self, dane: bool) -> PolicyService:
        resolver = make_resolver(AsyncResolver, (self.netsim.nameserver,), 2.0)
        dane_resolver = (
            make_resolver(AsyncResolver, (self.netsim.require_resolver(),), 2.0) if dane else None
        )
        dns = DnsClient(resolver, dane_resolver)
        context = tls_context(str(self.netsim.ca_file))
        # The test internet's policy hosts are on 127.0.0.x: the lab setting.
        fetcher = Fetcher(dns.addresses, context, timeout=2.0, allow_private=True)
        cache = PolicyCache(self.cache_file)
        return PolicyService(dns, fetcher, cache, self.record, clock=self.clock)

    def restart(self, *, dane: bool = False) -> None:
        """A new process: nothing in memory, the same cache file."""
        self.service.cache.close()
        clock = self.clock
        self.service = self._build(dane)
        self.service.clock = clock

    def lookup(self, key: str) -> Answer:
        return run(self.service.lookup(key))

    def record(self, event: Event) -> None:
        self.events.append(plain(event))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]

    def fetches(self, domain: str) -> int:
        return len(self.netsim.https.requests_for(domain))


@pytest.fixture
def rig(netsim: NetSim, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(netsim, tmp_path / "policy-cache.sqlite3")
    yield r
    r.service.cache.close()


def enforced(answer: Answer) -> bool:
    return answer.kind is Kind.POLICY and answer.enforced(enforce_testing=False)


# --- Discovery (items 1, 3) -----------------------------------------------------------------


def test_item_01_txt_found_through_a_cname(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("cname.test", mx=["mx.cname.test"])
    netsim.dns.remove("_mta-sts.cname.test")
    netsim.dns.set("_mta-sts.cname.test", "CNAME", "_mta-sts.elsewhere.test.")
    netsim.dns.set("_mta-sts.elsewhere.test", "TXT", "v=STSv1; id=viacname;")
    answer = rig.lookup("cname.test")
    assert enforced(answer) and answer.policy_id == "viacname"


def test_item_03_two_records_mean_no_policy_and_no_fetch(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("two.test", txt=["v=STSv1; id=a;", "v=STSv1; id=b;"])
    assert rig.lookup("two.test").kind is Kind.NO_POLICY
    assert rig.fetches("two.test") == 0


# --- HTTPS fetch (items 8-12) ---------------------------------------------------------------


def test_item_08_policy_host_is_built_from_the_domain_not_the_cname_target(
    netsim: NetSim, rig: Rig
) -> None:
    netsim.publish_sts("alias.test")
    netsim.dns.remove("_mta-sts.alias.test")
    netsim.dns.set("_mta-sts.alias.test", "CNAME", "_mta-sts.provider.test.")
    netsim.dns.set("_mta-sts.provider.test", "TXT", "v=STSv1; id=p1;")
    assert enforced(rig.lookup("alias.test"))
    [request] = netsim.https.requests_for("alias.test")
    assert request.sni == "mta-sts.alias.test"
    assert request.path == "/.well-known/mta-sts.txt" and request.method == "GET"
    assert netsim.https.requests_for("provider.test") == []


@pytest.mark.parametrize("cert", ["wrong_name", "rogue", "expired", "self_signed", "no_san"])
def test_item_09_invalid_policy_host_certificates_mean_no_policy(
    netsim: NetSim, rig: Rig, cert: Any
) -> None:
    netsim.publish_sts("badcert.test", cert=cert)
    answer = rig.lookup("badcert.test")
    assert answer.kind is Kind.NO_POLICY
    [error] = rig.named("sts.fetch_error")
    assert error["result_type"] == "sts-webpki-invalid"
    assert error["domain"] == "badcert.test"


def test_item_09_sni_is_the_policy_host_and_tls_is_at_least_1_2(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("sni.test")
    assert enforced(rig.lookup("sni.test"))
    assert "mta-sts.sni.test" in netsim.https.sni_seen
    [request] = netsim.https.requests_for("sni.test")
    assert request.tls_version in ("TLSv1.2", "TLSv1.3")
    assert tls_context(None).minimum_version is ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("site", "reason"),
    [
        ({"status": 404}, "HTTP 404"),
        ({"status": 301, "location": "https://mta-sts.other.test/x"}, "HTTP 301"),
        ({"status": 500}, "HTTP 500"),
        ({"content_type": "text/html"}, "not text/plain"),
        ({"content_type": None}, "untyped"),
        ({"oversize": 70_000}, "larger than"),
    ],
)
def test_items_10_11_12_bad_responses_mean_no_policy(
    netsim: NetSim, rig: Rig, site: dict[str, Any], reason: str
) -> None:
    netsim.publish_sts("bad.test", **site)
    assert rig.lookup("bad.test").kind is Kind.NO_POLICY
    [error] = rig.named("sts.fetch_error")
    assert error["result_type"] == "sts-policy-fetch-error"
    assert reason in error["reason"]
    assert netsim.https.requests_for("other.test") == []  # the redirect was not followed


def test_item_11_charset_parameter_is_fine(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("charset.test", content_type="text/plain; charset=utf-8")
    assert enforced(rig.lookup("charset.test"))


def test_item_12_slow_policy_host_times_out(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("slow.test", host_state="hang")
    assert rig.lookup("slow.test").kind is Kind.NO_POLICY
    [error] = rig.named("sts.fetch_error")
    assert "timed out" in error["reason"]


def test_item_15_invalid_policy_file_is_sts_policy_invalid(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("invalid.test", policy="version: STSv1\nmode: enforce\nmax_age: 60\n")
    assert rig.lookup("invalid.test").kind is Kind.NO_POLICY
    [error] = rig.named("sts.fetch_error")
    assert error["result_type"] == "sts-policy-invalid" and "no mx" in error["reason"]


# --- Caching (items 13, 17-23) --------------------------------------------------------------


def test_item_13_failed_fetch_is_retried_at_most_every_5_minutes(netsim: NetSim, rig: Rig) -> None:
    site = netsim.publish_sts("flaky.test", status=503)
    assert rig.lookup("flaky.test").kind is Kind.NO_POLICY
    site.status = 200
    for _ in range(3):
        rig.clock.advance(70)  # past the "no policy" memory of a DNS/fetch failure
        rig.service.cache.set_no_policy("flaky.test", 0)
        assert rig.lookup("flaky.test").kind is Kind.NO_POLICY
    assert rig.fetches("flaky.test") == 1
    rig.clock.advance(300)
    assert enforced(rig.lookup("flaky.test"))
    assert rig.fetches("flaky.test") == 2


def test_items_17_18_cached_until_max_age_same_id_means_no_fetch(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("cached.test", max_age=DAY)
    assert enforced(rig.lookup("cached.test"))
    for _ in range(5):
        rig.clock.advance(DAY / 10)
        assert enforced(rig.lookup("cached.test"))
    assert rig.fetches("cached.test") == 1


def test_a_cache_hit_answer_is_built_once_per_policy(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("memo.test", max_age=DAY)
    fetched = rig.lookup("memo.test")
    hit = rig.service.cached_answer("memo.test")
    assert hit is fetched and rig.service.cached_answer("memo.test") is hit

    async def after_a_new_policy() -> Answer | None:
        netsim.publish_sts("memo.test", mode="testing", max_age=DAY, id="two")
        rig.clock.advance(rig.service.timing.recheck_max + 1)
        assert await rig.service.lookup("memo.test") is hit  # from cache; re-check spawned
        await rig.service.settle()
        return rig.service.cached_answer("memo.test")

    after = run(after_a_new_policy())
    assert after is not None and after is not hit
    assert after.policy_id == "two" and after.policy is not None
    assert after.policy.mode is Mode.TESTING


def test_item_18_new_txt_id_fetches_the_new_policy(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("change.test", mode="enforce", id="one")
    assert enforced(rig.lookup("change.test"))

    async def recheck_after_id_change() -> Answer:
        netsim.publish_sts("change.test", mode="testing", id="two")
        rig.clock.advance(rig.service.timing.recheck_max + 1)
        first = await rig.service.lookup("change.test")  # answered from cache; recheck spawned
        assert first.policy_id == "one"
        await rig.service.settle()
        return await rig.service.lookup("change.test")

    answer = run(recheck_after_id_change())
    assert answer.policy_id == "two" and answer.policy is not None
    assert answer.policy.mode is Mode.TESTING
    [changed] = rig.named("sts.policy_changed")
    assert changed["changes"]["policy_id"] == ["one", "two"]
    assert changed["changes"]["mode"] == ["enforce", "testing"]


def test_item_19_valid_txt_but_fetch_fails_without_cache_is_no_policy(
    netsim: NetSim, rig: Rig
) -> None:
    netsim.publish_sts("down.test", host_state="down")
    answer = rig.lookup("down.test")
    assert answer.kind is Kind.NO_POLICY
    assert postfix_reply(answer, tlsrpt=False, enforce_testing=False) == "NOTFOUND "


@pytest.mark.parametrize("failure", ["https-down", "txt-gone", "dns-servfail", "dns-timeout"])
def test_item_20_cached_policy_applies_while_dns_or_https_fail(
    netsim: NetSim, rig: Rig, failure: str
) -> None:
    netsim.publish_sts("sticky.test", max_age=DAY)
    assert enforced(rig.lookup("sticky.test"))
    if failure == "https-down":
        netsim.set_sts_host("sticky.test", "down")
    elif failure == "txt-gone":
        netsim.dns.remove("_mta-sts.sticky.test")
    elif failure == "dns-servfail":
        netsim.dns.fail("_mta-sts.sticky.test", "servfail")
    else:
        netsim.dns.fail("_mta-sts.sticky.test", "timeout")
    rig.restart()  # and nothing in memory: the persisted cache alone must carry it

    async def later() -> Answer:
        rig.clock.advance(DAY * 0.9)
        await rig.service.lookup("sticky.test")
        await rig.service.settle()
        return await rig.service.lookup("sticky.test")

    assert enforced(run(later()))
    rig.clock.advance(DAY * 0.2)  # now past max_age: the policy is gone
    assert rig.lookup("sticky.test").kind is Kind.NO_POLICY


def test_items_21_22_proactive_refresh_and_its_failure_is_logged(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("refresh.test", max_age=DAY)
    assert enforced(rig.lookup("refresh.test"))
    rig.clock.advance(DAY / 2 + 1)
    due = rig.service.due_for_refresh(rig.clock())
    assert [e.domain for e in due] == ["refresh.test"]
    run(rig.service.refresh(due[0]))
    assert rig.fetches("refresh.test") == 2  # fetched again although the TXT id is the same
    assert rig.service.due_for_refresh(rig.clock()) == []
    assert enforced(rig.lookup("refresh.test"))  # still mailed: stays in the refresh window
    rig.clock.advance(DAY / 2 + 1)
    netsim.set_sts_host("refresh.test", "down")
    [entry] = rig.service.due_for_refresh(rig.clock())
    run(rig.service.refresh(entry))
    [failed] = rig.named("sts.refresh_failed")
    assert failed["domain"] == "refresh.test" and failed["mode"] == "enforce"
    assert enforced(rig.lookup("refresh.test"))  # still applied until max_age


def test_item_22_refresh_failure_of_a_none_policy_is_not_an_alert(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("quiet.test", mode="none", max_age=DAY)
    assert rig.lookup("quiet.test").kind is Kind.POLICY
    rig.clock.advance(DAY / 2 + 1)
    netsim.set_sts_host("quiet.test", "down")
    [entry] = rig.service.due_for_refresh(rig.clock())
    run(rig.service.refresh(entry))
    assert rig.named("sts.refresh_failed") == []


def test_item_23_fetched_none_replaces_an_enforce_policy(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("retire.test", mode="enforce", id="1")
    assert enforced(rig.lookup("retire.test"))
    netsim.publish_sts("retire.test", mode="none", id="2")

    async def after() -> Answer:
        rig.clock.advance(rig.service.timing.recheck_max + 1)
        await rig.service.lookup("retire.test")
        await rig.service.settle()
        return await rig.service.lookup("retire.test")

    answer = run(after())
    assert not enforced(answer)
    assert postfix_reply(answer, tlsrpt=True, enforce_testing=True) == "NOTFOUND "


def test_concurrent_lookups_share_one_query_and_one_fetch(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("busy.test")

    async def many() -> list[Answer]:
        return await asyncio.gather(*(rig.service.lookup("busy.test") for _ in range(25)))

    answers = run(many())
    assert all(enforced(a) for a in answers)
    assert len(netsim.dns.queries_for("_mta-sts.busy.test", "TXT")) == 1
    assert rig.fetches("busy.test") == 1
    assert len(rig.named("sts.policy_fetched")) == 1


def test_no_policy_is_remembered_then_asked_again(netsim: NetSim, rig: Rig) -> None:
    assert rig.lookup("plain.test").kind is Kind.NO_POLICY
    assert rig.lookup("plain.test").kind is Kind.NO_POLICY
    assert len(netsim.dns.queries_for("_mta-sts.plain.test", "TXT")) == 1
    rig.clock.advance(rig.service.timing.negative_max + 1)
    netsim.publish_sts("plain.test")
    assert enforced(rig.lookup("plain.test"))


# --- DANE is not overridden (item 30) -------------------------------------------------------


@pytest.fixture
def dane_rig(netsim: NetSim, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(netsim, tmp_path / "policy-cache.sqlite3", dane=True)
    yield r
    r.service.cache.close()


def test_item_30_dnssec_validated_tlsa_hands_over_to_dane(netsim: NetSim, dane_rig: Rig) -> None:
    netsim.mail_domain("dane.test", {"mx1.dane.test": "good"})
    netsim.publish_tlsa("mx1.dane.test")
    netsim.publish_sts("dane.test", mx=["mx1.dane.test"])
    answer = dane_rig.lookup("dane.test")
    assert answer.kind is Kind.DANE
    assert postfix_reply(answer, tlsrpt=True, enforce_testing=False) == "NOTFOUND "


def test_item_30_tlsa_in_an_unsigned_zone_does_not_count(netsim: NetSim, dane_rig: Rig) -> None:
    netsim.dns.add_zone("insecure.test", "unsigned")
    netsim.mail_domain("insecure.test", {"mx1.insecure.test": "good"})
    netsim.publish_tlsa("mx1.insecure.test")
    netsim.publish_sts("insecure.test", mx=["mx1.insecure.test"])
    assert enforced(dane_rig.lookup("insecure.test"))


def test_item_30_bogus_dnssec_defers_instead_of_downgrading(netsim: NetSim, dane_rig: Rig) -> None:
    netsim.mail_domain("bogus.test", {"mx1.bogus.test": "good"})
    netsim.publish_sts("bogus.test", mx=["mx1.bogus.test"])
    netsim.dns.fail("bogus.test", "bogus", "MX")
    answer = dane_rig.lookup("bogus.test")
    assert answer.kind is Kind.TEMP
    assert postfix_reply(answer, tlsrpt=False, enforce_testing=False).startswith("TEMP ")


# --- The socket adapters, over real loopback sockets ----------------------------------------


def test_socketmap_answers_pipelined_requests_in_order(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("sm.test", mx=["mx1.sm.test", "*.pool.sm.test"])
    options = ReplyOptions()

    async def exchange() -> tuple[bytes, bytes]:
        server = await listen_socketmap("127.0.0.1:0", rig.service, options)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        keys = ["sts sm.test", "sts .sm.test", "sts-tlsrpt sm.test", "sts [192.0.2.1]"]
        writer.write(b"".join(encode(k) for k in keys))
        replies = b""
        while replies.count(b",") < 4 or not replies.endswith(b","):
            replies += await asyncio.wait_for(reader.read(65536), 10)
        writer.write(b"99999:")  # over the request limit: the server hangs up
        closed = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        server.close()
        return replies, closed

    replies, closed = run(exchange())
    decoded = Decoder(limit=100_000).feed(replies)
    assert decoded[0] == b"OK secure match=mx1.sm.test:.pool.sm.test servername=hostname"
    assert decoded[1] == b"NOTFOUND "
    assert decoded[2].startswith(b"OK secure ") and b"mx_host_pattern=*.pool.sm.test" in decoded[2]
    assert decoded[3] == b"NOTFOUND "
    assert closed == b""


def test_exim_line_protocol(netsim: NetSim, rig: Rig) -> None:
    netsim.publish_sts("ex.test", mx=["mx1.ex.test"])

    async def ask(key: bytes) -> bytes:
        server = await listen("127.0.0.1:0", line_handler(rig.service, ReplyOptions()))
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(key)
        answer = await asyncio.wait_for(reader.read(), 10)  # the server closes after one line
        writer.close()
        server.close()
        return answer

    assert run(ask(b"ex.test\n")).startswith(b'mode=enforce domain=ex.test mx="mx1.ex.test" ')
    assert run(ask(b"nothing.test\n")) == b"mode=none\n"


def test_idn_keys_are_looked_up_as_uts46_a_labels(netsim: NetSim, rig: Rig) -> None:
    # straße.test is xn--strae-oqa.test (IDNA 2008), never strasse.test (IDNA 2003)
    netsim.publish_sts("xn--strae-oqa.test", mx=["mx1.xn--strae-oqa.test"])
    netsim.publish_sts("strasse.test", mode="none")
    answer = rig.lookup("Straße.TEST.")
    assert enforced(answer) and answer.policy_id == "20261123"
    assert rig.fetches("xn--strae-oqa.test") == 1 and rig.fetches("strasse.test") == 0
    assert enforced(rig.lookup("xn--strae-oqa.test"))  # the same cache entry
    assert rig.fetches("xn--strae-oqa.test") == 1
