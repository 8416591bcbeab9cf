"""`tlsrpt-lmtp check` end to end, against the loopback test internet (tests/netsim).

Real DNS (the netsim authoritative server), the real HTTPS policy fetch (the test CA as trust
store) and real STARTTLS on port 25 of the netsim sinks: one correct domain, then one test per
kind of mistake, each asserting the finding and the RFC 8460 result type it would cause.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tlsrpt_lmtp import cliflags
from tlsrpt_lmtp.check import cli as check_cli
from tlsrpt_lmtp.check.cli import main

if TYPE_CHECKING:
    from tests.netsim.fixtures import NetSim
    from tests.netsim.pki import IssuedCert

pytest_plugins = ["tests.netsim.fixtures"]

DAY = 86400
LAB = "--allow-private-policy-hosts"  # the test internet's policy hosts are on 127.0.0.x
Doc = dict[str, Any]
Runner = Callable[..., tuple[int, Doc]]


@pytest.fixture
def check(netsim: NetSim, capsys: pytest.CaptureFixture[str]) -> Runner:
    """``check(domain, *flags)`` → (exit status, the --json document)."""

    def run(domain: str, *flags: str) -> tuple[int, Doc]:
        capsys.readouterr()
        argv = [domain, "--nameserver", netsim.nameserver, "--ca-file", str(netsim.ca_file)]
        rc = main([*argv, LAB, "--smtp-timeout", "5", "--json", *flags])
        return rc, json.loads(capsys.readouterr().out)

    return run


def setup_domain(netsim: NetSim, domain: str, mx: dict[str, Any] | None = None) -> None:
    """A correctly set-up domain: MX with good certificates, enforce policy, TLS-RPT."""
    hosts = mx or {f"mx1.{domain}": "good"}
    netsim.mail_domain(domain, hosts)
    netsim.publish_sts(domain, mx=list(hosts), max_age=14 * DAY)
    netsim.publish_tlsrpt(domain, f"mailto:tlsrpt@{domain}")


def errors(doc: Doc) -> list[Doc]:
    return [f for f in doc["findings"] if f["severity"] == "error"]


def only_error(doc: Doc) -> Doc:
    [finding] = errors(doc)
    return finding


def test_correct_domain_is_all_ok(netsim: NetSim, check: Runner) -> None:
    setup_domain(netsim, "good.test", {"mx1.good.test": "good", "mx2.good.test": "good"})
    rc, doc = check("good.test")
    assert rc == 0, doc
    assert doc["counts"] == {"ok": 8, "warn": 0, "error": 0}
    tls = [f for f in doc["findings"] if f["check"] == "mx-tls"]
    assert [f["subject"].split()[0] for f in tls] == ["mx1.good.test", "mx2.good.test"]
    assert all("STARTTLS (TLSv1.3)" in f["message"] for f in tls)
    assert netsim.sink("mx1.good.test").sni_seen == ["mx1.good.test"]  # SNI = the MX name


def test_human_output_for_a_broken_domain(netsim: NetSim, capsys: Any) -> None:
    netsim.mail_domain("broken.test", {"mx1.broken.test": "good", "mx2.broken.test": None})
    netsim.publish_sts("broken.test", mx=["mx1.broken.test"], max_age=3600)
    ns, ca = netsim.nameserver, str(netsim.ca_file)
    rc = main(["broken.test", "--nameserver", ns, "--ca-file", ca, LAB])
    out = capsys.readouterr().out
    assert rc == 1
    assert all(len(line) <= 100 for line in out.splitlines()), out
    lines = out.splitlines()
    assert lines[0].startswith("check of broken.test at ")
    assert lines[1].startswith("error tlsrpt-record  _smtp._tls.broken.test: no v=TLSRPTv1")
    assert "[starttls-not-supported]" in out and "fix: enable STARTTLS on port 25" in out
    assert "warn  sts-max-age" in out
    assert lines[-1] == "3 errors, 1 warning, 5 ok: broken.test needs fixing"


# --- the _smtp._tls record --------------------------------------------------------------------


def test_no_tlsrpt_record(netsim: NetSim, check: Runner) -> None:
    setup_domain(netsim, "nort.test")
    netsim.dns.remove("_smtp._tls.nort.test")
    rc, doc = check("nort.test")
    assert rc == 1
    assert only_error(doc)["message"] == "no v=TLSRPTv1 TXT record: senders send no TLS reports"


def test_two_tlsrpt_records(netsim: NetSim, check: Runner) -> None:
    setup_domain(netsim, "two.test")
    netsim.dns.set(
        "_smtp._tls.two.test",
        "TXT",
        "v=TLSRPTv1; rua=mailto:a@two.test",
        "v=TLSRPTv1; rua=mailto:b@two.test",
    )
    rc, doc = check("two.test")
    assert rc == 1 and "2 v=TLSRPTv1 TXT records" in only_error(doc)["message"]


@pytest.mark.parametrize(
    ("rua", "why"),
    [
        ("mailto:tlsrpt@rua.test!10m", "DMARC size limit"),
        ("mailto:tls%rpt@rua.test", "'%' not followed by 2 hex digits"),
        ("mailto:a@rua.test,b@rua.test", "no scheme"),
        ("http://reports.rua.test/", "neither mailto nor https"),
    ],
)
def test_bad_rua(netsim: NetSim, check: Runner, rua: str, why: str) -> None:
    setup_domain(netsim, "rua.test")
    netsim.publish_tlsrpt("rua.test", rua)
    rc, doc = check("rua.test")
    assert rc == 1
    finding = only_error(doc)
    assert finding["check"] == "tlsrpt-record" and why in finding["message"]


def test_multi_string_tlsrpt_record_and_unknown_fields(netsim: NetSim, check: Runner) -> None:
    setup_domain(netsim, "multi.test")
    value = ("v=TLSRPTv1; rua=mailto:tls", "rpt@multi.test; ext=1")
    netsim.dns.set("_smtp._tls.multi.test", "TXT", value)
    rc, doc = check("multi.test")
    assert rc == 0
    [finding] = [f for f in doc["findings"] if f["check"] == "tlsrpt-record"]
    assert finding["message"] == (
        "reports go to mailto:tlsrpt@multi.test (unknown fields ignored: ext)"
    )


def test_tlsrpt_dns_failure(netsim: NetSim, check: Runner) -> None:
    setup_domain(netsim, "servfail.test")
    netsim.dns.fail("_smtp._tls.servfail.test", "servfail", "TXT")
    rc, doc = check("servfail.test")
    assert rc == 1 and "SERVFAIL" in only_error(doc)["message"]


# --- MTA-STS record and policy ----------------------------------------------------------------


def test_no_mta_sts_at_all(netsim: NetSim, check: Runner) -> None:
    netsim.mail_domain("nosts.test")
    netsim.publish_tlsrpt("nosts.test")
    rc, doc = check("nosts.test")
    assert rc == 1
    finding = only_error(doc)
    assert finding["check"] == "sts-record" and "MTA-STS is not set up" in finding["message"]


def test_policy_without_record(netsim: NetSim, check: Runner) -> None:
    setup_domain(netsim, "norecord.test")
    netsim.dns.remove("_mta-sts.norecord.test")
    rc, doc = check("norecord.test")
    assert rc == 1
    assert only_error(doc)["message"] == "no v=STSv1 TXT record: senders ignore the policy"


@pytest.mark.parametrize(
    ("site", "why", "rt"),
    [
        ({"status": 404}, "HTTP 404", "sts-policy-fetch-error"),
        ({"status": 301, "location": "https://x.test/"}, "HTTP 301", "sts-policy-fetch-error"),
        ({"content_type": "text/html"}, "not text/plain", "sts-policy-fetch-error"),
        ({"cert": "wrong_name"}, "not valid", "sts-webpki-invalid"),
        ({"cert": "expired"}, "expired", "sts-webpki-invalid"),
        ({"cert": "rogue"}, "not valid", "sts-webpki-invalid"),
        ({"host_state": "down"}, "cannot connect", "sts-policy-fetch-error"),
    ],
)
def test_policy_fetch_failures(
    netsim: NetSim, check: Runner, site: dict[str, Any], why: str, rt: str
) -> None:
    setup_domain(netsim, "fetch.test")
    netsim.publish_sts("fetch.test", mx=["mx1.fetch.test"], **site)
    rc, doc = check("fetch.test")
    assert rc == 1
    finding = only_error(doc)
    assert finding["check"] == "sts-policy" and finding["result_type"] == rt
    assert why in finding["message"]


def test_policy_host_on_loopback_is_refused_without_the_lab_option(
    netsim: NetSim, capsys: Any
) -> None:
    setup_domain(netsim, "private.test")
    argv = ["private.test", "--nameserver", netsim.nameserver, "--ca-file", str(netsim.ca_file)]
    assert main([*argv, "--smtp-timeout", "5", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    finding = only_error(doc)
    assert finding["check"] == "sts-policy"
    assert finding["result_type"] == "sts-policy-fetch-error"
    assert "no globally reachable address" in finding["message"]
    assert "(loopback)" in finding["message"]
    assert netsim.https.requests_for("private.test") == []


def test_policy_host_without_address_and_the_fixes(netsim: NetSim, check: Runner) -> None:
    setup_domain(netsim, "noweb.test")
    netsim.dns.remove("mta-sts.noweb.test")
    rc, doc = check("noweb.test")
    finding = only_error(doc)
    assert rc == 1 and finding["message"] == "mta-sts.noweb.test has no address"
    assert finding["fix"].startswith("publish an A/AAAA record (or a CNAME) for mta-sts.noweb")
    netsim.publish_sts("noweb.test", mx=["mx1.noweb.test"], cert="self_signed")
    _, doc = check("noweb.test")
    assert only_error(doc)["fix"].startswith("install a certificate for mta-sts.noweb.test")


@pytest.mark.parametrize(
    ("policy", "why"),
    [
        ("version: STSv1\nmode: enforce\nmax_age: 86400\n", "no mx line"),
        ("version: STSv1\nmode: enforced\nmx: mx1.syntax.test\nmax_age: 86400\n", "mode"),
        ("version: STSv1\nmode: enforce\nmx: mx1.syntax.test\nmax_age: 1d\n", "max_age"),
        ("mode: enforce\nmx: mx1.syntax.test\nmax_age: 86400\n", "version"),
    ],
)
def test_policy_syntax_errors(netsim: NetSim, check: Runner, policy: str, why: str) -> None:
    setup_domain(netsim, "syntax.test")
    netsim.publish_sts("syntax.test", policy=policy)
    rc, doc = check("syntax.test")
    finding = only_error(doc)
    assert rc == 1 and finding["result_type"] == "sts-policy-invalid" and why in finding["message"]


def test_short_max_age_and_testing_mode_are_warnings(netsim: NetSim, check: Runner) -> None:
    setup_domain(netsim, "warn.test")
    netsim.publish_sts("warn.test", mode="testing", mx=["mx1.warn.test"], max_age=600)
    rc, doc = check("warn.test")
    assert rc == 0
    warned = [f["check"] for f in doc["findings"] if f["severity"] == "warn"]
    assert warned == ["sts-mode", "sts-max-age"]


# --- MX coverage --------------------------------------------------------------------------------


def test_mx_not_covered_by_the_policy(netsim: NetSim, check: Runner) -> None:
    setup_domain(netsim, "cover.test", {"mx1.cover.test": "good", "backup.cover.test": "good"})
    netsim.publish_sts("cover.test", mx=["mx1.cover.test", "mx9.cover.test"])
    rc, doc = check("cover.test")
    assert rc == 1
    finding = only_error(doc)
    assert (finding["check"], finding["subject"]) == ("mx-policy", "backup.cover.test")
    assert finding["result_type"] == "certificate-host-mismatch"
    [stale] = [f for f in doc["findings"] if f["severity"] == "warn"]
    assert stale["subject"] == "mx9.cover.test"


def test_wildcard_pattern_covers_the_mx(netsim: NetSim, check: Runner) -> None:
    setup_domain(netsim, "wild.test", {"a.pool.wild.test": "good"})
    netsim.publish_sts("wild.test", mx=["*.pool.wild.test"], max_age=14 * DAY)
    rc, doc = check("wild.test")
    assert rc == 0 and doc["counts"]["warn"] == 0


# --- STARTTLS on the MX hosts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("cert", "rt"),
    [
        (None, "starttls-not-supported"),
        ("expired", "certificate-expired"),
        ("wrong_name", "certificate-host-mismatch"),
        ("no_san", "certificate-host-mismatch"),
        ("rogue", "certificate-not-trusted"),
        ("self_signed", "certificate-not-trusted"),
    ],
)
def test_mx_tls_failures(netsim: NetSim, check: Runner, cert: str | None, rt: str) -> None:
    setup_domain(netsim, "tls.test", {"mx1.tls.test": "good", "mx2.tls.test": cert})
    rc, doc = check("tls.test")
    assert rc == 1
    finding = only_error(doc)
    assert finding["check"] == "mx-tls" and finding["result_type"] == rt
    assert finding["subject"].startswith("mx2.tls.test [127.0.")
    assert finding["fix"]


def issue_expiring(netsim: NetSim, host: str, days: float, directory: Path) -> IssuedCert:
    """A trusted certificate for ``host`` that expires in ``days`` (netsim's kinds cannot)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.netsim.pki import IssuedCert

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC).replace(microsecond=0)
    ca = netsim.pki.ca
    cert = ca.sign_leaf(key, host, [host], now - timedelta(days=80), now + timedelta(days=days))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file, chain_file = (directory / f"{host}.{n}" for n in ("crt", "key", "pem"))
    cert_file.write_bytes(pem)
    chain_file.write_bytes(pem + ca.cert_pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return IssuedCert((host,), "good", cert, cert_file, key_file, chain_file)


def test_certificate_close_to_expiry(netsim: NetSim, check: Runner, tmp_path: Path) -> None:
    setup_domain(netsim, "soon.test")
    netsim.sink("mx1.soon.test").set_cert(issue_expiring(netsim, "mx1.soon.test", 5, tmp_path))
    rc, doc = check("soon.test")
    assert rc == 0  # a warning, not an error
    [finding] = [f for f in doc["findings"] if f["severity"] == "warn"]
    assert finding["check"] == "mx-cert-expiry" and "expires in 5.0 days" in finding["message"]
    rc, doc = check("soon.test", "--cert-warn-days", "3")
    assert rc == 0 and doc["counts"]["warn"] == 0


def test_unreachable_and_hanging_mx(netsim: NetSim, check: Runner) -> None:
    setup_domain(netsim, "down.test", {"mx1.down.test": "good"})
    netsim.set_mx("down.test", ["mx1.down.test", "dead.down.test", "hang.down.test"])
    netsim.dns.set("dead.down.test", "A", netsim.dead_address)
    netsim.dns.set("hang.down.test", "A", netsim.addresses.blackhole)
    netsim.publish_sts("down.test", mx=["*.down.test"], max_age=14 * DAY)
    rc, doc = check("down.test", "--smtp-timeout", "1")
    assert rc == 1
    found = {f["subject"].split()[0]: f["message"] for f in errors(doc)}
    assert found["dead.down.test"].startswith("cannot connect to port 25")
    assert found["hang.down.test"] == "no answer within 1 s (waiting for the greeting)"


def test_mx_without_address_and_null_mx(netsim: NetSim, check: Runner) -> None:
    setup_domain(netsim, "noaddr.test")
    netsim.set_mx("noaddr.test", ["mx1.noaddr.test", "ghost.noaddr.test"])
    netsim.publish_sts("noaddr.test", mx=["*.noaddr.test"], max_age=14 * DAY)
    rc, doc = check("noaddr.test")
    assert rc == 1 and "ghost.noaddr.test has no A/AAAA record" in only_error(doc)["message"]
    netsim.dns.set("noaddr.test", "MX", "0 .")
    rc, doc = check("noaddr.test")
    assert rc == 0 and "null MX" in doc["findings"][-1]["message"]


HOSTILE = b"\x1b]52;c;ZXZpbA==\x07\x1b[2J\x9b2J"  # clipboard write, clear screen, 8-bit CSI


def test_hostile_smtp_replies_reach_the_terminal_escaped(netsim: NetSim, capsys: Any) -> None:
    setup_domain(netsim, "esc.test", {"mx1.esc.test": "good", "mx2.esc.test": "good"})
    netsim.sink("mx1.esc.test").ehlo_reply = (b"550-5.7.1 " + HOSTILE + b" no", b"550 bye")
    netsim.sink("mx2.esc.test").banner = HOSTILE[:-3].decode()  # "220 mx2.esc.test ESC]52..."
    argv = ["esc.test", "--nameserver", netsim.nameserver, "--ca-file", str(netsim.ca_file)]
    argv += ["--smtp-timeout", "5", LAB]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert all(line.isprintable() for line in out.splitlines()), repr(out)
    shown = "\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\x9b2J"
    assert f"EHLO refused, so no STARTTLS: 550 5.7.1 {shown} no [starttls-not-supported]" in (
        " ".join(out.split())
    )
    assert "1 error, 0 warnings, 7 ok" in out  # mx2's greeting was a 220: it passed

    assert main([*argv, "--json"]) == 1
    text = capsys.readouterr().out
    assert all(c == "\n" or c.isprintable() for c in text), repr(text)
    [finding] = errors(json.loads(text))
    assert HOSTILE.decode("latin-1") in finding["message"]  # the data itself is kept


# --- --print-records, configuration, usage ----------------------------------------------------


def test_printed_records_once_published_pass_the_check(
    netsim: NetSim, check: Runner, capsys: Any
) -> None:
    netsim.mail_domain("new.test", ["mx1.new.test", "mx2.new.test"])
    ns = netsim.nameserver
    flags = ["--print-records", "--rua", "mailto:tlsrpt@new.test", "--mode", "enforce"]
    assert main(["new.test", "--nameserver", ns, *flags, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    tlsrpt, sts = doc["dns"]
    assert sts["value"].startswith("v=STSv1; id=20")
    netsim.publish_sts("new.test", policy=doc["policy"], txt=sts["value"])
    netsim.dns.set(tlsrpt["name"], "TXT", tlsrpt["value"])
    rc, report = check("new.test")
    assert rc == 0 and report["counts"]["warn"] == 0 and report["counts"]["error"] == 0
    assert main(["new.test", "--nameserver", ns, *flags[:3], "--mx", "*.new.test"]) == 0
    out = capsys.readouterr().out
    assert '_smtp._tls.new.test. 3600 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@new.test"' in out
    assert "mode: testing\nmx: *.new.test\nmax_age: 1209600\n" in out


def test_config_file_and_the_wiring_contract(netsim: NetSim, tmp_path: Path, capsys: Any) -> None:
    setup_domain(netsim, "conf.test")
    config = tmp_path / "tlsrpt.toml"
    config.write_text(
        f'[policy]\nnameservers = ["{netsim.nameserver}"]\nca_file = "{netsim.ca_file}"\n'
        "dns_timeout = 2.0\nfetch_timeout = 3.0\nallow_private_policy_hosts = true\n"
    )
    # What tlsrpt_lmtp/cli.py does: add_parser with the flag groups check uses, then run.
    parser = argparse.ArgumentParser(prog="tlsrpt-lmtp")
    check_cli.add_parser(parser.add_subparsers(dest="command", required=True), cliflags.CONFIG)
    args = parser.parse_args(["check", "conf.test", "--config", str(config)])
    assert check_cli.run(args) == 0
    assert "0 errors, 0 warnings" in capsys.readouterr().out
    config.write_text("[policy]\nnameserver = 1\n")
    assert check_cli.run(args) == 2
    assert "unknown key 'nameserver'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["not a domain"],
        ["x.test", "--nameserver", "dns.example"],
        ["x.test", "--nameserver", "127.0.0.1:99999"],
        ["x.test", "--ca-file", "/nonexistent/ca.pem"],
        ["x.test", "--rua", "mailto:a@x.test"],
        ["x.test", "--print-records"],
        ["x.test", "--print-records", "--rua", "mailto:a@x.test!1", "--mx", "mx.x.test"],
        ["x.test", "--smtp-timeout", "0"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: Any) -> None:
    assert main([*argv, "--nameserver", "127.0.0.1:1"]) == 2
    assert capsys.readouterr().err.startswith("tlsrpt-lmtp check: ")
