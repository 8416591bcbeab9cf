"""End-to-end: a real Exim routes by our MTA-STS policy daemon's answer (line protocol).

The Exim configuration ``.include``s ``contrib/exim/mta-sts.conf`` itself (routers part and
transports part), so what is tested is exactly the file users copy. Exim relays by MX to the
netsim STARTTLS sinks; it resolves MX records through the netsim resolver because the daemon
(and every ``exim -qff`` run) lives in a private mount namespace whose /etc/resolv.conf names
it (``NetSim.in_dns_namespace``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .harness import (
    EXIM_BIN,
    LOOPBACK,
    PROJECT_ROOT,
    EximInstance,
    LmtpEndpoint,
    require_exim,
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

STS_CONF = PROJECT_ROOT / "contrib" / "exim" / "mta-sts.conf"

EXIM_POLICY_CONF = """\
# Throwaway Exim for the MTA-STS policy tests: relays by MX to the netsim test internet.
exim_path = {exim_bin}
primary_hostname = exim-client.example.test
qualify_domain = client.example.test
spool_directory = {spool}
log_file_path = {logdir}/%slog
pid_file_path = {pidfile}
daemon_smtp_ports = {smtp_port}
local_interfaces = 127.0.0.1
disable_ipv6 = true
keep_environment =
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
log_selector = +tls_sni +tls_peerdn +tls_certificate_verified +outgoing_port
domainlist local_domains = @ : localhost
acl_smtp_rcpt = acl_check_rcpt

# contrib/exim/mta-sts.conf settings
TLSPOL_SOCKET = {policy_socket}
STS_CA_FILE = {ca_file}

begin acl

acl_check_rcpt:
  accept hosts = 127.0.0.1
  deny   message = loopback only

begin routers

STS_ROUTERS = yes
.include {sts_conf}

dnslookup:
  driver = dnslookup
  domains = ! +local_domains
  transport = remote_smtp
  no_more

begin transports

STS_TRANSPORTS = yes
.include {sts_conf}

remote_smtp:
  driver = smtp
  tls_verify_certificates = {ca_file}
  tls_sni = $host

begin retry

* * F,1h,5s
"""


class StsExim(EximInstance):
    """The extracted Exim, relaying by MX, with ``contrib/exim/mta-sts.conf`` included."""

    name = "exim"

    def __init__(
        self,
        workdir: Path,
        netsim: NetSim,
        daemon: PolicyDaemon,
        *,
        sts_conf: Path = STS_CONF,
        policy_socket: str | None = None,
    ) -> None:
        super().__init__(workdir, LmtpEndpoint.tcp())  # the LMTP side is not used here
        self.netsim = netsim
        self.sts_conf = sts_conf
        self.policy_socket = policy_socket or daemon.exim_socket
        self.ca_file = self.workdir / "test-ca.pem"

    def configure(self) -> None:
        # Exim verifies as Debian-exim, which cannot read the netsim's private work directory.
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.netsim.ca_file, self.ca_file)
        os.chmod(self.ca_file, 0o644)
        super().configure()

    def config_text(self) -> str:
        return EXIM_POLICY_CONF.format(
            exim_bin=EXIM_BIN,
            spool=self.spool,
            logdir=self.logdir,
            pidfile=self.pidfile,
            smtp_port=self.smtp_port,
            policy_socket=self.policy_socket,
            ca_file=self.ca_file,
            sts_conf=self.sts_conf,
        )

    def command(self, *args: str) -> list[str]:
        """Inside the netsim DNS namespace: the daemon and its deliveries resolve MX there."""
        return self.netsim.in_dns_namespace(super().command(*args))

    def flush(self) -> None:
        """``exim -qff`` (forced queue run), in the DNS namespace like the daemon."""
        run(self.command("-qff"))

    def deliver(self, message_id: str) -> None:
        """``exim -M ID``: deliver one message now, whatever the retry times say."""
        run(self.command("-M", message_id))

    def expand(self, text: str) -> str:
        """``exim -be TEXT`` (macros of the configuration available): the exact result."""
        out = self.exim("-be", text)
        assert out.endswith("\n"), repr(out)
        return out[:-1]

    # --- outcomes ----------------------------------------------------------------------------

    def message_id(self, tag: str) -> str:
        line = self.wait_for_log(rf" <= .* id={re.escape(tag)}@", timeout=WAIT)
        found = re.search(r" ([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) <= ", line)
        assert found is not None, line
        return found[1]

    def wait_outcome(self, tag: str, rcpt: str, marker: str, *, containing: str = "") -> str:
        """The log line ``<id> <marker> <rcpt> ...``: marker ``=>`` delivered, ``==`` deferred."""
        pattern = rf" {self.message_id(tag)} {re.escape(marker)} {re.escape(rcpt)} "
        return self.wait_for_log(pattern, containing=containing, timeout=WAIT)


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


def _require_exim() -> None:
    require_exim()
    require_tools("unshare", "mount", why="needed to run Exim on the test DNS")


@pytest.fixture
def daemon(workdir: Path, netsim: NetSim) -> Iterator[PolicyDaemon]:
    _require_exim()
    with running_daemon(workdir, netsim) as policy:
        yield policy


@contextlib.contextmanager
def running_exim(
    workdir: Path,
    netsim: NetSim,
    daemon: PolicyDaemon,
    *,
    sts_conf: Path = STS_CONF,
    policy_socket: str | None = None,
) -> Iterator[StsExim]:
    with StsExim(workdir, netsim, daemon, sts_conf=sts_conf, policy_socket=policy_socket) as exim:
        yield exim


@pytest.fixture
def exim(workdir: Path, netsim: NetSim, daemon: PolicyDaemon) -> Iterator[StsExim]:
    """Exim with contrib/exim/mta-sts.conf, asking ``daemon``."""
    with running_exim(workdir, netsim, daemon) as instance:
        yield instance


def assert_verified_delivery(exim: StsExim, sink: SmtpSink, rcpt: str, tag: str) -> str:
    """``tag`` went to ``sink`` through sts_enforce, certificate verified (CV=yes), SNI set."""
    line = exim.wait_outcome(tag, rcpt, "=>")
    assert "R=sts_enforce T=sts_enforce_smtp" in line, line
    assert f"H={sink.hostname} [{sink.host}]" in line and " CV=yes " in line, line
    got = wait_received(sink, tag)
    assert got.tls is not None and got.tls.sni == sink.hostname, got.tls
    return line


def assert_deferred_nothing_sent(
    exim: StsExim, sink: SmtpSink, rcpt: str, tag: str, *, reason: str
) -> str:
    """``tag`` was deferred (``reason`` in the log line), is still queued, and ``sink`` has
    not got it."""
    line = exim.wait_outcome(tag, rcpt, "==")
    assert reason in line, f"expected {reason!r} in: {line}" + exim.diagnostics()
    assert not received(sink, tag), f"{tag} reached {sink.hostname} although deferred"
    queued = [e.queue_id for e in exim.queue()]
    assert exim.message_id(tag) in queued, f"queue: {queued}" + exim.diagnostics()
    return line


def sts_answer_macro(domain: str) -> str:
    """contrib's STS_ANSWER macro (continuation lines joined as Exim does), for ``domain``."""
    lines = STS_CONF.read_text().splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("STS_ANSWER = "))
    text = ""
    for line in lines[start:]:
        text += line.strip() if text else line.removeprefix("STS_ANSWER = ")
        if not text.endswith("\\"):
            break
        text = text[:-1]
    return text.replace("$domain", domain)


# --------------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------------


def test_readsocket_answers(netsim: NetSim, exim: StsExim, daemon: PolicyDaemon) -> None:
    """What ${readsocket} gets from the daemon: Exim 4.96 keeps the line's newline (the eol
    argument does not strip it), contrib's STS_ANSWER strips it, and answers mode=temp when the
    daemon is down."""
    netsim.publish_sts("enf.example.test", mx=["mx1.enf.example.test", "*.mx.example.test"])
    line = (
        'mode=enforce domain=enf.example.test mx="mx1.enf.example.test:*.mx.example.test" '
        "max_age=86400 id=20261123"
    )
    raw = exim.expand("${readsocket{TLSPOL_SOCKET}{enf.example.test\\n}{3s}{}{FAIL}}")
    assert raw == line + "\n", repr(raw)
    assert exim.expand(sts_answer_macro("enf.example.test")) == line
    assert exim.expand(sts_answer_macro("nothing.example.test")) == "mode=none"
    daemon.stop()
    assert exim.expand(sts_answer_macro("enf.example.test")) == (
        'mode=temp reason="MTA-STS policy daemon unreachable"'
    )


def test_enforce_good_certificate_delivered_verified(netsim: NetSim, exim: StsExim) -> None:
    """enforce + a good certificate: routed by sts_enforce, delivered with CV=yes."""
    host = "mx1.good.example.test"
    sink = netsim.mail_domain("good.example.test", {host: "good"})[host]
    netsim.publish_sts("good.example.test", mx=[host])
    rcpt = "user@good.example.test"
    tag = submit(exim.smtp_port, rcpt)
    assert_verified_delivery(exim, sink, rcpt, tag)


@pytest.mark.parametrize(
    ("mx_host", "cert", "reason"),
    [
        ("mx1.bad.example.test", "rogue", "certificate verification failed"),
        ("mx1.bad.example.test", "wrong_name", "certificate verification failed"),
        ("mx1.bad.example.test", None, "the server did not offer TLS support"),
        # the event_action check: Exim logs "Event requests alternate response", defer (-58)
        ("mx.elsewhere.example.test", "good", "defer (-58)"),
    ],
    ids=["rogue-ca", "name-mismatch", "no-starttls", "mx-not-in-policy"],
)
def test_enforce_bad_mx_deferred(
    netsim: NetSim, exim: StsExim, mx_host: str, cert: CertKind | None, reason: str
) -> None:
    """enforce (policy mx: mx1.bad.example.test) + an MX Exim must not deliver to: rogue CA,
    certificate for another name, no STARTTLS, or a host with a valid certificate that the
    policy does not list (never even connected to). Deferred, nothing at the sink."""
    sink = netsim.mail_domain("bad.example.test", {mx_host: cert})[mx_host]
    netsim.publish_sts("bad.example.test", mx=["mx1.bad.example.test"])
    rcpt = "user@bad.example.test"
    tag = submit(exim.smtp_port, rcpt)
    line = assert_deferred_nothing_sent(exim, sink, rcpt, tag, reason=reason)
    assert "R=sts_enforce T=sts_enforce_smtp" in line, line
    refused = f"H={mx_host} [{sink.host}]:25 Event requests alternate response"
    if mx_host.startswith("mx1."):
        assert refused not in exim.log_text(), "the mx pattern check refused a listed host"
    else:
        assert refused in exim.log_text(), exim.diagnostics()
        assert sink.connections == 0, "Exim connected to an MX host the policy does not list"


def test_testing_mode_rogue_certificate_delivered(netsim: NetSim, exim: StsExim) -> None:
    """mode=testing falls through to the normal dnslookup/remote_smtp: delivered, CV=no."""
    host = "mx1.tst.example.test"
    sink = netsim.mail_domain("tst.example.test", {host: "rogue"})[host]
    netsim.publish_sts("tst.example.test", mode="testing", mx=[host])
    rcpt = "user@tst.example.test"
    tag = submit(exim.smtp_port, rcpt)
    line = exim.wait_outcome(tag, rcpt, "=>")
    assert "R=dnslookup T=remote_smtp" in line and " CV=no " in line, line
    assert wait_received(sink, tag).tls is not None


def test_daemon_down_defers_then_delivers(
    netsim: NetSim, exim: StsExim, daemon: PolicyDaemon
) -> None:
    """Daemon down: ${readsocket} fails, mode=temp, sts_defer defers (nothing sent, in clear
    or otherwise); with the daemon back, a queue run delivers it verified."""
    host = "mx1.down.example.test"
    sink = netsim.mail_domain("down.example.test", {host: "good"})[host]
    netsim.publish_sts("down.example.test", mx=[host])
    daemon.stop()
    rcpt = "user@down.example.test"
    tag = submit(exim.smtp_port, rcpt)
    line = assert_deferred_nothing_sent(
        exim, sink, rcpt, tag, reason="MTA-STS policy daemon unreachable"
    )
    assert "R=sts_defer" in line, line
    daemon.start()
    exim.flush()
    assert_verified_delivery(exim, sink, rcpt, tag)


def test_daemon_garbage_answer_defers(workdir: Path, netsim: NetSim, daemon: PolicyDaemon) -> None:
    """Anything but a known mode (here a server that answers "hello") defers the mail: an
    unexpected answer must never mean "no policy, send in clear"."""
    host = "mx1.odd.example.test"
    sink = netsim.mail_domain("odd.example.test", {host: None})[host]  # would accept plain text
    netsim.publish_sts("odd.example.test", mx=[host])
    with (
        line_server(b"hello\n") as address,
        running_exim(workdir, netsim, daemon, policy_socket=f"inet:{address}") as exim,
    ):
        rcpt = "user@odd.example.test"
        tag = submit(exim.smtp_port, rcpt)
        line = assert_deferred_nothing_sent(
            exim, sink, rcpt, tag, reason="MTA-STS policy of odd.example.test unknown: unexpected"
        )
        assert "R=sts_defer" in line and '"hello"' in line, line
        assert sink.connections == 0


@pytest.mark.parametrize(
    ("mx_host", "delivered"),
    [
        ("mx7.wild.example.test", True),
        ("deep.mx7.wild.example.test", False),
        ("wild.example.test", False),
    ],
    ids=["one-label", "two-labels", "bare-domain"],
)
def test_wildcard_pattern_covers_exactly_one_label(
    netsim: NetSim, exim: StsExim, mx_host: str, delivered: bool
) -> None:
    """RFC 8461 §4.1: ``*.wild.example.test`` matches mx7.wild.example.test only, not a
    deeper name nor the bare domain (each MX here has a valid certificate for its own name, so
    only the event_action pattern check decides)."""
    sink = netsim.mail_domain("wild.example.test", {mx_host: "good"})[mx_host]
    netsim.publish_sts("wild.example.test", mx=["*.wild.example.test"])
    rcpt = "user@wild.example.test"
    tag = submit(exim.smtp_port, rcpt)
    if delivered:
        assert_verified_delivery(exim, sink, rcpt, tag)
    else:
        assert_deferred_nothing_sent(exim, sink, rcpt, tag, reason="defer (-58)")
        assert sink.connections == 0, f"Exim connected to {mx_host}"


def test_enforce_message_does_not_ride_testing_connection(netsim: NetSim, exim: StsExim) -> None:
    """The doc's pitfall: a testing-mode message opens an unverified connection to an MX host
    that an enforce-mode message is waiting for. The enforce message must stay queued (it is
    in the sts_enforce_smtp transport's wait list, never in remote_smtp's)."""
    host = "mx.mixed.example.test"
    sink = netsim.add_sink(host, "rogue")
    for domain, mode in (("strict.example.test", "enforce"), ("lax.example.test", "testing")):
        netsim.set_mx(domain, [host])
        netsim.publish_sts(domain, mode=mode, mx=[host])
    strict, lax = "user@strict.example.test", "user@lax.example.test"
    tag_strict = submit(exim.smtp_port, strict)
    assert_deferred_nothing_sent(
        exim, sink, strict, tag_strict, reason="certificate verification failed"
    )
    tag_lax = submit(exim.smtp_port, lax)
    exim.wait_for_log(rf" {exim.message_id(tag_lax)} (=>|==) ", timeout=WAIT)
    if not received(sink, tag_lax):  # the host's retry time (from strict's failure) not reached
        exim.deliver(exim.message_id(tag_lax))
    line = exim.wait_outcome(tag_lax, lax, "=>")
    assert "R=dnslookup T=remote_smtp" in line and " CV=no " in line, line
    exim.wait_for_log(rf" {exim.message_id(tag_lax)} Completed", timeout=WAIT)
    assert_stays_queued(exim, sink, strict, tag_strict)


@pytest.mark.parametrize("with_limit", [True, False], ids=["contrib", "control-without-limit"])
def test_enforce_connection_not_reused_for_another_domain(
    workdir: Path, netsim: NetSim, daemon: PolicyDaemon, with_limit: bool
) -> None:
    """Two enforce domains share MX host H; only one's policy lists H. After the listed domain's
    message is delivered to H, Exim would pass the other domain's waiting message down the same
    connection, where no tcp:connect check runs: ``connection_max_messages = 1`` prevents that.
    The control (the same file without that line) shows the leak really happens."""
    conf = STS_CONF
    if not with_limit:
        conf = workdir / "mta-sts-without-limit.conf"
        lines = STS_CONF.read_text().splitlines(keepends=True)
        conf.write_text("".join(x for x in lines if "connection_max_messages" not in x))
    host = "mx.shared.example.test"
    sink = netsim.add_sink(host, "good")
    netsim.set_mx("listed.example.test", [host])
    netsim.publish_sts("listed.example.test", mx=[host])
    netsim.set_mx("unlisted.example.test", [host])
    netsim.publish_sts("unlisted.example.test", mx=["mx.unlisted.example.test"])
    listed, unlisted = "user@listed.example.test", "user@unlisted.example.test"
    with running_exim(workdir, netsim, daemon, sts_conf=conf) as exim:
        tag_unlisted = submit(exim.smtp_port, unlisted)
        assert_deferred_nothing_sent(exim, sink, unlisted, tag_unlisted, reason="defer (-58)")
        tag_listed = submit(exim.smtp_port, listed)
        listed_id = exim.message_id(tag_listed)
        exim.wait_for_log(rf" {listed_id} (=>|==) ", timeout=WAIT)
        if not received(sink, tag_listed):  # H's retry time (from the refusal) not reached
            exim.deliver(listed_id)
        assert_verified_delivery(exim, sink, listed, tag_listed)
        exim.wait_for_log(rf" {listed_id} Completed", timeout=WAIT)
        if with_limit:
            assert_stays_queued(exim, sink, unlisted, tag_unlisted)
        else:
            line = exim.wait_outcome(tag_unlisted, unlisted, "=>")
            assert f"H={host} [{sink.host}]:25* " in line, line  # "*": a continued connection
            assert received(sink, tag_unlisted)


# --------------------------------------------------------------------------------------------
# more helpers
# --------------------------------------------------------------------------------------------


def assert_stays_queued(exim: StsExim, sink: SmtpSink, rcpt: str, tag: str) -> None:
    """Nothing delivers ``tag`` for a while (a continued connection would do it at once)."""
    message_id = exim.message_id(tag)
    never(
        lambda: bool(received(sink, tag)) or f" {message_id} => " in exim.log_text(),
        seconds=2.0,
        what=f"{tag} ({message_id}) delivered to {sink.hostname}" + exim.diagnostics(),
    )
    assert [e.queue_id for e in exim.queue()] == [message_id], exim.diagnostics()


def never(probe: Callable[[], bool], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not probe(), f"unexpected: {what}"
        time.sleep(0.1)


@contextlib.contextmanager
def line_server(answer: bytes) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that reads one line and answers ``answer``; yields HOST:PORT."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOPBACK, 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(1024)
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, name="line-server", daemon=True)
    thread.start()
    try:
        yield f"{LOOPBACK}:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()
