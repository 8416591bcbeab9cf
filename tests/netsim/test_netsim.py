"""The harness proves itself: each server of the loopback test internet, used by plain clients
(dnspython, ssl + http.client, smtplib), behaves the way the MTA-STS/DANE tests rely on."""

from __future__ import annotations

import hashlib
import http.client
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

if TYPE_CHECKING:
    from .fixtures import NetSim

pytest_plugins = ["tests.netsim.fixtures"]

FAST = 0.5  # client timeout where a test expects no answer at all


# ---- helpers: plain clients -------------------------------------------------------------------


def query(
    server: str,
    name: str,
    rdtype: str,
    *,
    tcp: bool = False,
    dnssec: bool = False,
    timeout: float = 2.0,
    edns: bool = True,
) -> dns.message.Message:
    host, port = server.rsplit(":", 1)
    msg = dns.message.make_query(name, rdtype, want_dnssec=dnssec, use_edns=0 if edns else False)
    if tcp:
        return dns.query.tcp(msg, host, port=int(port), timeout=timeout)
    return dns.query.udp(msg, host, port=int(port), timeout=timeout)


def answers(msg: dns.message.Message, rdtype: str) -> list[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return sorted(r.to_text() for rrset in msg.answer if rrset.rdtype == wanted for r in rrset)


def resolver_for(server: str) -> dns.resolver.Resolver:
    host, port = server.rsplit(":", 1)
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [host]
    res.port = int(port)
    res.lifetime = 3.0
    return res


def resolve_a(netsim: NetSim, name: str) -> str:
    return str(resolver_for(netsim.nameserver).resolve(name, "A")[0])


def client_context(netsim: NetSim, **kw: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(netsim.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for key, value in kw.items():
        setattr(ctx, key, value)
    return ctx


class _PolicyConnection(http.client.HTTPSConnection):
    """HTTPS to ``ip`` with SNI/hostname check = the ``host`` name (DNS done by the caller)."""

    def __init__(self, host: str, ip: str, context: ssl.SSLContext, sni: bool = True) -> None:
        super().__init__(host, 443, timeout=3, context=context)
        self._ip = ip
        self._sni = sni
        self._ctx = context

    def connect(self) -> None:
        raw = socket.create_connection((self._ip, 443), self.timeout)
        self.sock = self._ctx.wrap_socket(raw, server_hostname=self.host if self._sni else None)


def fetch_policy(
    netsim: NetSim, domain: str, context: ssl.SSLContext | None = None, *, sni: bool = True
) -> tuple[http.client.HTTPResponse, bytes]:
    host = f"mta-sts.{domain}"
    conn = _PolicyConnection(host, resolve_a(netsim, host), context or client_context(netsim), sni)
    conn.request("GET", "/.well-known/mta-sts.txt")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


class _NetsimSMTP(smtplib.SMTP):
    """smtplib that looks the host up in the test DNS (so SNI/hostname = the MX name)."""

    def __init__(self, nameserver: str, host: str, timeout: float = 5) -> None:
        self._nameserver = nameserver
        super().__init__(host, 25, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        ip = str(resolver_for(self._nameserver).resolve(host, "A")[0])
        return socket.create_connection((ip, port), timeout)


def smtp_to(netsim: NetSim, host: str, timeout: float = 5) -> smtplib.SMTP:
    return _NetsimSMTP(netsim.nameserver, host, timeout)


def make_message(to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@sender.example"
    msg["To"] = to
    msg["Subject"] = "netsim"
    msg.set_content("hello over the loopback internet\n")
    return msg


# ---- harness ----------------------------------------------------------------------------------


def test_addresses_are_loopback_and_distinct(netsim: NetSim) -> None:
    hosts = [
        netsim.nameserver_host,
        netsim.https_address,
        netsim.dead_address,
        netsim.addresses.blackhole,
    ]
    if netsim.resolver is not None:
        hosts.append(netsim.resolver.host)
    assert len(set(hosts)) == len(hosts)
    assert all(h.startswith("127.0.") and h != "127.0.0.1" for h in hosts)
    assert netsim.nameserver == f"{netsim.nameserver_host}:53"
    text = netsim.resolv_conf.read_text()
    assert "nameserver 127.0." in text and "trust-ad" in text


def test_second_instance_starts_fast_on_another_slot(netsim: NetSim) -> None:
    from .fixtures import NetSim

    started = time.monotonic()
    with NetSim() as other:
        elapsed = time.monotonic() - started
        assert other.slot != netsim.slot
        other.publish_sts("other.test")
        assert resolve_a(other, "mta-sts.other.test") == other.https_address
        # Each instance has its own CA: certificates of one are rogue to the other.
        assert other.ca_file.read_bytes() != netsim.ca_file.read_bytes()
    assert elapsed < 3.0, f"harness start-up took {elapsed:.2f} s"


def test_libc_resolver_in_a_namespace_sees_the_test_internet(netsim: NetSim) -> None:
    """What a real MTA started with ``in_dns_namespace`` gets from getaddrinfo()."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) not installed")
    netsim.mail_domain("libc.test")
    code = "import socket; print(socket.getaddrinfo('mx1.libc.test', 25)[0][4][0])"
    result = subprocess.run(
        netsim.in_dns_namespace([sys.executable, "-c", code]),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if result.returncode != 0 and "mount" in result.stderr:
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()}")
    assert result.stdout.strip() == netsim.sink("mx1.libc.test").host, result.stderr


def test_snapshot_and_restore(netsim: NetSim) -> None:
    state = netsim.snapshot()
    netsim.publish_sts("snap.test")
    netsim.add_sink("mx9.snap.test")
    netsim.dns.fail("x.snap.test", "servfail")
    netsim.restore(state)
    assert "mx9.snap.test" not in netsim.sinks
    assert netsim.dns.get("_mta-sts.snap.test", "TXT") == []
    assert "snap.test" not in netsim.https.sites
    assert query(netsim.nameserver, "x.snap.test", "A").rcode() == dns.rcode.NXDOMAIN


# ---- authoritative DNS --------------------------------------------------------------------------


def test_dns_record_types_udp_and_tcp(netsim: NetSim) -> None:
    d = netsim.dns
    d.set("_mta-sts.rr.test", "TXT", "v=STSv1; id=20261123;")
    d.set("rr.test", "MX", "10 mx1.rr.test", "20 mx2.rr.test")
    d.set("mx1.rr.test", "A", "127.0.0.10")
    d.set("mx1.rr.test", "AAAA", "::1")
    d.set("alias.rr.test", "CNAME", "mx1.rr.test")
    d.set("_25._tcp.mx1.rr.test", "TLSA", "3 1 1 " + "ab" * 32)
    for tcp in (False, True):
        ns = netsim.nameserver
        txt = query(ns, "_mta-sts.rr.test", "TXT", tcp=tcp)
        assert txt.flags & dns.flags.AA
        assert answers(txt, "TXT") == ['"v=STSv1; id=20261123;"']
        assert answers(query(ns, "rr.test", "MX", tcp=tcp), "MX") == [
            "10 mx1.rr.test.",
            "20 mx2.rr.test.",
        ]
        assert answers(query(ns, "mx1.rr.test", "AAAA", tcp=tcp), "AAAA") == ["::1"]
        cname = query(ns, "alias.rr.test", "A", tcp=tcp)
        assert answers(cname, "CNAME") == ["mx1.rr.test."]
        assert answers(cname, "A") == ["127.0.0.10"]
        tlsa = query(ns, "_25._tcp.mx1.rr.test", "TLSA", tcp=tcp)
        assert answers(tlsa, "TLSA") == ["3 1 1 " + "ab" * 32]
    # A stock stub resolver pointed at it follows the CNAME.
    assert [str(r) for r in resolver_for(netsim.nameserver).resolve("alias.rr.test", "A")] == [
        "127.0.0.10"
    ]


def test_dns_changes_are_seen_at_once(netsim: NetSim) -> None:
    netsim.dns.set("_mta-sts.chg.test", "TXT", "v=STSv1; id=1;")
    assert answers(query(netsim.nameserver, "_mta-sts.chg.test", "TXT"), "TXT") == [
        '"v=STSv1; id=1;"'
    ]
    netsim.set_sts_id("chg.test", "2")
    assert answers(query(netsim.nameserver, "_mta-sts.chg.test", "TXT"), "TXT") == [
        '"v=STSv1; id=2;"'
    ]
    netsim.dns.add("_mta-sts.chg.test", "TXT", ("v=STSv1; ", "id=3;"))  # two strings, one RR
    assert answers(query(netsim.nameserver, "_mta-sts.chg.test", "TXT"), "TXT") == [
        '"v=STSv1; " "id=3;"',
        '"v=STSv1; id=2;"',
    ]
    netsim.dns.remove("_mta-sts.chg.test", "TXT")
    assert query(netsim.nameserver, "_mta-sts.chg.test", "TXT").rcode() == dns.rcode.NXDOMAIN


def test_dns_nxdomain_nodata_and_empty_non_terminal(netsim: NetSim) -> None:
    netsim.dns.set("_25._tcp.mx1.neg.test", "TLSA", "3 1 1 " + "cd" * 32)
    netsim.dns.set("mx1.neg.test", "A", "127.0.0.11")
    ns = netsim.nameserver
    nx = query(ns, "nothing.neg.test", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN and not nx.answer
    assert [r.rdtype for r in nx.authority] == [dns.rdatatype.SOA]
    nodata = query(ns, "mx1.neg.test", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert [r.rdtype for r in nodata.authority] == [dns.rdatatype.SOA]
    ent = query(ns, "_tcp.mx1.neg.test", "TXT")  # exists only as a parent of the TLSA name
    assert ent.rcode() == dns.rcode.NOERROR and not ent.answer
    assert str(nodata.authority[0].name) == "test."
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver_for(ns).resolve("nothing.neg.test", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver_for(ns).resolve("mx1.neg.test", "AAAA")


def test_dns_truncation_and_tcp_fallback(netsim: NetSim) -> None:
    big = "v=STSv1; id=1; " + "x" * 3000
    netsim.dns.set("_mta-sts.big.test", "TXT", big)
    ns = netsim.nameserver
    udp = query(ns, "_mta-sts.big.test", "TXT")
    assert udp.flags & dns.flags.TC and not udp.answer
    no_edns = query(ns, "_mta-sts.big.test", "TXT", edns=False)
    assert no_edns.flags & dns.flags.TC
    host, port = ns.rsplit(":", 1)
    msg = dns.message.make_query("_mta-sts.big.test", "TXT")
    full, used_tcp = dns.query.udp_with_fallback(msg, host, port=int(port), timeout=2)
    assert used_tcp
    assert b"".join(full.answer[0][0].strings).decode() == big
    assert len(full.answer[0][0].strings) == 12  # split into 255-octet character-strings


@pytest.mark.parametrize(
    ("mode", "rcode"),
    [("servfail", dns.rcode.SERVFAIL), ("refused", dns.rcode.REFUSED)],
)
def test_dns_fault_rcodes(netsim: NetSim, mode: Any, rcode: int) -> None:
    netsim.dns.set("_mta-sts.flt.test", "TXT", "v=STSv1; id=1;")
    netsim.dns.set("mx1.flt.test", "A", "127.0.0.12")
    netsim.dns.fail("_mta-sts.flt.test", mode, "TXT")
    assert query(netsim.nameserver, "_mta-sts.flt.test", "TXT").rcode() == rcode
    # only that name and type
    assert query(netsim.nameserver, "_mta-sts.flt.test", "A").rcode() == dns.rcode.NOERROR
    assert answers(query(netsim.nameserver, "mx1.flt.test", "A"), "A") == ["127.0.0.12"]
    netsim.dns.clear_fault("_mta-sts.flt.test", "TXT")
    assert query(netsim.nameserver, "_mta-sts.flt.test", "TXT").rcode() == dns.rcode.NOERROR


def test_dns_fault_timeout_nxdomain_delay(netsim: NetSim) -> None:
    ns = netsim.nameserver
    netsim.dns.set("mx1.slow.test", "A", "127.0.0.13")
    netsim.dns.fail("mx1.slow.test", "timeout")
    for tcp in (False, True):
        started = time.monotonic()
        with pytest.raises(dns.exception.Timeout):
            query(ns, "mx1.slow.test", "A", tcp=tcp, timeout=FAST)
        assert time.monotonic() - started < FAST + 0.5
    netsim.dns.fail("mx1.slow.test", "nxdomain")
    assert query(ns, "mx1.slow.test", "A").rcode() == dns.rcode.NXDOMAIN
    netsim.dns.fail("mx1.slow.test", "delay", delay=0.3)
    started = time.monotonic()
    assert answers(query(ns, "mx1.slow.test", "A"), "A") == ["127.0.0.13"]
    assert time.monotonic() - started >= 0.3
    netsim.dns.clear_fault()
    assert answers(query(ns, "mx1.slow.test", "A"), "A") == ["127.0.0.13"]


def test_dns_query_log(netsim: NetSim) -> None:
    netsim.publish_sts("log.test")
    query(netsim.nameserver, "_mta-sts.log.test", "TXT")
    query(netsim.nameserver, "_mta-sts.log.test", "TXT", tcp=True)
    seen = netsim.dns.queries_for("_mta-sts.log.test", "TXT")
    assert [q.transport for q in seen] == ["udp", "tcp"]


# ---- validating resolver (DNSSEC, AD bit) ------------------------------------------------------


def test_resolver_sets_ad_for_signed_data(netsim: NetSim) -> None:
    resolver = netsim.require_resolver()
    netsim.dns.add_zone("dane.test", "signed")
    sinks = netsim.mail_domain("dane.test", {"mx1.dane.test": "good"})
    tlsa = netsim.publish_tlsa("mx1.dane.test")
    for name, rdtype in [
        ("dane.test", "MX"),
        ("mx1.dane.test", "A"),
        ("_25._tcp.mx1.dane.test", "TLSA"),
    ]:
        reply = query(resolver, name, rdtype, dnssec=True)
        assert reply.rcode() == dns.rcode.NOERROR, (name, reply)
        assert reply.flags & dns.flags.AD, (name, rdtype)
    reply = query(resolver, "_25._tcp.mx1.dane.test", "TLSA", dnssec=True)
    assert answers(reply, "TLSA") == [tlsa]
    # The record matches the sink's certificate: SHA-256 of its SubjectPublicKeyInfo.
    cert = sinks["mx1.dane.test"].cert
    assert cert is not None
    assert tlsa == f"3 1 1 {hashlib.sha256(cert.spki_der).hexdigest()}"
    # The same query without DO gets no AD bit (RFC 6840 5.7) but the same data.
    plain = query(resolver, "_25._tcp.mx1.dane.test", "TLSA")
    assert not plain.flags & dns.flags.AD and answers(plain, "TLSA") == [tlsa]


def test_resolver_authenticated_denial(netsim: NetSim) -> None:
    resolver = netsim.require_resolver()
    netsim.dns.set("mx1.deny.test", "A", "127.0.0.14")
    nx = query(resolver, "nothing.deny.test", "A", dnssec=True)
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.flags & dns.flags.AD
    nodata = query(resolver, "_25._tcp.mx1.deny.test", "TLSA", dnssec=True)  # NXDOMAIN too
    assert nodata.flags & dns.flags.AD
    nodata = query(resolver, "mx1.deny.test", "TLSA", dnssec=True)
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.flags & dns.flags.AD


def test_resolver_insecure_and_bogus_zones(netsim: NetSim) -> None:
    resolver = netsim.require_resolver()
    netsim.dns.add_zone("plain.test", "unsigned")
    netsim.dns.add_zone("broken.test", "bogus")
    netsim.dns.set("mx1.plain.test", "A", "127.0.0.15")
    netsim.dns.set("mx1.broken.test", "A", "127.0.0.16")
    netsim.dns.set("mx1.sig.test", "A", "127.0.0.17")
    insecure = query(resolver, "mx1.plain.test", "A", dnssec=True)
    assert answers(insecure, "A") == ["127.0.0.15"] and not insecure.flags & dns.flags.AD
    assert query(resolver, "mx1.broken.test", "A", dnssec=True).rcode() == dns.rcode.SERVFAIL
    # per-name bogus signatures in an otherwise good zone
    assert query(resolver, "mx1.sig.test", "A", dnssec=True).flags & dns.flags.AD
    netsim.dns.fail("mx1.sig.test", "bogus")
    assert query(resolver, "mx1.sig.test", "A", dnssec=True).rcode() == dns.rcode.SERVFAIL
    # ... which a non-validating client does not notice
    direct = query(netsim.nameserver, "mx1.sig.test", "A", dnssec=True)
    assert answers(direct, "A") == ["127.0.0.17"]
    # the zone can change its mode at run time
    netsim.dns.add_zone("broken.test", "signed")
    fixed = query(resolver, "mx1.broken.test", "A", dnssec=True)
    assert fixed.flags & dns.flags.AD and answers(fixed, "A") == ["127.0.0.16"]


def test_resolver_sees_changes_and_faults_at_once(netsim: NetSim) -> None:
    resolver = netsim.require_resolver()
    netsim.dns.set("mx1.live.test", "A", "127.0.0.18")
    assert answers(query(resolver, "mx1.live.test", "A", dnssec=True), "A") == ["127.0.0.18"]
    netsim.dns.set("mx1.live.test", "A", "127.0.0.19")
    assert answers(query(resolver, "mx1.live.test", "A", dnssec=True), "A") == ["127.0.0.19"]
    netsim.dns.fail("mx1.live.test", "servfail")
    assert query(resolver, "mx1.live.test", "A", dnssec=True).rcode() == dns.rcode.SERVFAIL
    netsim.dns.fail("mx1.live.test", "timeout")
    with pytest.raises(dns.exception.Timeout):
        query(resolver, "mx1.live.test", "A", dnssec=True, timeout=FAST)
    netsim.dns.clear_fault("mx1.live.test")
    reply = query(resolver, "mx1.live.test", "A", dnssec=True)
    assert answers(reply, "A") == ["127.0.0.19"] and reply.flags & dns.flags.AD


# ---- HTTPS policy server ------------------------------------------------------------------------


def test_https_serves_policy_with_sni(netsim: NetSim) -> None:
    site = netsim.publish_sts("good.test", mx=["mx1.good.test", "*.mx.good.test"], max_age=604800)
    assert resolve_a(netsim, "mta-sts.good.test") == netsim.https_address
    txt = query(netsim.nameserver, "_mta-sts.good.test", "TXT")
    assert answers(txt, "TXT") == ['"v=STSv1; id=20261123;"']
    resp, body = fetch_policy(netsim, "good.test")
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/plain"
    assert body == (
        b"version: STSv1\nmode: enforce\nmx: mx1.good.test\nmx: *.mx.good.test\nmax_age: 604800\n"
    )
    assert site.body_bytes() == body
    (request,) = netsim.https.requests_for("good.test")
    assert request.sni == "mta-sts.good.test"
    assert request.path == "/.well-known/mta-sts.txt"
    assert request.tls_version == "TLSv1.3"
    # TLS 1.2 works too
    resp, _ = fetch_policy(
        netsim, "good.test", client_context(netsim, maximum_version=ssl.TLSVersion.TLSv1_2)
    )
    assert resp.status == 200
    assert netsim.https.requests[-1].tls_version == "TLSv1.2"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("expired", "certificate has expired"),
        ("not_yet_valid", "certificate is not yet valid"),
        ("wrong_name", "Hostname mismatch"),
        ("self_signed", "self-signed certificate"),
        ("rogue", "self-signed certificate in certificate chain"),
        ("no_san", "Hostname mismatch"),
    ],
)
def test_https_bad_certificates(netsim: NetSim, kind: Any, message: str) -> None:
    netsim.publish_sts("badcert.test", cert=kind)
    # RFC 8461 3.3 / RFC 6125: SAN dNSName only. Python falls back to the subject CN unless told
    # not to, so an MTA-STS client must set hostname_checks_common_name = False.
    ctx = client_context(netsim, hostname_checks_common_name=False)
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        fetch_policy(netsim, "badcert.test", ctx)
    assert message in str(info.value)
    assert netsim.https.sni_seen[-1] == "mta-sts.badcert.test"
    assert netsim.https.requests_for("badcert.test") == []


def test_https_cn_only_certificate_passes_pythons_default_check(netsim: NetSim) -> None:
    """The pitfall the ``no_san`` kind exists for: ssl's default accepts a CN-only cert."""
    netsim.publish_sts("cnonly.test", cert="no_san")
    assert fetch_policy(netsim, "cnonly.test")[0].status == 200


def test_https_wildcard_certificate(netsim: NetSim) -> None:
    netsim.publish_sts("wild.test", cert_names=("*.wild.test",))
    assert fetch_policy(netsim, "wild.test")[0].status == 200


def test_https_rogue_cert_is_valid_for_the_rogue_ca(netsim: NetSim) -> None:
    netsim.publish_sts("rogue.test", cert="rogue")
    ctx = ssl.create_default_context(cafile=str(netsim.rogue_ca_file))
    resp, _ = fetch_policy(netsim, "rogue.test", ctx)
    assert resp.status == 200


def test_https_without_sni_gets_the_default_certificate(netsim: NetSim) -> None:
    netsim.publish_sts("nosni.test")
    ctx = client_context(netsim, check_hostname=False)  # chain still verified
    resp, _ = fetch_policy(netsim, "nosni.test", ctx, sni=False)  # the Host header routes
    assert resp.status == 200
    assert netsim.https.requests[-1].sni is None
    with (
        socket.create_connection((netsim.https_address, 443), 3) as raw,
        ctx.wrap_socket(raw, server_hostname=None) as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    assert cert["subjectAltName"] == (("DNS", "netsim-default.invalid"),)


def test_https_status_type_redirect_and_headers(netsim: NetSim) -> None:
    site = netsim.publish_sts("http.test")
    site.status = 404
    resp, _ = fetch_policy(netsim, "http.test")
    assert resp.status == 404
    site.status = 301
    site.location = "https://elsewhere.test/.well-known/mta-sts.txt"
    resp, _ = fetch_policy(netsim, "http.test")
    assert resp.status == 301
    assert resp.getheader("Location") == "https://elsewhere.test/.well-known/mta-sts.txt"
    site.status, site.location = 200, None
    site.content_type = "text/html; charset=utf-8"
    site.headers = {"Cache-Control": "max-age=31557600"}
    resp, _ = fetch_policy(netsim, "http.test")
    assert resp.getheader("Content-Type") == "text/html; charset=utf-8"
    assert resp.getheader("Cache-Control") == "max-age=31557600"
    site.content_type = None
    resp, _ = fetch_policy(netsim, "http.test")
    assert resp.getheader("Content-Type") is None
    # unknown path and unknown domain: 404
    netsim.dns.set("mta-sts.unknown.test", "A", netsim.https_address)
    resp, _ = fetch_policy(netsim, "unknown.test", client_context(netsim, check_hostname=False))
    assert resp.status == 404


def test_https_slow_oversized_and_chunked(netsim: NetSim) -> None:
    site = netsim.publish_sts("shape.test", delay=0.3)
    started = time.monotonic()
    resp, _ = fetch_policy(netsim, "shape.test")
    assert resp.status == 200 and time.monotonic() - started >= 0.3
    site.delay, site.body_delay = 0.0, 0.3
    started = time.monotonic()
    fetch_policy(netsim, "shape.test")
    assert time.monotonic() - started >= 0.3
    site.body_delay, site.oversize = 0.0, 70 * 1024
    _, body = fetch_policy(netsim, "shape.test")
    assert len(body) >= 70 * 1024
    assert body.startswith(b"version: STSv1\nmode: enforce\n")
    assert all(b":" in line for line in body.splitlines())  # still policy-shaped
    site.oversize, site.chunked = 0, True
    resp, body = fetch_policy(netsim, "shape.test")
    assert resp.chunked and resp.getheader("Transfer-Encoding") == "chunked"
    assert body == site.body_bytes()


def test_https_down_and_hanging_hosts(netsim: NetSim) -> None:
    netsim.publish_sts("down.test", host_state="down")
    assert resolve_a(netsim, "mta-sts.down.test") == netsim.dead_address
    with pytest.raises(ConnectionRefusedError):
        fetch_policy(netsim, "down.test")
    netsim.set_sts_host("down.test", "hang")
    raw = socket.create_connection((resolve_a(netsim, "mta-sts.down.test"), 443), timeout=FAST)
    with pytest.raises(TimeoutError):
        client_context(netsim).wrap_socket(raw, server_hostname="mta-sts.down.test")
    raw.close()
    netsim.set_sts_host("down.test", "up")
    assert fetch_policy(netsim, "down.test")[0].status == 200


def test_https_pause_and_resume(netsim: NetSim) -> None:
    netsim.publish_sts("pause.test")
    netsim.pause_https()
    with pytest.raises(ConnectionRefusedError):
        fetch_policy(netsim, "pause.test")
    netsim.resume_https()
    assert fetch_policy(netsim, "pause.test")[0].status == 200
    netsim.pause_https()  # left paused on purpose: the fixture's restore resumes it


def test_https_is_running_again_after_a_paused_test(netsim: NetSim) -> None:
    assert netsim.https.running


# ---- SMTP sinks ---------------------------------------------------------------------------------


def test_sink_good_starttls_delivery(netsim: NetSim) -> None:
    sinks = netsim.mail_domain("mail.test", {"mx1.mail.test": "good", "mx2.mail.test": "good"})
    mx = answers(query(netsim.nameserver, "mail.test", "MX"), "MX")
    assert mx == ["10 mx1.mail.test.", "20 mx2.mail.test."]
    with smtp_to(netsim, "mx1.mail.test") as smtp:
        code, _ = smtp.ehlo("sender.example")
        assert code == 250 and smtp.has_extn("starttls")
        smtp.starttls(context=client_context(netsim))
        smtp.ehlo("sender.example")
        smtp.send_message(make_message("user@mail.test"))
    sink = sinks["mx1.mail.test"]
    (msg,) = sink.wait_for_messages(1, timeout=5)
    assert msg.rcpt_tos == ("user@mail.test",)
    assert msg.mail_from == "sender@sender.example"
    assert msg.helo == "sender.example"
    assert msg.tls is not None and msg.tls.sni == "mx1.mail.test"
    assert msg.tls.version in ("TLSv1.2", "TLSv1.3")
    assert msg.message["Subject"] == "netsim"
    assert sinks["mx2.mail.test"].messages == []


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("rogue", "self-signed certificate in certificate chain"),
        ("wrong_name", "Hostname mismatch"),
        ("expired", "certificate has expired"),
        ("self_signed", "self-signed certificate"),
    ],
)
def test_sink_bad_certificates_are_refused(netsim: NetSim, kind: Any, message: str) -> None:
    sink = netsim.add_sink("mx1.bad.test", kind)
    with smtp_to(netsim, "mx1.bad.test") as smtp:
        smtp.ehlo("sender.example")
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            smtp.starttls(context=client_context(netsim))
    assert message in str(info.value)
    deadline = time.monotonic() + 2
    while sink.handshake_failures == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.handshake_failures == 1
    assert sink.sni_seen == ["mx1.bad.test"]
    assert sink.messages == []


def test_sink_without_starttls(netsim: NetSim) -> None:
    sink = netsim.add_sink("mx1.notls.test", None)
    with smtp_to(netsim, "mx1.notls.test") as smtp:
        smtp.ehlo("sender.example")
        assert not smtp.has_extn("starttls")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            smtp.starttls(context=client_context(netsim))
        smtp.send_message(make_message("user@notls.test"))
    (msg,) = sink.wait_for_messages(1, timeout=5)
    assert msg.tls is None


def test_sink_certificate_can_change_and_wait_is_bounded(netsim: NetSim) -> None:
    sink = netsim.add_sink("mx1.flip.test", "rogue")
    netsim.add_sink("mx1.flip.test", "good")  # same sink, new certificate
    with smtp_to(netsim, "mx1.flip.test") as smtp:
        smtp.starttls(context=client_context(netsim))
        smtp.send_message(make_message("user@flip.test"))
    assert len(sink.wait_for_messages(1)) == 1
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        sink.wait_for_messages(2, timeout=0.2)
    assert time.monotonic() - started < 1


def test_blackhole_smtp_hangs(netsim: NetSim) -> None:
    netsim.dns.set("mx1.hang.test", "A", netsim.addresses.blackhole)
    started = time.monotonic()
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        smtp_to(netsim, "mx1.hang.test", timeout=FAST)  # no greeting ever comes
    assert time.monotonic() - started < FAST + 0.5
