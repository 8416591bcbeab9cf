"""`check`'s pure parts: the evaluation of observations, the renderers, the records to publish."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tlsrpt_lmtp.check import render
from tlsrpt_lmtp.check.checks import Limits, evaluate
from tlsrpt_lmtp.check.findings import Check, Finding, Report, Severity
from tlsrpt_lmtp.check.observed import (
    MxHost,
    MxLookup,
    Observations,
    PolicyFetch,
    Probe,
    ProbeStatus,
    TxtLookup,
)
from tlsrpt_lmtp.check.publish import make_records
from tlsrpt_lmtp.check.tlsrpt_record import parse_txt
from tlsrpt_lmtp.sts.policy import Mode, parse_policy
from tlsrpt_lmtp.sts.record import parse_txt as parse_sts

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
URL = "https://mta-sts.example.org/.well-known/mta-sts.txt"
POLICY = (
    b"version: STSv1\nmode: enforce\nmx: mx1.example.org\nmx: *.pool.example.org\n"
    b"max_age: 1209600\n"
)


def good_probe(host: str, days: float = 60.0) -> Probe:
    return Probe(
        host, "192.0.2.1", ProbeStatus.OK, not_after=NOW + timedelta(days), tls_version="TLSv1.3"
    )


def host(name: str, pref: int = 10, *probes: Probe) -> MxHost:
    return MxHost(name, pref, ("192.0.2.1",), None, probes or (good_probe(name),))


GOOD = Observations(
    "example.org",
    TxtLookup((b"v=TLSRPTv1; rua=mailto:tlsrpt@example.org",)),
    TxtLookup((b"v=STSv1; id=20260501;",)),
    PolicyFetch(URL, POLICY),
    MxLookup((host("mx1.example.org"), host("a.pool.example.org", 20))),
)


def findings(obs: Observations, limits: Limits | None = None) -> list[Finding]:
    return list(evaluate(obs, NOW, limits or Limits()))


def bad(obs: Observations) -> list[Finding]:
    return [f for f in findings(obs) if f.severity is not Severity.OK]


def test_a_correct_domain_is_all_ok() -> None:
    result = findings(GOOD)
    assert {f.severity for f in result} == {Severity.OK}
    assert [f.check for f in result] == [
        Check.TLSRPT_RECORD,
        Check.STS_RECORD,
        Check.STS_POLICY,
        Check.MX,
        Check.MX_POLICY,
        Check.MX_POLICY,
        Check.MX_TLS,
        Check.MX_TLS,
    ]
    assert Report("example.org", NOW, tuple(result)).exit_code == 0


def test_missing_tlsrpt_record_is_an_error_with_an_example_fix() -> None:
    [f] = bad(replace(GOOD, tlsrpt=TxtLookup(())))
    assert f.severity is Severity.ERROR and f.check is Check.TLSRPT_RECORD
    assert '"v=TLSRPTv1; rua=mailto:tlsrpt@example.org"' in f.fix


def test_dns_failure_is_not_mistaken_for_absence() -> None:
    [f] = bad(replace(GOOD, tlsrpt=TxtLookup((), error="DNS lookup failed: timeout")))
    assert f.message == "DNS lookup failed: timeout" and "name servers" in f.fix


def test_no_sts_record_and_no_policy_is_one_error() -> None:
    obs = replace(GOOD, sts=TxtLookup(()), policy=PolicyFetch(URL, None, "cannot connect", "x"))
    result = bad(obs)
    assert [f.check for f in result] == [Check.STS_RECORD]
    assert "MTA-STS is not set up" in result[0].message and "--print-records" in result[0].fix


def test_no_sts_record_but_a_policy_still_checks_the_policy() -> None:
    result = findings(replace(GOOD, sts=TxtLookup(())))
    assert [f.check for f in result if f.severity is Severity.ERROR] == [Check.STS_RECORD]
    assert any(f.check is Check.STS_POLICY and f.severity is Severity.OK for f in result)


def test_fetch_error_carries_its_result_type() -> None:
    fetch = PolicyFetch(
        URL, None, "certificate of mta-sts.example.org is not valid", "sts-webpki-invalid"
    )
    [f] = bad(replace(GOOD, policy=fetch))
    assert f.check is Check.STS_POLICY and f.result_type == "sts-webpki-invalid"


def test_invalid_policy_is_sts_policy_invalid_and_skips_coverage() -> None:
    result = bad(replace(GOOD, policy=PolicyFetch(URL, b"version: STSv1\nmode: enforce\n")))
    assert [(f.check, f.result_type) for f in result] == [(Check.STS_POLICY, "sts-policy-invalid")]


@pytest.mark.parametrize(
    ("max_age", "expected"), [(3600, "under a day"), (40_000_000, "over a year"), (86400, None)]
)
def test_max_age_bounds(max_age: int, expected: str | None) -> None:
    body = POLICY.replace(b"max_age: 1209600", f"max_age: {max_age}".encode())
    result = bad(replace(GOOD, policy=PolicyFetch(URL, body)))
    if expected is None:
        assert result == []
    else:
        [f] = result
        assert f.check is Check.STS_MAX_AGE and f.severity is Severity.WARN
        assert expected in f.message


@pytest.mark.parametrize(("mode", "expected"), [("testing", "still deliver"), ("none", "stop")])
def test_modes_other_than_enforce_warn(mode: str, expected: str) -> None:
    body = POLICY.replace(b"mode: enforce", f"mode: {mode}".encode())
    [f] = bad(replace(GOOD, policy=PolicyFetch(URL, body)))
    assert f.check is Check.STS_MODE and expected in f.message


def test_uncovered_mx_is_an_error_and_unused_pattern_a_warning() -> None:
    mx = MxLookup((host("mx1.example.org"), host("mx2.example.org", 20)))
    result = bad(replace(GOOD, mx=mx))
    assert [(f.check, f.severity, f.subject) for f in result] == [
        (Check.MX_POLICY, Severity.ERROR, "mx2.example.org"),
        (Check.MX_PATTERN, Severity.WARN, "*.pool.example.org"),
    ]
    assert "mx: mx2.example.org" in result[0].fix


def test_wildcard_covers_exactly_one_label() -> None:
    mx = MxLookup((host("mx1.example.org"), host("a.b.pool.example.org", 20)))
    assert [f.subject for f in bad(replace(GOOD, mx=mx))] == [
        "a.b.pool.example.org",
        "*.pool.example.org",
    ]


@pytest.mark.parametrize(
    ("status", "rt"),
    [
        (ProbeStatus.NO_STARTTLS, "starttls-not-supported"),
        (ProbeStatus.CERT_INVALID, "certificate-expired"),
        (ProbeStatus.CERT_INVALID, "certificate-host-mismatch"),
        (ProbeStatus.CERT_INVALID, "certificate-not-trusted"),
        (ProbeStatus.TLS_FAILED, "validation-failure"),
    ],
)
def test_probe_failures_name_the_result_type(status: ProbeStatus, rt: str) -> None:
    probe = Probe("mx1.example.org", "192.0.2.1", status, "what happened", rt)
    mx = MxLookup((host("mx1.example.org", 10, probe), host("a.pool.example.org", 20)))
    [f] = bad(replace(GOOD, mx=mx))
    assert (f.check, f.result_type, f.message) == (Check.MX_TLS, rt, "what happened")
    assert f.subject == "mx1.example.org [192.0.2.1]" and f.fix


def test_unreachable_mx_is_an_error_without_result_type() -> None:
    probe = Probe("mx1.example.org", "192.0.2.1", ProbeStatus.UNREACHABLE, "refused")
    mx = MxLookup((host("mx1.example.org", 10, probe), host("a.pool.example.org", 20)))
    [f] = bad(replace(GOOD, mx=mx))
    assert f.result_type is None and "port 25" in f.fix


@pytest.mark.parametrize(
    ("days", "warn_days", "warned"), [(13.9, 14, True), (14.1, 14, False), (5, 3, False)]
)
def test_certificate_close_to_expiry(days: float, warn_days: float, warned: bool) -> None:
    probe = good_probe("mx1.example.org", days)
    mx = MxLookup((host("mx1.example.org", 10, probe), host("a.pool.example.org")))
    result = findings(replace(GOOD, mx=mx), Limits(cert_warn_days=warn_days))
    flagged = [f for f in result if f.severity is not Severity.OK]
    assert bool(flagged) is warned
    if warned:
        assert flagged[0].check is Check.MX_CERT_EXPIRY and flagged[0].severity is Severity.WARN
        assert "expires in 13.9 days" in flagged[0].message


def test_mx_lookup_failures() -> None:
    [f] = bad(replace(GOOD, mx=MxLookup(error="DNS lookup of example.org MX failed: timeout")))
    assert f.check is Check.MX and f.severity is Severity.ERROR
    [f] = bad(replace(GOOD, mx=MxLookup(null_mx=True)))
    assert f.severity is Severity.WARN and "null MX" in f.message
    unresolved = MxHost("mx1.example.org", 10, error="mx1.example.org has no A/AAAA record")
    result = bad(replace(GOOD, mx=MxLookup((unresolved, host("a.pool.example.org")))))
    assert [(f.check, f.severity) for f in result] == [(Check.MX, Severity.ERROR)]


def test_implicit_mx_is_a_warning_and_must_match_the_policy() -> None:
    mx = MxLookup((host("example.org", 0),), implicit=True)
    result = bad(replace(GOOD, mx=mx))
    assert [(f.check, f.severity) for f in result] == [
        (Check.MX, Severity.WARN),
        (Check.MX_POLICY, Severity.ERROR),
        (Check.MX_PATTERN, Severity.WARN),
        (Check.MX_PATTERN, Severity.WARN),
    ]


# --- rendering ------------------------------------------------------------------------------


def broken_report() -> Report:
    obs = replace(
        GOOD,
        tlsrpt=TxtLookup((b"v=TLSRPTv1; rua=mailto:a@example.org!10m",)),
        mx=MxLookup(
            (
                host("mx1.example.org"),
                host(
                    "mx2.a-rather-long-subdomain-name.example.org",
                    20,
                    Probe(
                        "mx2.a-rather-long-subdomain-name.example.org",
                        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                        ProbeStatus.CERT_INVALID,
                        "certificate rejected: Hostname mismatch, certificate is not valid for "
                        "'mx2.a-rather-long-subdomain-name.example.org'.",
                        "certificate-host-mismatch",
                    ),
                ),
            )
        ),
    )
    return Report("example.org", NOW, evaluate(obs, NOW))


def test_text_lines_fit_100_columns_and_show_severity_fix_and_result_type() -> None:
    report = broken_report()
    out = render.text(report)
    assert all(len(line) <= 100 for line in out.splitlines()), out
    assert out.splitlines()[0] == "check of example.org at 2026-05-01 12:00:00 UTC"
    assert "error tlsrpt-record  _smtp._tls.example.org: rua URI" in out
    assert "[certificate-host-mismatch]" in out
    assert "fix: install a certificate whose subjectAltName lists" in out
    assert out.rstrip().endswith("ok: example.org needs fixing")
    assert report.exit_code == 1


def test_json_has_every_finding() -> None:
    report = broken_report()
    doc = json.loads(render.as_json(report))
    assert doc["exit_code"] == 1 and doc["domain"] == "example.org"
    assert doc["counts"] == {
        "ok": report.count(Severity.OK),
        "warn": report.count(Severity.WARN),
        "error": report.count(Severity.ERROR),
    }
    assert len(doc["findings"]) == len(report.findings)
    assert {"severity", "check", "subject", "message", "fix", "result_type"} == set(
        doc["findings"][0]
    )


# --- the records to publish -----------------------------------------------------------------


def test_records_are_valid_and_parse_back() -> None:
    records = make_records(
        "example.org",
        ["mailto:tlsrpt@example.org", "https://r.example.net/v1"],
        ["MX1.Example.org.", "*.pool.example.org", "mx1.example.org"],
        Mode.TESTING,
        604800,
        NOW,
    )
    assert records.sts == "v=STSv1; id=20260501120000"
    assert parse_sts([records.sts.encode()]).record is not None
    tlsrpt = parse_txt([records.tlsrpt.encode()]).record
    assert tlsrpt is not None and len(tlsrpt.rua) == 2
    policy = parse_policy(records.policy.encode())
    assert policy.mx == ("mx1.example.org", "*.pool.example.org")
    assert policy.mode is Mode.TESTING and policy.max_age == 604800
    text = records.text()
    assert '_smtp._tls.example.org. 3600 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.org,' in text
    assert records.policy in text + "\n"


@pytest.mark.parametrize(
    ("rua", "mx", "why"),
    [
        (["mailto:a@example.org!10m"], ["mx1.example.org"], "size limit"),
        (["mailto:a@example.org"], ["not a host"], "--mx"),
        (["mailto:a@example.org"], [], "no MX host"),
    ],
)
def test_records_refuse_bad_input(rua: list[str], mx: list[str], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        make_records("example.org", rua, mx, Mode.ENFORCE, 604800, NOW)


def test_ipv6_address_without_a_route_here_is_a_warning_not_an_error() -> None:
    probe = Probe("mx1.example.org", "2001:db8::25", ProbeStatus.SKIPPED, "not checked: ...")
    mx = MxLookup((host("mx1.example.org", 10, good_probe("mx1.example.org"), probe),))
    result = bad(replace(GOOD, mx=mx))
    assert [(f.check, f.severity) for f in result] == [
        (Check.MX_PATTERN, Severity.WARN),
        (Check.MX_TLS, Severity.WARN),
    ]
