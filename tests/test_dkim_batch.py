"""DKIM never holds the queue: the key lookups of a batch run at once, failures are remembered
for a while, and each message (and batch) has a time budget. Real DNS on 127.0.0.1 (the netsim
server, whose ``timeout`` fault never answers); time budgets against an injected clock."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from dns.resolver import Resolver as SyncResolver

from tests.support.dkim import (
    SUBMITTER,
    KeyPair,
    LoopbackDns,
    key_pair,
    loopback_dns,
    report_mail,
    sign,
)
from tlsrpt_lmtp.config import ConfigError
from tlsrpt_lmtp.core.dkim import MessageVerdict, key_names, verify_message
from tlsrpt_lmtp.ingest.dkim import (
    DkimChecker,
    DkimConfig,
    DkimResult,
    DkimVerdict,
    DnsKeyLookup,
    KeyCache,
    build_checker,
    load_dkim_config,
)
from tlsrpt_lmtp.ingest.dkim.batch import Budgets
from tlsrpt_lmtp.net.dns import make_resolver

HONEST = f"tlsrpt._domainkey.{SUBMITTER}"
SLOW = ("slow-one.test", "slow-two.test")  # key domains whose server never answers


def key_name(domain: str) -> str:
    return f"tlsrpt._domainkey.{domain}"


@pytest.fixture(scope="module")
def dns_server() -> Iterator[LoopbackDns]:
    with loopback_dns() as server:
        yield server


@pytest.fixture
def dns(dns_server: LoopbackDns, good: KeyPair) -> Iterator[LoopbackDns]:
    """The honest key published; the SLOW domains' key queries never answered."""
    state = dns_server.server.snapshot()
    dns_server.publish(good)
    for domain in SLOW:
        dns_server.publish(good, domain)
        dns_server.server.fail(key_name(domain), "timeout", "TXT")
    try:
        yield dns_server
    finally:
        dns_server.server.restore(state)


@pytest.fixture(scope="module")
def good() -> KeyPair:
    return key_pair("good")


class Watched:
    """The real lookup, counting the calls per name and noting which names were being looked
    up at the same time (a lookup run after another never shares a snapshot with it)."""

    def __init__(self, inner: DnsKeyLookup) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.together: list[frozenset[str]] = []
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, name: str) -> bytes | None:
        with self._lock:
            self.calls[name.rstrip(".")] += 1
            self._running.add(name.rstrip("."))
            self.together.append(frozenset(self._running))
        try:
            return self.inner(name)
        finally:
            with self._lock:
                self.together.append(frozenset(self._running))
                self._running.discard(name.rstrip("."))


def real_lookup(dns: LoopbackDns, now: list[float] | None = None) -> DnsKeyLookup:
    cache = KeyCache() if now is None else KeyCache(clock=lambda: now[0])
    return DnsKeyLookup(make_resolver(SyncResolver, (dns.nameserver,), 1.0), cache, failure_ttl=60)


def results(verdicts: list[MessageVerdict]) -> list[DkimVerdict]:
    return [v.for_submitter(SUBMITTER) for v in verdicts]


def test_one_batch_waits_for_one_timeout_not_the_sum(dns: LoopbackDns, good: KeyPair) -> None:
    """The issue's case: two mails naming unresponsive key domains, then an honest report."""
    watched = Watched(real_lookup(dns))
    batch = [
        sign(report_mail(), good, SLOW[0]),
        sign(report_mail(), good, SLOW[1]),
        sign(report_mail(report_id="again"), good, SLOW[0]),  # the same key as the first
        sign(report_mail(), good),
    ]
    slow_one, slow_two, again, honest = results(DkimChecker(watched).verify_many(batch))
    assert honest == DkimVerdict(DkimResult.PASS, SUBMITTER, True)
    for verdict, domain in ((slow_one, SLOW[0]), (slow_two, SLOW[1]), (again, SLOW[0])):
        assert (verdict.result, verdict.domain) == (DkimResult.TEMPERROR, domain)
        assert f"{key_name(domain)} failed: timeout" in (verdict.reason or "")
    # each key looked up once, both unresponsive ones at the same time: one timeout, not two
    assert watched.calls == {key_name(SLOW[0]): 1, key_name(SLOW[1]): 1, HONEST: 1}
    assert any({key_name(d) for d in SLOW} <= names for names in watched.together)
    assert all(dns.queries(key_name(d)) >= 1 for d in SLOW)


def test_a_remembered_timeout_sends_no_new_query(dns: LoopbackDns, good: KeyPair) -> None:
    now = [0.0]
    check = DkimChecker(real_lookup(dns, now))
    slow, honest = sign(report_mail(), good, SLOW[0]), sign(report_mail(), good)
    first = results(check.verify_many([slow, honest]))
    assert [v.result for v in first] == [DkimResult.TEMPERROR, DkimResult.PASS]
    asked = dns.queries(key_name(SLOW[0]))
    honest_asked = dns.queries(HONEST)

    now[0] = 59.0  # the next batch, while the failure is remembered
    second = results(check.verify_many([slow, slow, honest]))
    assert [v.result for v in second] == [DkimResult.TEMPERROR] * 2 + [DkimResult.PASS]
    assert "not asked again for 60 s" in (second[0].reason or "")
    assert dns.queries(key_name(SLOW[0])) == asked
    assert dns.queries(HONEST) == honest_asked  # the honest key came from the cache too

    now[0] = 61.0  # forgotten: asked again (and the server still does not answer)
    third = results(check.verify_many([slow]))
    assert third[0].result is DkimResult.TEMPERROR
    assert "not asked again" not in (third[0].reason or "")
    assert dns.queries(key_name(SLOW[0])) > asked


class SlowAnswers:
    """The real lookup on a test clock: every answer that had to come from the network moves
    the clock ``seconds`` on, as a server answering that late would."""

    def __init__(self, dns: LoopbackDns, seconds: float) -> None:
        self.dns, self.seconds, self.now = dns, seconds, [0.0]
        self.inner = real_lookup(dns)

    def clock(self) -> float:
        return self.now[0]

    def __call__(self, name: str) -> bytes | None:
        asked = self.dns.queries(name)
        try:
            return self.inner(name)
        finally:
            if self.dns.queries(name) > asked:
                self.now[0] += self.seconds


def test_the_message_budget_turns_a_late_key_into_temperror(
    dns: LoopbackDns, good: KeyPair
) -> None:
    slow = SlowAnswers(dns, 11.0)
    check = DkimChecker(slow, budgets=Budgets(message=10, batch=30), clock=slow.clock)
    raw = sign(report_mail(), good)
    [late] = results(check.verify_many([raw]))
    assert late == DkimVerdict(
        DkimResult.TEMPERROR, SUBMITTER, True, "DKIM time budget of the message (10 s) spent"
    )
    assert not late.authentic
    # the key that came late is cached: the next message has its own budget and passes
    assert check.verify(raw).for_submitter(SUBMITTER).result is DkimResult.PASS


class Ticking:
    """A test clock that moves one second on every reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_the_batch_budget_turns_the_rest_of_the_batch_into_temperror(
    dns: LoopbackDns, good: KeyPair
) -> None:
    lookup, raw = real_lookup(dns), sign(report_mail(), good)
    DkimChecker(lookup).verify(raw)  # the key in the cache: only the verification takes time
    check = DkimChecker(lookup, budgets=Budgets(message=5, batch=8), clock=Ticking())
    verdicts = results(check.verify_many([raw] * 8))
    outcomes = [v.result for v in verdicts]
    passed = outcomes.count(DkimResult.PASS)
    assert 0 < passed < len(outcomes)
    assert outcomes == [DkimResult.PASS] * passed + [DkimResult.TEMPERROR] * (8 - passed)
    assert {v.reason for v in verdicts[passed:]} == {"DKIM time budget of the batch (8 s) spent"}


def test_verify_is_a_batch_of_one_and_an_empty_batch_is_empty(
    dns: LoopbackDns, good: KeyPair
) -> None:
    check = DkimChecker(real_lookup(dns))
    raw = sign(report_mail(), good)
    assert check.verify_many([]) == []
    assert check.verify(raw) == check.verify_many([raw])[0]
    assert check.verify_many([report_mail()])[0].signatures == ()


def test_a_bug_in_one_message_costs_only_that_message(dns: LoopbackDns, good: KeyPair) -> None:
    real = real_lookup(dns)

    def lookup(name: str) -> bytes | None:
        if "bulk-mailer" in name:
            raise ValueError("a bug in the lookup")
        return real(name)

    dns.publish(good, "bulk-mailer.test")
    batch = [sign(report_mail(), good, "bulk-mailer.test"), sign(report_mail(), good)]
    broken, honest = results(DkimChecker(lookup).verify_many(batch))
    assert broken.result is DkimResult.FAIL and "ValueError" in (broken.reason or "")
    assert honest == DkimVerdict(DkimResult.PASS, SUBMITTER, True)


# --- configuration ---------------------------------------------------------------------------


def test_budgets_and_the_failure_cache_come_from_the_table(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[dkim]\nmessage_budget = 4\nbatch_budget = 20.5\nfailure_cache_ttl = 300\n")
    config = load_dkim_config(path)
    assert (config.message_budget, config.batch_budget, config.failure_cache_ttl) == (
        4.0,
        20.5,
        300.0,
    )
    check = build_checker(config)
    assert check is not None and check.budgets == Budgets(4.0, 20.5)
    assert isinstance(check.lookup, DnsKeyLookup) and check.lookup.failure_ttl == 300.0
    defaults = DkimConfig()
    assert (defaults.message_budget, defaults.batch_budget, defaults.failure_cache_ttl) == (
        10.0,
        30.0,
        60.0,
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("message_budget = 0", "must be positive"),
        ("batch_budget = -1", "must be positive"),
        ("message_budget = nan", "must be positive"),
        ('message_budget = "soon"', "message_budget: invalid value"),
        ("message_budget = true", "message_budget: invalid value"),
        ("failure_cache_ttl = -5", "must not be negative"),
        ("message_budget = 60\nbatch_budget = 30", "must not exceed batch_budget"),
    ],
)
def test_budget_errors_are_clear(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[dkim]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_dkim_config(path)


def test_the_keys_fetched_ahead_are_the_keys_verification_asks_for(good: KeyPair) -> None:
    """key_names (the fetch ahead) and dkimpy must agree, or a key would be missing."""
    other = key_pair("other")
    cases = [
        report_mail(),  # unsigned
        sign(report_mail(), good),
        sign(sign(report_mail(), good), other, "ESP.Example", "Sel1"),  # two, mixed case
        sign(sign(report_mail(), good), good),  # the same key twice
        sign(report_mail(), good, tlsrpt=False, length=True),  # l=: refused, no lookup
        b"DKIM-Signature: v=1; d=\r\n\r\nbody\r\n",  # malformed: no lookup
    ]
    for raw in cases:
        asked: list[str] = []

        def lookup(name: str, asked: list[str] = asked) -> bytes | None:
            asked.append(name)
            return None

        verify_message(raw, lookup)
        assert list(key_names(raw)) == list(dict.fromkeys(asked))


def test_the_pipeline_looks_up_the_keys_of_a_batch_at_once(
    dns: LoopbackDns, good: KeyPair, tmp_path: Path
) -> None:
    """Through stage 2's path (claim → process_many): both unresponsive key domains are asked
    at the same time, and the honest report after them is stored with its pass."""
    from tests.support.events import Recorder
    from tlsrpt_lmtp.ingest.pipeline import Pipeline

    watched = Watched(real_lookup(dns))
    rec = Recorder()
    pipeline = Pipeline.open(tmp_path, rec, dkim=DkimChecker(watched))
    pipeline.archive_many(
        [
            (sign(report_mail(report_id="slow-1"), good, SLOW[0]), "lmtp"),
            (sign(report_mail(report_id="slow-2"), good, SLOW[1]), "lmtp"),
            (sign(report_mail(report_id="honest"), good), "lmtp"),
        ]
    )
    results = pipeline.process_pending()
    assert all(r.valid for r in results)  # policy verify: every report kept
    verdicts = {e["report_id"]: e["dkim_result"] for e in rec.named("tlsrpt.report")}
    assert verdicts == {"slow-1": "temperror", "slow-2": "temperror", "honest": "pass"}
    assert any({key_name(d) for d in SLOW} <= names for names in watched.together)
