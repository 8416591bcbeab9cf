"""End-to-end: real Postfix asks our MTA-STS policy daemon (socketmap) and obeys it.

Postfix delivers to the netsim STARTTLS sinks (loopback "MX hosts" with good, rogue-CA,
wrong-name or no certificates); MX records come from the netsim DNS because Postfix runs in a
private mount namespace whose /etc/resolv.conf names the netsim resolver
(``NetSim.in_dns_namespace``). Debian's Postfix 3.7 is the main subject; Postfix 3.10 from
bookworm-backports (scripts/install-postfix310.sh) shows that the ``sts-tlsrpt`` map name's TLSRPT
attributes are understood there, and 3.7 shows why they are opt-in (it defers the mail).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .harness import (
    POSTCONF_BIN,
    POSTFIX_BIN,
    POSTQUEUE_BIN,
    LmtpEndpoint,
    PostfixInstance,
    require_postfix,
    require_tools,
    run,
)
from .policy_daemon import WAIT, PolicyDaemon, received, running_daemon, submit, wait_received

if TYPE_CHECKING:
    from tests.netsim.fixtures import NetSim
    from tests.netsim.pki import CertKind
    from tests.netsim.smtp_sink import SmtpSink

pytest_plugins = ["tests.netsim.fixtures"]
pytestmark = pytest.mark.mta

POSTFIX310_ROOT = Path(os.environ.get("TLSRPT_POSTFIX310_ROOT", "/opt/tlsrpt-test/postfix310"))
POSTFIX310_HINT = "run scripts/install-postfix310.sh as root"


# --------------------------------------------------------------------------------------------
# a Postfix that relays to the netsim MX hosts, with the policy daemon as smtp_tls_policy_maps
# --------------------------------------------------------------------------------------------


class StsPostfix(PostfixInstance):
    """A throwaway Postfix (Debian's 3.7, or an extracted tree such as 3.10) that relays by MX
    to the netsim test internet and asks ``policy_map`` for the TLS policy of each next hop."""

    def __init__(
        self, workdir: Path, netsim: NetSim, policy_map: str, *, root: Path | None = None
    ) -> None:
        super().__init__(workdir, LmtpEndpoint.tcp())  # the LMTP side is not used here
        self.netsim = netsim
        self.policy_map = policy_map
        self.root = root
        sbin = (root / "usr" / "sbin") if root is not None else None
        self.postfix_bin = sbin / "postfix" if sbin else POSTFIX_BIN
        self.postconf_bin = sbin / "postconf" if sbin else POSTCONF_BIN
        self.postqueue_bin = sbin / "postqueue" if sbin else POSTQUEUE_BIN
        self.postmap_bin = (sbin if sbin else POSTFIX_BIN.parent) / "postmap"
        if root is not None:
            self.master_templates = (root / "etc/postfix/master.cf.proto",)

    def main_cf(self) -> dict[str, str]:
        cf = super().main_cf()
        cf.update(
            {
                "default_transport": "smtp",
                "relay_transport": "smtp",
                "smtp_dns_support_level": "enabled",
                "smtp_address_preference": "ipv4",
                "smtp_tls_security_level": "may",
                "smtp_tls_CAfile": str(self.netsim.ca_file),
                "smtp_tls_loglevel": "1",
                "smtp_tls_policy_maps": self.policy_map,
                "smtp_connect_timeout": "5s",
                "smtp_helo_timeout": "10s",
                "delay_warning_time": "0",
            }
        )
        if self.root is not None:
            cf.update(
                {
                    "compatibility_level": "3.10",
                    "daemon_directory": str(self.root / "usr/lib/postfix/sbin"),
                    "shlib_directory": str(self.root / "usr/lib/postfix"),
                    "meta_directory": str(self.root / "etc/postfix"),
                    "command_directory": str(self.root / "usr/sbin"),
                }
            )
        return cf

    def start_command(self) -> Sequence[str | Path]:
        """``postfix start`` inside the netsim DNS namespace: master and every smtp process it
        forks resolve MX and A records through the netsim resolver."""
        return self.netsim.in_dns_namespace([str(a) for a in self._cmd("start")])

    def postmap_query(self, key: str, table: str) -> tuple[int, str, str]:
        """``postmap -c DIR -q KEY TABLE``: (exit status, stdout, stderr)."""
        proc = run([self.postmap_bin, "-c", self.config_dir, "-q", key, table], check=False)
        return proc.returncode, proc.stdout.strip(), proc.stderr.strip()

    # --- outcomes ----------------------------------------------------------------------------

    def queue_id(self, tag: str) -> str:
        """The queue id of the message whose Message-ID is ``<tag@...>``."""
        line = self.wait_for_log(
            rf"postfix/cleanup\[\d+\]: \w+: message-id=<{re.escape(tag)}@", timeout=WAIT
        )
        found = re.search(r": (\w+): message-id=", line)
        assert found is not None, line
        return found[1]

    def wait_outcome(self, tag: str, rcpt: str, status: str, *, containing: str = "") -> str:
        """The smtp log line with ``status`` (sent, deferred) for message ``tag`` to ``rcpt``."""
        pattern = (
            rf"postfix/smtp\[\d+\]: {self.queue_id(tag)}: to=<{re.escape(rcpt)}>.* status={status}"
        )
        return self.wait_for_log(pattern, containing=containing, timeout=WAIT)

    def tls_line_before(self, outcome: str, host: str) -> str:
        """The "... TLS connection established to HOST[" line the same smtp process logged
        last before ``outcome`` (Verified, Trusted, Untrusted or Anonymous)."""
        pid = re.search(r"postfix/smtp\[(\d+)\]", outcome)
        assert pid is not None, outcome
        lines = self.log_text().splitlines()
        before = lines[: lines.index(outcome)]
        needle = f"TLS connection established to {host}["
        for line in reversed(before):
            if f"postfix/smtp[{pid[1]}]" in line and needle in line:
                return line
        raise AssertionError(f"no {needle!r} line before {outcome!r}" + self.diagnostics())

    def log_lines(self, needle: str) -> list[str]:
        return [line for line in self.log_text().splitlines() if needle in line]


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


def _require_postfix() -> None:
    require_postfix(POSTFIX_BIN.parent / "postmap")
    require_tools("unshare", "mount", why="needed to run Postfix on the test DNS")


def _require_postfix310() -> Path:
    if not (POSTFIX310_ROOT / ".installed").is_file():
        pytest.skip(f"Postfix 3.10 not extracted at {POSTFIX310_ROOT}: {POSTFIX310_HINT}")
    return POSTFIX310_ROOT


@pytest.fixture
def daemon(workdir: Path, netsim: NetSim) -> Iterator[PolicyDaemon]:
    """The policy daemon, running, on the netsim DNS and trusting the netsim test CA."""
    _require_postfix()
    with running_daemon(workdir, netsim) as policy:
        yield policy


def _postfix(
    workdir: Path, netsim: NetSim, policy_map: str, root: Path | None = None
) -> Iterator[StsPostfix]:
    _require_postfix()
    with StsPostfix(workdir, netsim, policy_map, root=root) as instance:
        yield instance


@pytest.fixture
def postfix37(workdir: Path, netsim: NetSim, daemon: PolicyDaemon) -> Iterator[StsPostfix]:
    """Debian's Postfix with ``smtp_tls_policy_maps = socketmap:...:sts``."""
    yield from _postfix(workdir / "pf37", netsim, daemon.socketmap("sts"))


def assert_verified_delivery(postfix: StsPostfix, sink: SmtpSink, rcpt: str, tag: str) -> None:
    """``tag`` was sent to ``sink`` over TLS that Postfix verified, with SNI = the MX name."""
    line = postfix.wait_outcome(tag, rcpt, "sent")
    assert f"relay={sink.hostname}[{sink.host}]:25" in line, line
    tls = postfix.tls_line_before(line, sink.hostname)
    assert tls.split("]: ", 1)[1].startswith("Verified TLS"), tls
    got = wait_received(sink, tag)
    assert got.tls is not None, "the message arrived in clear text"
    assert got.tls.sni == sink.hostname, f"SNI {got.tls.sni!r}, expected servername=hostname"


def assert_deferred_nothing_sent(
    postfix: StsPostfix, sink: SmtpSink, rcpt: str, tag: str, *, dsn: str, reason: str
) -> str:
    """``tag`` was deferred with ``dsn`` and ``reason``, is still queued, and ``sink`` has not
    got it."""
    line = postfix.wait_outcome(tag, rcpt, "deferred")
    assert f"dsn={dsn}," in line and reason in line, f"expected {dsn} {reason!r}: {line}"
    assert not received(sink, tag), f"{tag} reached {sink.hostname} although deferred"
    queued = [e.recipients for e in postfix.queue()]
    assert queued == [(rcpt,)], f"queue: {queued}" + postfix.diagnostics()
    return line


# --------------------------------------------------------------------------------------------
# 1. postmap -q through the daemon
# --------------------------------------------------------------------------------------------


def test_postmap_queries(workdir: Path, netsim: NetSim, daemon: PolicyDaemon) -> None:
    """Postfix's own socketmap client gets `secure match=... servername=hostname` for an
    enforce domain and "not found" (exit 1, no output) for testing, none, no policy and the
    parent-domain key `.example.test`."""
    netsim.mail_domain("enf.example.test", ["mx1.enf.example.test"])
    netsim.publish_sts("enf.example.test", mx=["mx1.enf.example.test", "*.mx.example.test"])
    netsim.publish_sts("tst.example.test", mode="testing")
    netsim.publish_sts("off.example.test", mode="none")
    postfix = StsPostfix(workdir / "pf37", netsim, daemon.socketmap("sts"))
    postfix.configure()  # postmap only needs the config directory
    table = daemon.socketmap("sts")

    rc, out, err = postfix.postmap_query("enf.example.test", table)
    assert (rc, err) == (0, ""), (rc, out, err)
    assert out == "secure match=mx1.enf.example.test:.mx.example.test servername=hostname"

    for key in ("tst.example.test", "off.example.test", "nopolicy.example.test", ".example.test"):
        rc, out, err = postfix.postmap_query(key, table)
        assert (rc, out, err) == (1, "", ""), f"{key}: {(rc, out, err)}" + daemon.diagnostics()

    # Upper case and a trailing dot are the same domain.
    rc, out, _ = postfix.postmap_query("ENF.Example.Test.", table)
    assert rc == 0 and out.startswith("secure match=mx1.enf.example.test:"), out
    fetched = {e["domain"] for e in daemon.events("sts.policy_fetched")}
    assert fetched == {"enf.example.test", "tst.example.test", "off.example.test"}, fetched


# --------------------------------------------------------------------------------------------
# 2. deliveries from Postfix 3.7
# --------------------------------------------------------------------------------------------


def test_enforce_good_certificate_is_sent_verified(netsim: NetSim, postfix37: StsPostfix) -> None:
    sink = netsim.mail_domain("good.example.test", {"mx1.good.example.test": "good"})[
        "mx1.good.example.test"
    ]
    netsim.publish_sts("good.example.test", mx=["mx1.good.example.test"])
    rcpt = "user@good.example.test"
    tag = submit(postfix37.smtp_port, rcpt)
    assert_verified_delivery(postfix37, sink, rcpt, tag)
    postfix37.wait_queue_empty()


@pytest.mark.parametrize(
    ("mx_host", "cert", "dsn", "detail"),
    [
        ("mx1.bad.example.test", "wrong_name", "4.7.5", "num=62:hostname mismatch"),
        ("mx1.bad.example.test", "rogue", "4.7.5", "untrusted issuer /O=tlsrpt-lmtp netsim"),
        ("mx1.bad.example.test", None, "4.7.4", None),
        ("mx.elsewhere.example.test", "good", "4.7.5", "num=62:hostname mismatch"),
    ],
    ids=["name-mismatch", "rogue-ca", "no-starttls", "mx-not-in-policy"],
)
def test_enforce_bad_mx_is_deferred(
    netsim: NetSim,
    postfix37: StsPostfix,
    mx_host: str,
    cert: CertKind | None,
    dsn: str,
    detail: str | None,
) -> None:
    """enforce (policy mx: mx1.bad.example.test) + an MX that cannot be verified: a
    certificate for another name, from a rogue CA, no STARTTLS at all, or a valid certificate
    of an MX host the policy does not list. Deferred with 4.7.x, nothing reaches the sink."""
    sink = netsim.mail_domain("bad.example.test", {mx_host: cert})[mx_host]
    netsim.publish_sts("bad.example.test", mx=["mx1.bad.example.test"])
    rcpt = "user@bad.example.test"
    tag = submit(postfix37.smtp_port, rcpt)
    reason = (
        "Server certificate not verified"
        if cert is not None
        else f"TLS is required, but was not offered by host {mx_host}["
    )
    assert_deferred_nothing_sent(postfix37, sink, rcpt, tag, dsn=dsn, reason=reason)
    if detail is not None:
        failed = postfix37.log_lines(f"certificate verification failed for {mx_host}[")
        assert failed and detail in failed[-1], postfix37.diagnostics()


def test_testing_mode_rogue_certificate_is_delivered(netsim: NetSim, postfix37: StsPostfix) -> None:
    """mode testing: the daemon answers NOTFOUND, Postfix's own level (may) applies and the
    message goes out over unverified TLS."""
    host = "mx1.tst.example.test"
    sink = netsim.mail_domain("tst.example.test", {host: "rogue"})[host]
    netsim.publish_sts("tst.example.test", mode="testing", mx=[host])
    rcpt = "user@tst.example.test"
    tag = submit(postfix37.smtp_port, rcpt)
    line = postfix37.wait_outcome(tag, rcpt, "sent")
    tls = postfix37.tls_line_before(line, host)
    assert tls.split("]: ", 1)[1].startswith("Untrusted TLS"), tls
    got = wait_received(sink, tag)
    assert got.tls is not None, "testing mode should still use (opportunistic) TLS"


def test_daemon_down_defers_then_delivers(
    netsim: NetSim, postfix37: StsPostfix, daemon: PolicyDaemon
) -> None:
    """No answer from the policy daemon is a table lookup error for Postfix: the mail is
    deferred (never sent without the policy), and goes out verified once the daemon is back."""
    domain, host = "down.example.test", "mx1.down.example.test"
    sink = netsim.mail_domain(domain, {host: "good"})[host]
    netsim.publish_sts(domain, mx=[host])
    daemon.stop()
    rcpt = f"user@{domain}"
    tag = submit(postfix37.smtp_port, rcpt)
    assert_deferred_nothing_sent(
        postfix37, sink, rcpt, tag, dsn="4.7.5", reason="client TLS configuration problem"
    )
    assert postfix37.log_lines(f'next-hop destination "{domain}": policy table lookup error')
    assert sink.connections == 0, "Postfix connected without knowing the policy"
    daemon.start()
    postfix37.flush()
    assert_verified_delivery(postfix37, sink, rcpt, tag)
    postfix37.wait_queue_empty()


def test_postfix37_wildcard_match_is_any_depth(netsim: NetSim, postfix37: StsPostfix) -> None:
    """A known limit of Postfix < 3.10.5 (contrib/postfix/mta-sts.md): the daemon turns the
    policy pattern ``*.wild.example.test`` into ``match=.wild.example.test``, which Postfix
    takes as any depth, so an MX two labels below is accepted (RFC 8461 §4.1: one label only;
    the Exim include refuses it). Its certificate is valid for its own name."""
    host = "deep.mx7.wild.example.test"
    sink = netsim.mail_domain("wild.example.test", {host: "good"})[host]
    netsim.publish_sts("wild.example.test", mx=["*.wild.example.test"])
    rcpt = "user@wild.example.test"
    tag = submit(postfix37.smtp_port, rcpt)
    assert_verified_delivery(postfix37, sink, rcpt, tag)


def test_cached_policy_survives_policy_host_down_and_restart(
    netsim: NetSim, postfix37: StsPostfix, daemon: PolicyDaemon
) -> None:
    """The first delivery fetches the policy; then the policy host goes down, the TXT record
    disappears and the daemon restarts: the policy (from the SQLite cache) is still applied,
    so a rogue certificate is refused and the good one accepted."""
    domain, host = "cached.example.test", "mx1.cached.example.test"
    sink = netsim.mail_domain(domain, {host: "good"})[host]
    netsim.publish_sts(domain, mx=[host], id="cache1")
    rcpt = f"user@{domain}"
    tag1 = submit(postfix37.smtp_port, rcpt)
    assert_verified_delivery(postfix37, sink, rcpt, tag1)
    assert [e["domain"] for e in daemon.events("sts.policy_fetched")] == [domain]

    netsim.set_sts_host(domain, "down")
    netsim.dns.remove(f"_mta-sts.{domain}")
    daemon.restart()
    fetches = len(netsim.https.requests_for(domain))
    assert fetches == 1, netsim.https.requests_for(domain)

    netsim.add_sink(host, "rogue")  # same MX host, now with a certificate from a rogue CA
    tag2 = submit(postfix37.smtp_port, rcpt)
    assert_deferred_nothing_sent(
        postfix37, sink, rcpt, tag2, dsn="4.7.5", reason="Server certificate not verified"
    )
    assert daemon.socketmap_query(domain).startswith(f"OK secure match={host} "), (
        daemon.diagnostics()
    )

    netsim.add_sink(host, "good")
    postfix37.flush()
    assert_verified_delivery(postfix37, sink, rcpt, tag2)
    postfix37.wait_queue_empty()
    assert [e["domain"] for e in daemon.events("sts.policy_fetched")] == [domain], (
        "the restarted daemon fetched the policy again" + daemon.diagnostics()
    )
    assert len(netsim.https.requests_for(domain)) == fetches


# --------------------------------------------------------------------------------------------
# 3. TLSRPT attributes: Postfix 3.10 takes them, 3.7 defers
# --------------------------------------------------------------------------------------------


def test_postfix310_accepts_tlsrpt_attributes(
    workdir: Path, netsim: NetSim, daemon: PolicyDaemon
) -> None:
    """Postfix 3.10 with the ``sts-tlsrpt`` map name: the reply carries policy_type,
    policy_domain, mx_host_pattern and policy_string attributes; Postfix takes them, delivers
    over verified TLS to the good MX and still defers on a rogue certificate."""
    root = _require_postfix310()
    host, rogue_host = "mx1.attr.example.test", "mx1.attr-rogue.example.test"
    sink = netsim.mail_domain("attr.example.test", {host: "good"})[host]
    rogue = netsim.mail_domain("attr-rogue.example.test", {rogue_host: "rogue"})[rogue_host]
    netsim.publish_sts("attr.example.test", mx=[host])
    netsim.publish_sts("attr-rogue.example.test", mx=[rogue_host])
    reply = daemon.socketmap_query("attr.example.test", "sts-tlsrpt")
    assert reply.startswith(f"OK secure match={host} servername=hostname "), reply
    assert "policy_type=sts policy_domain=attr.example.test" in reply, reply
    assert f"mx_host_pattern={host}" in reply and "{ policy_string = mode: enforce }" in reply
    for postfix in _postfix(workdir / "pf310", netsim, daemon.socketmap("sts-tlsrpt"), root):
        # postlogd writes the log a moment after master starts: wait for the line (bounded)
        postfix.wait_for_log(r"daemon started -- version 3\.10")
        rcpt, rogue_rcpt = "user@attr.example.test", "user@attr-rogue.example.test"
        tag = submit(postfix.smtp_port, rcpt)
        assert_verified_delivery(postfix, sink, rcpt, tag)
        rogue_tag = submit(postfix.smtp_port, rogue_rcpt)
        assert_deferred_nothing_sent(
            postfix,
            rogue,
            rogue_rcpt,
            rogue_tag,
            dsn="4.7.5",
            reason="Server certificate not verified",
        )
        assert not postfix.log_lines("invalid attribute"), postfix.diagnostics()
        assert not postfix.log_lines("policy table lookup error"), postfix.diagnostics()


def test_postfix37_defers_on_tlsrpt_attributes(
    workdir: Path, netsim: NetSim, daemon: PolicyDaemon
) -> None:
    """The reason the attributes are opt-in: Postfix < 3.10 does not know them and defers."""
    host = "mx1.attr37.example.test"
    sink = netsim.mail_domain("attr37.example.test", {host: "good"})[host]
    netsim.publish_sts("attr37.example.test", mx=[host])
    for postfix in _postfix(workdir / "pf37", netsim, daemon.socketmap("sts-tlsrpt")):
        rcpt = "user@attr37.example.test"
        tag = submit(postfix.smtp_port, rcpt)
        assert_deferred_nothing_sent(
            postfix, sink, rcpt, tag, dsn="4.7.5", reason="client TLS configuration problem"
        )
        assert postfix.log_lines('invalid attribute name: "policy_type"'), postfix.diagnostics()
