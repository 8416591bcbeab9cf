"""``NetSim`` (the whole loopback test internet in one object) and its pytest fixtures.

Use from a conftest.py::

    from tests.netsim.fixtures import netsim, netsim_session  # noqa: F401

or in the root conftest::

    pytest_plugins = ["tests.netsim.fixtures"]

Fixtures
--------
``netsim_session`` (session scope): one ``NetSim`` for the whole run, started on first use
(well under a second) and stopped at the end. Skips, with the reason, when not root or a
package is missing. For module/class-scoped fixtures that publish shared test data.

``netsim`` (function scope): the same object, but whatever the test changes (DNS records,
zones and faults, policy sites, sinks it added) is undone afterwards, and the logs (DNS queries,
HTTPS requests, sink messages) are cleared before the test starts.

Addresses (one /24 per running harness, a "slot", so parallel runs don't collide; the slot is
held with a lock file in ``/tmp/netsim-slots``; ``NETSIM_SLOT=n`` picks one): with
``B = 127.0.(100+slot)``: ``B.53:53`` authoritative DNS, ``B.54:53`` validating resolver
(unbound), ``B.80:443`` HTTPS policy server, ``B.81`` nothing (connection refused), ``B.82``
blackhole (443 and 25 accept and hang), ``B.100``-``B.199`` SMTP sinks on port 25, ``B.200``-
``B.250`` for tests (``alloc_address``).

Typical use::

    def test_enforce(netsim):
        netsim.mail_domain("example.test", {"mx1.example.test": "good"})
        netsim.publish_sts("example.test", mx=["mx1.example.test"])
        daemon = start_daemon(nameserver=netsim.nameserver, ca_file=netsim.ca_file)
        ...
        netsim.dns.fail("_mta-sts.example.test", "servfail", "TXT")
        netsim.site("example.test").status = 404
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Optional

import pytest

from . import LoopThread

# Importable without the optional packages (cryptography, aiosmtpd), so that collecting a test
# module that uses these fixtures never fails: the fixtures skip with the reason instead.
_IMPORT_ERROR: ImportError | None = None
try:
    from .dns import DnsServer, DnsState, ValidatingResolver, unbound_available
    from .https import Blackhole, PolicyServer, PolicySite
    from .pki import CertKind, IssuedCert, TestPKI
    from .smtp_sink import SmtpSink
except ImportError as exc:  # pragma: no cover - depends on the environment
    _IMPORT_ERROR = exc

INSTALL_HINT = "run scripts/install-netsim-deps.sh as root"
SLOT_LOCK_DIR = Path(tempfile.gettempdir()) / "netsim-slots"
SLOT_COUNT = 100
HostState = Literal["up", "down", "hang"]
SinkCert = Optional["CertKind"]  # None: the sink offers no STARTTLS


@dataclass(frozen=True)
class Addresses:
    """The loopback addresses of one slot."""

    slot: int

    @property
    def prefix(self) -> str:
        return f"127.0.{100 + self.slot}"

    @property
    def dns(self) -> str:
        return f"{self.prefix}.53"

    @property
    def resolver(self) -> str:
        return f"{self.prefix}.54"

    @property
    def https(self) -> str:
        return f"{self.prefix}.80"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.81"

    @property
    def blackhole(self) -> str:
        return f"{self.prefix}.82"

    def sink(self, index: int) -> str:
        if not 0 <= index < 100:
            raise ValueError("at most 100 sinks per harness")
        return f"{self.prefix}.{100 + index}"

    def spare(self, index: int) -> str:
        if not 0 <= index <= 50:
            raise ValueError("at most 51 spare addresses per harness")
        return f"{self.prefix}.{200 + index}"


def _lock_slot() -> tuple[int, IO[str]]:
    """Take the first free slot (or ``NETSIM_SLOT``) and keep its lock file open."""
    SLOT_LOCK_DIR.mkdir(mode=0o1777, parents=True, exist_ok=True)
    forced = os.environ.get("NETSIM_SLOT")
    candidates = [int(forced)] if forced else list(range(SLOT_COUNT))
    for slot in candidates:
        handle = open(SLOT_LOCK_DIR / f"slot-{slot:02d}.lock", "a+")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        if _addresses_free(Addresses(slot)):
            return slot, handle
        handle.close()
    raise RuntimeError(f"netsim: no free slot (lock files in {SLOT_LOCK_DIR})")


def _addresses_free(addrs: Addresses) -> bool:
    """Nothing (outside the lock protocol) already listens on the slot's DNS/HTTPS ports."""
    for host, port in ((addrs.dns, 53), (addrs.resolver, 53), (addrs.https, 443)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return False
    return True


def policy_text(
    mode: str = "enforce",
    mx: Sequence[str] = (),
    max_age: int | str = 86400,
    *,
    version: str = "STSv1",
    extra_lines: Sequence[str] = (),
    line_ending: str = "\n",
) -> str:
    """An RFC 8461 policy file: ``version``, ``mode``, one ``mx`` line each, ``max_age``."""
    lines = [f"version: {version}", f"mode: {mode}"]
    lines += [f"mx: {m}" for m in mx]
    lines.append(f"max_age: {max_age}")
    lines += list(extra_lines)
    return line_ending.join(lines) + line_ending


@dataclass
class NetSimState:
    dns: DnsState
    sites: dict[str, PolicySite]
    sinks: frozenset[str]
    sink_certs: dict[str, IssuedCert | None]


class NetSim:
    """The loopback test internet; see the module docstring. Root only (ports 25/53/443)."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        resolver: bool = True,
        dns_port: int = 53,
        https_port: int = 443,
        smtp_port: int = 25,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="netsim-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.smtp_port = smtp_port
        self.slot, self._slot_lock = _lock_slot()
        self.addresses = Addresses(self.slot)
        self.pki = TestPKI(self.workdir / "pki")
        self.dns = DnsServer(self.addresses.dns, dns_port)
        self.https = PolicyServer(self.addresses.https, https_port, self.pki)
        self.blackhole = Blackhole(self.addresses.blackhole, (https_port, smtp_port))
        self.resolver: ValidatingResolver | None = None
        if resolver and unbound_available():
            self.resolver = ValidatingResolver(
                self.addresses.resolver, dns_port, self.workdir / "unbound", self.dns
            )
        self.sinks: dict[str, SmtpSink] = {}
        self._free_sink_index = 0
        self._free_spare_index = 0
        self._loop = LoopThread()
        self._started = False

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> NetSim:
        try:
            self._loop.start()
            self._loop.run(self.dns.start())
            self._loop.run(self.https.start())
            self._loop.run(self.blackhole.start())
            if self.resolver is not None:
                self.resolver.start()
                self.dns.change_listeners.append(self.resolver.flush)
            self._started = True
            self._write_resolv_conf()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.resolver is not None:
            with contextlib.suppress(Exception):
                self.resolver.stop()
        if self._loop.loop.is_running():
            for sink in list(self.sinks.values()):
                with contextlib.suppress(Exception):
                    self._loop.run(sink.stop(), timeout=5)
            for server in (self.blackhole, self.https, self.dns):
                with contextlib.suppress(Exception):
                    self._loop.run(server.stop(), timeout=5)
        self._loop.stop()
        self._started = False
        with contextlib.suppress(Exception):
            self._slot_lock.close()
        if self._own_workdir and not os.environ.get("NETSIM_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> NetSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- where things are ------------------------------------------------------------------

    @property
    def nameserver(self) -> str:
        """The authoritative server, ``"127.0.N.53:53"`` (answers for every test zone)."""
        return self.dns.nameserver

    @property
    def nameserver_host(self) -> str:
        return self.dns.host

    @property
    def nameserver_port(self) -> int:
        return self.dns.port

    @property
    def resolver_address(self) -> str | None:
        """The validating resolver (unbound), ``"127.0.N.54:53"``, or None without unbound."""
        return self.resolver.address if self.resolver is not None else None

    @property
    def ca_file(self) -> Path:
        """Trust store for the code under test: the test CA only (PEM)."""
        return self.pki.ca_file

    @property
    def rogue_ca_file(self) -> Path:
        return self.pki.rogue_ca_file

    @property
    def https_address(self) -> str:
        return self.https.host

    @property
    def dead_address(self) -> str:
        """An address on which nothing listens: connections are refused at once."""
        return self.addresses.dead

    @property
    def resolv_conf(self) -> Path:
        """A resolv.conf naming the resolver (or the authoritative server without unbound),
        with ``options edns0 trust-ad``: bind-mount it over /etc/resolv.conf in a private
        mount namespace to point a real MTA at the test internet."""
        return self.workdir / "resolv.conf"

    def _write_resolv_conf(self) -> None:
        server = self.resolver.host if self.resolver is not None else self.dns.host
        self.resolv_conf.write_text(
            f"nameserver {server}\noptions edns0 trust-ad timeout:2 attempts:2\n"
        )

    def in_dns_namespace(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run in a private mount namespace where ``/etc/resolv.conf`` is
        ``resolv_conf``: the libc resolver of that process (and of a Postfix or Exim started
        by it) then uses the test internet. Needs root and ``unshare`` (util-linux)."""
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            str(self.resolv_conf),
            *argv,
        ]

    def require_resolver(self) -> str:
        """The resolver address, or skip the test (unbound not installed)."""
        if self.resolver is None:
            pytest.skip(f"unbound is not installed: no validating resolver ({INSTALL_HINT})")
        return self.resolver.address

    def alloc_address(self) -> str:
        """A fresh loopback address of this slot for a test's own server."""
        address = self.addresses.spare(self._free_spare_index)
        self._free_spare_index += 1
        return address

    # ---- MTA-STS -----------------------------------------------------------------------------

    def publish_sts(
        self,
        domain: str,
        mode: str = "enforce",
        mx: Sequence[str] | None = None,
        max_age: int | str = 86400,
        id: str = "20261123",
        *,
        txt: str | tuple[str, ...] | Sequence[str | tuple[str, ...]] | None = None,
        policy: str | bytes | None = None,
        extra_lines: Sequence[str] = (),
        line_ending: str = "\n",
        cert: CertKind = "good",
        host_state: HostState = "up",
        **site_options: Any,
    ) -> PolicySite:
        """Publish an MTA-STS policy for ``domain``; returns its (changeable) ``PolicySite``.

        Creates the ``_mta-sts.<domain>`` TXT (``v=STSv1; id=<id>``, or ``txt``: one record
        value, a tuple of character-strings, or a list of several records), the
        ``mta-sts.<domain>`` A record (→ the HTTPS server, or see ``host_state``), a
        certificate of kind ``cert`` for ``mta-sts.<domain>`` and the policy file
        (``policy`` verbatim, or built from mode/mx/max_age/extra_lines). ``mx`` defaults to
        ``["mx1.<domain>"]`` (``[]`` for mode none). ``site_options``: ``PolicySite`` fields
        (status, content_type, location, delay, body_delay, oversize, chunked, headers,
        cert_names).
        """
        domain = domain.lower().rstrip(".")
        if mx is None:
            mx = [] if mode == "none" else [f"mx1.{domain}"]
        body = (
            policy
            if policy is not None
            else policy_text(mode, mx, max_age, extra_lines=extra_lines, line_ending=line_ending)
        )
        if txt is None:
            records: list[str | tuple[str, ...]] = [f"v=STSv1; id={id};"]
        elif isinstance(txt, str | tuple):
            records = [txt]
        else:
            records = list(txt)
        self.dns.set(f"_mta-sts.{domain}", "TXT", *records)
        site = self.https.set_site(domain, body=body, cert=cert, **site_options)
        self.set_sts_host(domain, host_state)
        return site

    def set_sts_id(self, domain: str, id: str) -> None:
        """Change only the TXT record's ``id`` (the signal to fetch the policy again)."""
        self.dns.set(f"_mta-sts.{domain.lower().rstrip('.')}", "TXT", f"v=STSv1; id={id};")

    def site(self, domain: str) -> PolicySite:
        """The policy site of ``domain``: change its fields to change what is served."""
        return self.https.site(domain)

    def set_sts_host(self, domain: str, state: HostState) -> None:
        """``up``: mta-sts.<domain> → HTTPS server; ``down``: → an address where nothing
        listens (connection refused); ``hang``: → the blackhole (TCP accepted, no TLS)."""
        target = {
            "up": self.https.host,
            "down": self.addresses.dead,
            "hang": self.addresses.blackhole,
        }[state]
        self.dns.set(f"mta-sts.{domain.lower().rstrip('.')}", "A", target)

    def pause_https(self) -> None:
        """Close the HTTPS listener: every policy host refuses connections until resumed."""
        self._loop.run(self.https.pause())

    def resume_https(self) -> None:
        if not self.https.running:
            self._loop.run(self.https.resume())

    def unpublish_sts(self, domain: str) -> None:
        domain = domain.lower().rstrip(".")
        self.dns.remove(f"_mta-sts.{domain}")
        self.dns.remove(f"mta-sts.{domain}")
        self.https.remove_site(domain)

    def publish_tlsrpt(self, domain: str, rua: str = "mailto:tlsrpt@reports.example.test") -> None:
        """``_smtp._tls.<domain> TXT "v=TLSRPTv1; rua=<rua>"`` (RFC 8460)."""
        self.dns.set(f"_smtp._tls.{domain.lower().rstrip('.')}", "TXT", f"v=TLSRPTv1; rua={rua}")

    # ---- mail hosts --------------------------------------------------------------------------

    def add_sink(
        self, host: str, cert: SinkCert = "good", *, data_reply: str | None = None
    ) -> SmtpSink:
        """A running SMTP sink for MX host ``host`` on its own address (port 25), with an A
        record ``host`` → it, and a certificate of kind ``cert`` for ``host`` (None: no
        STARTTLS). Adding a host that already has a sink just changes its certificate."""
        host = host.lower().rstrip(".")
        issued = self.pki.issue(host, cert) if cert is not None else None
        if host in self.sinks:
            sink = self.sinks[host]
            sink.set_cert(issued)
        else:
            address = self.addresses.sink(self._free_sink_index)
            self._free_sink_index += 1
            kwargs = {"data_reply": data_reply} if data_reply else {}
            sink = SmtpSink(address, self.smtp_port, host, issued, **kwargs)
            self._loop.run(sink.start())
            self.sinks[host] = sink
        self.dns.set(host, "A", sink.host)
        return sink

    def sink(self, host: str) -> SmtpSink:
        return self.sinks[host.lower().rstrip(".")]

    def set_mx(self, domain: str, hosts: Sequence[str] | Mapping[str, int]) -> None:
        """MX records for ``domain``: a list (preferences 10, 20, ...) or {host: preference}."""
        prefs = (
            hosts if isinstance(hosts, Mapping) else {h: 10 * (i + 1) for i, h in enumerate(hosts)}
        )
        self.dns.set(domain, "MX", *(f"{p} {h.rstrip('.')}." for h, p in prefs.items()))

    def mail_domain(
        self, domain: str, mx: Mapping[str, SinkCert] | Sequence[str] | None = None
    ) -> dict[str, SmtpSink]:
        """MX records for ``domain`` and a sink per MX host: ``{"mx1.d": "good", "mx2.d":
        "rogue", "mx3.d": None}`` (certificate kinds; None = no STARTTLS), or a list of hosts
        (all "good"). Default: ``mx1.<domain>`` with a good certificate."""
        domain = domain.lower().rstrip(".")
        if mx is None:
            mx = [f"mx1.{domain}"]
        certs: Mapping[str, SinkCert] = mx if isinstance(mx, Mapping) else dict.fromkeys(mx, "good")
        sinks = {host: self.add_sink(host, cert) for host, cert in certs.items()}
        self.set_mx(domain, list(certs))
        return sinks

    def publish_tlsa(
        self,
        host: str,
        port: int = 25,
        *,
        usage: int = 3,
        selector: int = 1,
        mtype: int = 1,
        cert: IssuedCert | None = None,
    ) -> str:
        """``_<port>._tcp.<host> TLSA`` for the sink's certificate (or ``cert``); DANE-TA
        (usage 2) uses the test CA. Returns the rdata text. Put ``host`` in a signed zone."""
        host = host.lower().rstrip(".")
        if usage == 2:
            rdata = self.pki.ca.tlsa(usage, selector, mtype)
        else:
            issued = cert or self.sinks[host].cert
            if issued is None:
                raise ValueError(f"sink {host} has no certificate (no STARTTLS)")
            rdata = issued.tlsa(usage, selector, mtype)
        self.dns.add(f"_{port}._tcp.{host}", "TLSA", rdata)
        return rdata

    # ---- per-test state ----------------------------------------------------------------------

    def snapshot(self) -> NetSimState:
        return NetSimState(
            self.dns.snapshot(),
            self.https.snapshot(),
            frozenset(self.sinks),
            {h: s.cert for h, s in self.sinks.items()},
        )

    def restore(self, state: NetSimState) -> None:
        """Back to ``state``: DNS, sites, sink certificates; sinks added since are stopped."""
        for host in list(self.sinks):
            if host not in state.sinks:
                sink = self.sinks.pop(host)
                with contextlib.suppress(Exception):
                    self._loop.run(sink.stop(), timeout=5)
            else:
                self.sinks[host].set_cert(state.sink_certs[host])
        self._free_sink_index = max(
            (int(s.host.rsplit(".", 1)[1]) - 99 for s in self.sinks.values()), default=0
        )
        self.https.restore(state.sites)
        self.resume_https()
        self.dns.restore(state.dns)

    def clear_logs(self) -> None:
        """Forget DNS queries, HTTPS requests and the messages the sinks received."""
        self.dns.queries.clear()
        self.https.clear_log()
        for sink in self.sinks.values():
            sink.clear()


# --------------------------------------------------------------------------------------------
# pytest fixtures


def _skip_reason() -> str | None:
    if _IMPORT_ERROR is not None:
        return (
            f"netsim needs the Python package {_IMPORT_ERROR.name or _IMPORT_ERROR} "
            "(cryptography, aiosmtpd and dnspython: pip install -e '.[test]')"
        )
    if os.geteuid() != 0:
        return "netsim needs root (it listens on ports 25, 53 and 443 of 127.0.N.x addresses)"
    return None


@pytest.fixture(scope="session")
def netsim_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetSim]:
    """One running ``NetSim`` for the whole test session (see the module docstring)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    sim = NetSim(tmp_path_factory.mktemp("netsim"))
    try:
        sim.start()
    except OSError as exc:
        pytest.skip(f"netsim could not start its servers: {exc}")
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def netsim(netsim_session: NetSim) -> Iterator[NetSim]:
    """``netsim_session``, with every change the test makes undone afterwards."""
    state = netsim_session.snapshot()
    netsim_session.clear_logs()
    try:
        yield netsim_session
    finally:
        netsim_session.restore(state)
