"""DKIM by RFC 8460 §3: messages signed at test time (dkimpy), keys served by a real DNS server
on 127.0.0.1; the verdict in the pipeline's events, and the enforce policy's quarantine."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from dns.resolver import Resolver as SyncResolver

from tests.support.dkim import (
    SUBMITTER,
    KeyPair,
    LoopbackDns,
    closed_port,
    key_pair,
    loopback_dns,
    report_mail,
    sign,
)
from tests.support.events import Recorder
from tests.support.mail import report_json
from tlsrpt_lmtp.config import ConfigError
from tlsrpt_lmtp.ingest.dkim import (
    DkimChecker,
    DkimConfig,
    DkimPolicy,
    DkimResult,
    DkimVerdict,
    DnsKeyLookup,
    DnsTempError,
    KeyCache,
    aligned,
    build_checker,
    load_dkim_config,
    verify_message,
)
from tlsrpt_lmtp.ingest.pipeline import Pipeline
from tlsrpt_lmtp.net.dns import make_resolver

KEY_NAME = f"tlsrpt._domainkey.{SUBMITTER}"


@pytest.fixture(scope="module")
def dns_server() -> Iterator[LoopbackDns]:
    with loopback_dns() as server:
        yield server


@pytest.fixture
def dns(dns_server: LoopbackDns) -> Iterator[LoopbackDns]:
    """The module's server with this test's records only."""
    state = dns_server.server.snapshot()
    try:
        yield dns_server
    finally:
        dns_server.server.restore(state)


@pytest.fixture(scope="module")
def good() -> KeyPair:
    return key_pair("good")


@pytest.fixture(scope="module")
def other() -> KeyPair:
    return key_pair("other")


def checker(
    dns: LoopbackDns | str,
    *,
    policy: DkimPolicy = DkimPolicy.VERIFY,
    strict_service_type: bool = False,
    timeout: float = 1.0,
) -> DkimChecker:
    nameserver = dns if isinstance(dns, str) else dns.nameserver
    config = DkimConfig(policy, (nameserver,), timeout, strict_service_type)
    built = build_checker(config)
    assert built is not None
    return built


def verdict(check: DkimChecker, raw: bytes, submitter: str | None = SUBMITTER) -> DkimVerdict:
    return check.verify(raw).for_submitter(submitter)


# --- the cases of the issue, through real DNS ----------------------------------------------


def test_valid_signature_by_the_submitter_passes_and_aligns(
    dns: LoopbackDns, good: KeyPair
) -> None:
    dns.publish(good)
    result = verdict(checker(dns), sign(report_mail(), good))
    assert result == DkimVerdict(DkimResult.PASS, SUBMITTER, True)
    assert result.authentic


def test_a_key_that_does_not_match_fails(dns: LoopbackDns, good: KeyPair, other: KeyPair) -> None:
    dns.publish(other)
    result = verdict(checker(dns), sign(report_mail(), good))
    assert (result.result, result.domain, result.aligned) == (DkimResult.FAIL, SUBMITTER, True)
    assert not result.authentic


def test_a_changed_body_fails_with_the_body_hash(dns: LoopbackDns, good: KeyPair) -> None:
    dns.publish(good)
    signed = sign(report_mail(), good)
    tampered = signed.replace(b"aggregate TLS report", b"aggregate TLS rep0rt")
    assert tampered != signed
    result = verdict(checker(dns), tampered)
    assert result.result is DkimResult.FAIL
    assert "body hash mismatch" in (result.reason or "")


def test_a_changed_signed_header_fails(dns: LoopbackDns, good: KeyPair) -> None:
    dns.publish(good)
    signed = sign(report_mail(), good)
    tampered = signed.replace(b"TLS-Report-Domain: example.com", b"TLS-Report-Domain: evil.test")
    assert verdict(checker(dns), tampered).result is DkimResult.FAIL


@pytest.mark.parametrize(
    ("service", "strict", "expected"),
    [
        ("tlsrpt", False, DkimResult.PASS),
        ("tlsrpt", True, DkimResult.PASS),
        ("email", False, DkimResult.PASS),  # RFC 8460: a receiver MAY ignore s= absent...
        ("email", True, DkimResult.FAIL),  # ...or insist on s=tlsrpt (strict_service_type)
        (None, False, DkimResult.PASS),
        (None, True, DkimResult.FAIL),
    ],
)
def test_service_type_email_vs_tlsrpt(
    dns: LoopbackDns, good: KeyPair, service: str | None, strict: bool, expected: DkimResult
) -> None:
    dns.publish(good, service=service)
    result = verdict(checker(dns, strict_service_type=strict), sign(report_mail(), good))
    assert result.result is expected, result
    if expected is DkimResult.FAIL:
        assert "Service Type" in (result.reason or "")


def test_signature_by_an_unrelated_domain_passes_unaligned(dns: LoopbackDns, good: KeyPair) -> None:
    dns.publish(good, "bulk-mailer.test")
    result = verdict(checker(dns), sign(report_mail(), good, "bulk-mailer.test"))
    assert result == DkimVerdict(DkimResult.PASS, "bulk-mailer.test", False)
    assert not result.authentic


def test_mail_ru_signs_a_subdomain_of_the_submitter(dns: LoopbackDns, good: KeyPair) -> None:
    """QUIRKS §19: Mail.ru signs as corp.mail.ru while the submitter says mail.ru."""
    dns.publish(good, "corp.mail.ru", "mail")
    raw = sign(
        report_mail(submitter="mail.ru", contact="tlsrpt@mail.ru"), good, "corp.mail.ru", "mail"
    )
    assert verdict(checker(dns), raw, "mail.ru") == DkimVerdict(
        DkimResult.PASS, "corp.mail.ru", True
    )


def test_dns_down_is_temperror_never_a_crash_or_a_pass(good: KeyPair) -> None:
    result = verdict(checker(closed_port()), sign(report_mail(), good))
    assert (result.result, result.domain) == (DkimResult.TEMPERROR, SUBMITTER)
    assert "timeout" in (result.reason or "")


@pytest.mark.parametrize("fault", ["servfail", "refused", "timeout"])
def test_dns_faults_are_temperror(dns: LoopbackDns, good: KeyPair, fault: str) -> None:
    dns.publish(good)
    dns.server.fail(KEY_NAME, fault, "TXT")  # type: ignore[arg-type]
    result = verdict(checker(dns), sign(report_mail(), good))
    assert result.result is DkimResult.TEMPERROR, result
    assert KEY_NAME in (result.reason or "")


def test_no_key_record_fails(dns: LoopbackDns, good: KeyPair) -> None:
    result = verdict(checker(dns), sign(report_mail(), good))
    assert result.result is DkimResult.FAIL
    assert result.reason == f"no key record at {KEY_NAME}"


def test_length_tag_is_refused(dns: LoopbackDns, good: KeyPair) -> None:
    """RFC 8460 §3: l= MUST NOT be used (a signer could cover only part of the body)."""
    dns.publish(good)
    raw = sign(report_mail(), good, tlsrpt=False, length=True)
    assert re.search(rb"[;\s]l=\d+;", raw.split(b"\r\n\r\n")[0])
    result = verdict(checker(dns), raw)
    assert (result.result, result.reason) == (DkimResult.FAIL, "l= used (RFC 8460 §3)")


def test_unsigned_mail_and_bare_json_are_none(dns: LoopbackDns) -> None:
    check = checker(dns)
    assert verdict(check, report_mail()) == DkimVerdict(DkimResult.NONE, None, False)
    assert check.verify(report_json()).signatures == ()


def test_the_aligned_signature_wins_among_several(
    dns: LoopbackDns, good: KeyPair, other: KeyPair
) -> None:
    dns.publish(other, "esp.test", "esp")
    dns.publish(good)
    raw = sign(sign(report_mail(), good), other, "esp.test", "esp")  # ESP's on top
    result = verdict(checker(dns), raw)
    assert result == DkimVerdict(DkimResult.PASS, SUBMITTER, True)
    assert [s.domain for s in checker(dns).verify(raw).signatures] == ["esp.test", SUBMITTER]


def test_a_broken_aligned_signature_beside_a_foreign_pass(
    dns: LoopbackDns, good: KeyPair, other: KeyPair
) -> None:
    dns.publish(other, "esp.test", "esp")
    dns.publish(other)  # the submitter's record does not match its signature
    raw = sign(sign(report_mail(), good), other, "esp.test", "esp")
    assert verdict(checker(dns), raw) == DkimVerdict(DkimResult.PASS, "esp.test", False)


# --- alignment, cache, lookup ------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "submitter", "expected"),
    [
        ("google.com", "google.com", True),
        ("Google.COM.", "google.com", True),
        ("corp.mail.ru", "mail.ru", True),
        ("mail.ru", "corp.mail.ru", True),
        ("notmail.ru", "mail.ru", False),
        ("ru", "mail.ru", False),  # a bare TLD never aligns
        ("example.net", "example.com", False),
        ("example.com", None, False),
        (None, "example.com", False),
    ],
)
def test_alignment(domain: str | None, submitter: str | None, expected: bool) -> None:
    assert aligned(domain, submitter) is expected


def test_key_cache_honours_ttl_and_size() -> None:
    now = [0.0]
    cache = KeyCache(size=2, max_ttl=100, clock=lambda: now[0])
    cache.put("a.", b"A", ttl=10)
    cache.put("b.", None, ttl=1000)  # capped at 100; None ("no record") is cached too
    assert cache.get("a.") == (True, b"A")
    now[0] = 10.0
    assert cache.get("a.") == (False, None)
    now[0] = 99.0
    assert cache.get("b.") == (True, None)
    now[0] = 100.0
    assert cache.get("b.") == (False, None)
    for name in ("c.", "d.", "e."):
        cache.put(name, name.encode(), ttl=50)
    assert cache.get("c.") == (False, None)  # the least recently used went first
    assert cache.get("e.") == (True, b"e.")


def test_lookup_answers_from_the_cache_until_the_ttl(dns: LoopbackDns, good: KeyPair) -> None:
    dns.publish(good, ttl=300)
    now = [0.0]
    lookup = DnsKeyLookup(
        make_resolver(SyncResolver, (dns.nameserver,), 1.0), KeyCache(clock=lambda: now[0])
    )
    check = DkimChecker(lookup)
    raw = sign(report_mail(), good)
    before = dns.queries(KEY_NAME)
    for _ in range(3):
        assert verdict(check, raw).result is DkimResult.PASS
    assert dns.queries(KEY_NAME) == before + 1
    now[0] = 301.0
    assert verdict(check, raw).result is DkimResult.PASS
    assert dns.queries(KEY_NAME) == before + 2


def test_temperrors_are_remembered_only_briefly(dns: LoopbackDns, good: KeyPair) -> None:
    dns.publish(good)
    dns.server.fail(KEY_NAME, "servfail", "TXT")
    now = [0.0]
    cache = KeyCache(clock=lambda: now[0])
    lookup = DnsKeyLookup(
        make_resolver(SyncResolver, (dns.nameserver,), 1.0), cache, failure_ttl=60
    )
    with pytest.raises(DnsTempError, match="SERVFAIL"):
        lookup(KEY_NAME)
    asked = dns.queries(KEY_NAME)
    dns.server.clear_fault(KEY_NAME, "TXT")
    now[0] = 59.0
    with pytest.raises(DnsTempError, match="not asked again for 60 s"):
        lookup(KEY_NAME)
    assert dns.queries(KEY_NAME) == asked
    now[0] = 60.0
    assert lookup(KEY_NAME) == good.record().encode()
    assert dns.queries(KEY_NAME) == asked + 1


def test_verification_never_raises_on_garbage() -> None:
    def lookup(name: str) -> bytes | None:
        raise AssertionError("no lookup for a malformed signature")

    for raw in (
        b"DKIM-Signature: v=1; d=\r\n\r\nbody\r\n",
        b"DKIM-Signature: garbage\r\nFrom: a@b\r\n\r\n",
        b"\x1f\x8b\x08\x00" + bytes(range(256)),
    ):
        result = verify_message(raw, lookup).for_submitter("b")
        assert result.result in (DkimResult.FAIL, DkimResult.NONE)


def test_a_failing_lookup_function_is_a_fail_not_a_crash() -> None:
    def broken(name: str) -> bytes | None:
        raise ValueError("a bug in the lookup")

    raw = sign(report_mail(), key_pair("good"))
    result = DkimChecker(broken).verify(raw).for_submitter(SUBMITTER)
    assert result.result is DkimResult.FAIL
    assert "ValueError" in (result.reason or "")


# --- configuration ---------------------------------------------------------------------------


def test_config_defaults_and_table(tmp_path: Path) -> None:
    assert load_dkim_config(None) == DkimConfig()
    path = tmp_path / "c.toml"
    path.write_text(
        '[lmtp]\nrecipients = ["a@b.test"]\n[dkim]\npolicy = "Enforce"\n'
        'nameservers = ["127.0.0.1:5353"]\ntimeout = 2\nstrict_service_type = true\n'
    )
    config = load_dkim_config(path)
    assert config.policy is DkimPolicy.ENFORCE
    assert (config.nameservers, config.timeout, config.strict_service_type) == (
        ("127.0.0.1:5353",),
        2.0,
        True,
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('policy = "strict"', "policy: invalid value 'strict'"),
        ("polcy = 'verify'", "unknown key 'polcy' in [dkim]"),
        ("timeout = 0", "must be positive"),
        ('nameservers = ["not an address"]', "invalid address"),
    ],
)
def test_config_errors_are_clear(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[dkim]\n{table}\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_dkim_config(path)


def test_a_flag_overrides_the_policy_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[dkim]\npolicy = "enforce"\n')
    assert load_dkim_config(path, policy="off").policy is DkimPolicy.OFF
    assert load_dkim_config(path, policy=None).policy is DkimPolicy.ENFORCE
    with pytest.raises(ConfigError, match="--dkim-policy: invalid value 'sometimes'"):
        load_dkim_config(None, policy="sometimes")


def test_policy_off_builds_no_checker() -> None:
    assert build_checker(DkimConfig(policy=DkimPolicy.OFF)) is None


# --- in the pipeline -------------------------------------------------------------------------


def open_pipeline(tmp_path: Path, check: DkimChecker | None) -> tuple[Pipeline, Recorder]:
    recorder = Recorder()
    return Pipeline.open(tmp_path / "data", recorder, dkim=check), recorder


def stored_reports(pipeline: Pipeline) -> int:
    return int(pipeline.store.query("SELECT count(*) AS n FROM reports")[0]["n"])


@pytest.mark.parametrize("source", ["lmtp", "milter", "file"])
def test_every_report_event_carries_the_verdict(
    tmp_path: Path, dns: LoopbackDns, good: KeyPair, source: str
) -> None:
    dns.publish(good)
    pipeline, events = open_pipeline(tmp_path, checker(dns))
    result = pipeline.ingest(sign(report_mail(), good), source=source)
    [event] = events.named("tlsrpt.report")
    assert {k: event[k] for k in event if k.startswith("dkim_")} == {
        "dkim_result": "pass",
        "dkim_domain": SUBMITTER,
        "dkim_aligned": True,
        "dkim_reason": None,
    }
    assert (result.reports, result.failures, result.refused) == (1, 3, 0)
    assert [v.result for v in result.dkim] == [DkimResult.PASS]
    pipeline.close()


def test_reprocess_verifies_again(tmp_path: Path, dns: LoopbackDns, good: KeyPair) -> None:
    dns.publish(good)
    pipeline, events = open_pipeline(tmp_path, checker(dns))
    raw = sign(report_mail(), good)
    first = pipeline.ingest(raw, source="lmtp")
    dns.server.remove(KEY_NAME)
    pipeline.dkim = checker(dns)  # a fresh key cache, as after a restart
    pipeline.process(raw, first.archive_id, source="reprocess")
    results = [e["dkim_result"] for e in events.named("tlsrpt.report")]
    assert results == ["pass", "fail"]
    pipeline.close()


def test_verify_policy_keeps_a_failing_report(
    tmp_path: Path, dns: LoopbackDns, good: KeyPair
) -> None:
    pipeline, events = open_pipeline(tmp_path, checker(dns))
    result = pipeline.ingest(sign(report_mail(), good), source="lmtp")  # no key published
    assert result.valid and stored_reports(pipeline) == 1
    assert events.named("tlsrpt.report")[0]["dkim_result"] == "fail"
    assert not events.named("tlsrpt.invalid")
    pipeline.close()


def test_bare_json_gets_none(tmp_path: Path, dns: LoopbackDns) -> None:
    pipeline, events = open_pipeline(tmp_path, checker(dns))
    pipeline.ingest(report_json(), source="file")
    [event] = events.named("tlsrpt.report")
    assert (event["dkim_result"], event["dkim_domain"], event["dkim_aligned"]) == (
        "none",
        None,
        False,
    )
    pipeline.close()


def test_without_a_checker_the_fields_are_null(tmp_path: Path) -> None:
    pipeline, events = open_pipeline(tmp_path, None)
    result = pipeline.ingest(report_mail(), source="lmtp")
    event = events.named("tlsrpt.report")[0]
    assert [event[k] for k in ("dkim_result", "dkim_domain", "dkim_aligned")] == [None] * 3
    assert result.dkim == ()
    pipeline.close()


@pytest.mark.parametrize(
    ("publish", "domain", "expected_reason"),
    [
        (False, SUBMITTER, f"DKIM fail for {SUBMITTER}: no key record at {KEY_NAME}"),
        (
            True,
            "bulk-mailer.test",
            "DKIM pass for bulk-mailer.test, not aligned with the submitter",
        ),
        (None, None, "no DKIM signature (RFC 8460 §3 requires one)"),
    ],
)
def test_enforce_quarantines_a_report_without_an_aligned_pass(
    tmp_path: Path,
    dns: LoopbackDns,
    good: KeyPair,
    publish: bool | None,
    domain: str | None,
    expected_reason: str,
) -> None:
    raw = report_mail()
    if domain is not None:
        if publish:
            dns.publish(good, domain)
        raw = sign(raw, good, domain)
    pipeline, events = open_pipeline(tmp_path, checker(dns, policy=DkimPolicy.ENFORCE))
    result = pipeline.ingest(raw, source="lmtp")
    assert (result.valid, result.refused) == (False, 1)
    assert not events.named("tlsrpt.report") and not events.named("tlsrpt.policy")
    [invalid] = events.named("tlsrpt.invalid")
    assert invalid["reason"] == f"{expected_reason} [dkim policy enforce]"
    assert invalid["report_id"] == "2024-01-09T00:00:00Z_example.com"
    assert invalid["dkim_result"] == ("none" if domain is None else ("pass" if publish else "fail"))
    assert stored_reports(pipeline) == 0
    assert pipeline.store.status(result.archive_id) == "invalid"  # the quarantine
    pipeline.close()


def test_enforce_stores_an_aligned_pass(tmp_path: Path, dns: LoopbackDns, good: KeyPair) -> None:
    dns.publish(good)
    pipeline, events = open_pipeline(tmp_path, checker(dns, policy=DkimPolicy.ENFORCE))
    result = pipeline.ingest(sign(report_mail(), good), source="lmtp")
    assert (result.valid, result.refused, stored_reports(pipeline)) == (True, 0, 1)
    assert json.loads(json.dumps(events.named("tlsrpt.report")[0]))["dkim_aligned"] is True
    pipeline.close()


def test_enforce_with_dns_down_quarantines_as_temperror(tmp_path: Path, good: KeyPair) -> None:
    pipeline, events = open_pipeline(
        tmp_path, checker(closed_port(), policy=DkimPolicy.ENFORCE, timeout=0.5)
    )
    result = pipeline.ingest(sign(report_mail(), good), source="milter")
    assert (result.valid, result.refused) == (False, 1)
    assert [v.result for v in result.dkim] == [DkimResult.TEMPERROR]
    assert events.named("tlsrpt.invalid")[0]["dkim_result"] == "temperror"
    pipeline.close()
