"""Throwaway real MTAs (Postfix, extracted Exim) and our LMTP server, all on 127.0.0.1.

Everything lives in one work directory per test; nothing touches the system's own Postfix or Exim
configuration. Every wait is bounded, and every failure message carries the relevant log tails.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import gzip
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import pytest

from tests.support.lmtp_client import NO_DKIM, free_port
from tests.support.samples import shared_dir

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
REPORT_DOMAIN = "reports.example.test"
REPORT_RCPT = f"tlsrpt@{REPORT_DOMAIN}"
UNKNOWN_RCPT = f"nobody@{REPORT_DOMAIN}"
ENVELOPE_SENDER = "reporter@sender.example.test"
DEFAULT_TIMEOUT = 30.0

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR = shared_dir() / "samples" / "real"

POSTFIX_BIN = Path(shutil.which("postfix") or "/usr/sbin/postfix")
POSTCONF_BIN = Path(shutil.which("postconf") or "/usr/sbin/postconf")
POSTQUEUE_BIN = Path(shutil.which("postqueue") or "/usr/sbin/postqueue")
POSTFIX_MASTER_CF = (Path("/usr/share/postfix/master.cf.dist"), Path("/etc/postfix/master.cf"))
EXIM_ROOT = Path(os.environ.get("TLSRPT_EXIM_ROOT", "/opt/tlsrpt-test/exim"))
EXIM_BIN = EXIM_ROOT / "usr" / "sbin" / "exim4"
EXIM_USER = "Debian-exim"


INSTALL_HINT = "run scripts/install-system-deps.sh as root"

# --------------------------------------------------------------------------------------------
# what the machine must have (else the test skips, saying why)
# --------------------------------------------------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("real-MTA tests need root (Postfix's master and Exim's -C must run as root)")


def require_tools(*tools: str, why: str) -> None:
    """util-linux programs the test runs (``script``, ``unshare``, ``mount``)."""
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"util-linux {tool!r} missing ({why})")


def require_postfix(*binaries: Path) -> None:
    """Debian's Postfix (``postfix``, ``postqueue`` and ``binaries``), run as root."""
    require_root()
    for binary in (POSTFIX_BIN, POSTQUEUE_BIN, *binaries):
        if not binary.is_file():
            pytest.skip(f"Postfix not installed ({binary} missing): {INSTALL_HINT}")
    require_tools("script", why="needed to see Postfix's fatal errors")


def require_exim() -> None:
    """The extracted Exim and its system user, run as root."""
    require_root()
    if not EXIM_BIN.is_file():
        pytest.skip(f"extracted Exim not found at {EXIM_BIN}: {INSTALL_HINT}")
    try:
        pwd.getpwnam(EXIM_USER)
    except KeyError:
        pytest.skip(f"system user {EXIM_USER} missing: {INSTALL_HINT}")


# --------------------------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------------------------


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def tail(text: str, lines: int = 40) -> str:
    kept = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join(kept) if kept else "(empty)"


def section(title: str, text: str, lines: int = 40) -> str:
    return f"\n----- {title} -----\n{tail(text, lines)}"


def wait_until(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.1,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            details = diagnostics() if diagnostics is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{details}")
        time.sleep(interval)


def read_events(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The events (of ``kind``) in a JSON-lines event log; a line being written is skipped."""
    found: list[dict[str, Any]] = []
    for line in read_text(path).splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # an empty line, or one being written right now
        if isinstance(event, dict) and (kind is None or event.get("event") == kind):
            found.append(event)
    return found


def wait_started(
    proc: subprocess.Popen[bytes],
    name: str,
    ready: Callable[[], bool],
    *,
    what: str,
    diagnostics: Callable[[], str],
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Wait (bounded) until ``ready()``; fail at once, with ``diagnostics``, if ``proc`` exits."""

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"{name} exited with {proc.returncode} during start-up" + diagnostics()
            )
        return ready()

    wait_until(up, what=what, timeout=timeout, diagnostics=diagnostics)


def run(
    argv: Sequence[str | Path], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [str(a) for a in argv]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed (exit {proc.returncode}): {shlex.join(cmd)}"
            + section("stdout", proc.stdout)
            + section("stderr", proc.stderr)
        )
    return proc


def run_on_tty(argv: Sequence[str | Path], timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run a command under ``script`` so that it believes stderr is a terminal.

    Postfix prints nothing on a fatal error when stderr is not a tty (it tries syslog instead);
    under ``script`` the message shows up, which is what a failing test needs to show.
    """
    cmd = shlex.join(str(a) for a in argv)
    proc = subprocess.run(
        ["script", "-qc", cmd, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return f"$ {cmd}  (exit {proc.returncode})\n{proc.stdout}{proc.stderr}"


def smtp_banner(port: int) -> bool:
    """True when an SMTP/LMTP server on 127.0.0.1:port answers with a 220 greeting."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
            return _greets(sock)
    except OSError:
        return False


def unix_banner(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            return _greets(sock)
    except OSError:
        return False


def _greets(sock: socket.socket) -> bool:
    greeting = sock.recv(512)
    with contextlib.suppress(OSError):
        sock.sendall(b"QUIT\r\n")
        sock.recv(512)
    return greeting.startswith(b"220")


def send_smtp(
    port: int,
    message: bytes,
    *,
    recipients: Sequence[str] = (REPORT_RCPT,),
    sender: str = ENVELOPE_SENDER,
) -> None:
    """Submit ``message`` by SMTP to the MTA listening on 127.0.0.1:port; all RCPTs must pass."""
    with smtplib.SMTP(LOOPBACK, port, local_hostname="client.example.test", timeout=30) as smtp:
        refused = smtp.sendmail(sender, list(recipients), message)
    assert not refused, f"MTA refused recipients at SMTP time: {refused}"


# --------------------------------------------------------------------------------------------
# test messages: the real report emails of ../shared/samples/real
# --------------------------------------------------------------------------------------------


def readdress(raw: bytes, to: str) -> bytes:
    """Return the message with CRLF line ends and its To: header replaced by ``to``."""
    text = raw.replace(b"\r\n", b"\n")
    head, sep, body = text.partition(b"\n\n")
    if not sep:
        head, body = text, b""
    kept: list[bytes] = []
    skipping = False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.lower().startswith(b"to:")
        if not skipping:
            kept.append(line)
    kept.append(b"To: " + to.encode("ascii"))
    return (b"\n".join(kept) + b"\n\n" + body).replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class Sample:
    """A real TLS-RPT email and the facts about its report that the server must log."""

    path: Path
    raw: bytes
    report: dict[str, Any]

    @classmethod
    def load(cls, name: str) -> Sample:
        path = SAMPLES_DIR / name
        raw = path.read_bytes()
        return cls(path=path, raw=raw, report=extract_report(raw))

    @property
    def report_id(self) -> str:
        return str(self.report["report-id"])

    @property
    def organization_name(self) -> str:
        return str(self.report["organization-name"])

    @property
    def policies(self) -> list[dict[str, Any]]:
        policies: list[dict[str, Any]] = self.report.get("policies") or []
        return policies

    @property
    def total_failures(self) -> int:
        return sum(int(p["summary"]["total-failure-session-count"]) for p in self.policies)

    @property
    def failure_detail_count(self) -> int:
        return sum(len(p.get("failure-details") or []) for p in self.policies)

    def message(self, to: str = REPORT_RCPT) -> bytes:
        return readdress(self.raw, to)


def extract_report(raw: bytes) -> dict[str, Any]:
    """Decode the (gzipped) JSON report part of a report email, independently of the package."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        if payload[:2] == b"\x1f\x8b":
            payload = gzip.decompress(payload)
        if payload.lstrip()[:1] != b"{":
            continue
        with contextlib.suppress(ValueError):
            report = json.loads(payload)
            if isinstance(report, dict) and "report-id" in report:
                return report
    raise ValueError("no TLS-RPT JSON part found in the sample")


# --------------------------------------------------------------------------------------------
# our LMTP server, as a subprocess
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LmtpEndpoint:
    """Where the LMTP server listens: TCP on 127.0.0.1 or a unix socket."""

    port: int | None = None
    socket_path: Path | None = None

    @classmethod
    def tcp(cls) -> LmtpEndpoint:
        return cls(port=free_port())

    @classmethod
    def unix(cls, path: Path) -> LmtpEndpoint:
        return cls(socket_path=path)

    @property
    def listen_arg(self) -> str:
        """The value of ``tlsrpt-lmtp serve --listen``."""
        if self.socket_path is not None:
            return f"unix:{self.socket_path}"
        return f"{LOOPBACK}:{self.port}"

    @property
    def postfix_nexthop(self) -> str:
        """The part after ``lmtp:`` in a Postfix transport."""
        if self.socket_path is not None:
            return f"unix:{self.socket_path}"
        return f"inet:{LOOPBACK}:{self.port}"

    def answers(self) -> bool:
        if self.socket_path is not None:
            return unix_banner(self.socket_path)
        assert self.port is not None
        return smtp_banner(self.port)


@dataclass
class LmtpServer:
    """``python -m tlsrpt_lmtp serve`` in a subprocess, with its own data dir and event log."""

    workdir: Path
    endpoint: LmtpEndpoint
    recipients: Sequence[str] = (REPORT_RCPT,)
    python: str = sys.executable
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)
    _blocker: sqlite3.Connection | None = field(default=None, init=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "lmtp-data"

    @property
    def events_file(self) -> Path:
        return self.workdir / "events.jsonl"

    @property
    def stderr_file(self) -> Path:
        return self.workdir / "lmtp-server.stderr"

    def command(self) -> list[str]:
        argv = [
            self.python,
            "-m",
            "tlsrpt_lmtp",
            "serve",
            *NO_DKIM,
            "--listen",
            self.endpoint.listen_arg,
        ]
        argv += ["--data-dir", str(self.data_dir), "--log-file", str(self.events_file)]
        for rcpt in self.recipients:
            argv += ["--recipient", rcpt]
        return argv

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        assert self.proc is None, "server already running"
        self.starts += 1
        self.proc, _ = launch(self.command(), self.workdir, self.stderr_file, self.starts)
        wait_started(
            self.proc,
            "LMTP server",
            self.endpoint.answers,
            what=f"the LMTP server on {self.endpoint.listen_arg}",
            timeout=timeout,
            diagnostics=self.diagnostics,
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server and insist that it ends cleanly (exit status 0)."""
        proc, self.proc = self.proc, None
        stop_cleanly(proc, "LMTP server", timeout, self.diagnostics)

    def kill(self) -> None:
        """Teardown: make sure the process is gone, without judging how it ended."""
        self.unblock_archive()
        proc, self.proc = self.proc, None
        end_quietly(proc)

    # --- the archive, made unwritable on purpose ---------------------------------------------

    def database(self) -> Path:
        """The server's SQLite file, which holds the archive (after the first start)."""
        found = sorted(self.data_dir.glob("*.sqlite3"))
        assert len(found) == 1, f"expected one *.sqlite3 in {self.data_dir}, found {found}"
        return found[0]

    def block_archive(self) -> None:
        """Hold the database's write lock from outside, as another writer would.

        The server cannot archive while the lock is held: its ``BEGIN IMMEDIATE`` gives up after
        SQLite's busy timeout and it must answer 451 4.3.0 (and log no report).
        """
        assert self._blocker is None, "archive already blocked"
        conn = sqlite3.connect(self.database(), timeout=10, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        self._blocker = conn

    def unblock_archive(self) -> None:
        conn, self._blocker = self._blocker, None
        if conn is not None:
            conn.execute("ROLLBACK")
            conn.close()

    # --- events ------------------------------------------------------------------------------

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return read_events(self.events_file, kind)

    def report_events(self, report_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events("tlsrpt.report") if e.get("report_id") == report_id]

    def wait_for_report(
        self, report_id: str, *, mta: MtaInstance | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Wait for the report event; on time-out show this server's and ``mta``'s logs."""
        return wait_until(
            lambda: next(iter(self.report_events(report_id)), None),
            what=f"a tlsrpt.report event for report_id {report_id!r}",
            timeout=timeout,
            diagnostics=lambda: self.diagnostics() + (mta.diagnostics() if mta else ""),
        )

    def diagnostics(self) -> str:
        return section("LMTP server output", read_text(self.stderr_file)) + section(
            f"events ({self.events_file.name})", read_text(self.events_file), 20
        )


# --------------------------------------------------------------------------------------------
# MTAs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueEntry:
    queue_id: str
    sender: str
    recipients: tuple[str, ...]
    reason: str = ""


class MtaInstance(ABC):
    """A throwaway MTA listening for SMTP on 127.0.0.1:smtp_port, relaying to ``lmtp``."""

    name = "mta"

    def __init__(self, workdir: Path, lmtp: LmtpEndpoint) -> None:
        self.workdir = workdir
        self.lmtp = lmtp
        self.smtp_port = free_port()
        self.started = False

    # --- what each MTA implements --------------------------------------------------------------

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def queue(self) -> list[QueueEntry]:
        """The messages still waiting in the queue."""

    @abstractmethod
    def flush(self) -> None:
        """Retry every queued message now, ignoring retry/backoff times."""

    @abstractmethod
    def log_text(self) -> str: ...

    @abstractmethod
    def deferral_line(self, recipient: str) -> str:
        """Regex matching the log line of a temporary failure for ``recipient``."""

    @abstractmethod
    def delivery_line(self, recipient: str) -> str:
        """Regex matching the log line of a successful delivery to ``recipient``."""

    @abstractmethod
    def bounce_line(self, recipient: str) -> str:
        """Regex matching the log line of a permanent failure for ``recipient``."""

    # --- shared behaviour -----------------------------------------------------------------------

    def __enter__(self) -> Self:
        """Start; a start that fails half-way (daemon up, never answering) is stopped too."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def send(
        self,
        message: bytes,
        *,
        recipients: Sequence[str] = (REPORT_RCPT,),
        sender: str = ENVELOPE_SENDER,
    ) -> None:
        send_smtp(self.smtp_port, message, recipients=recipients, sender=sender)

    def diagnostics(self) -> str:
        try:
            queue = "\n".join(repr(e) for e in self.queue()) or "(empty)"
        except Exception as exc:  # diagnostics must never hide the real failure
            queue = f"(could not list the queue: {exc})"
        return section(f"{self.name} log", self.log_text()) + section(f"{self.name} queue", queue)

    def wait_for_log(
        self, pattern: str, *, containing: str = "", timeout: float = DEFAULT_TIMEOUT
    ) -> str:
        """Wait for a log line matching ``pattern`` (and containing ``containing``); return it."""
        regex = re.compile(pattern)

        def probe() -> str | None:
            for line in self.log_text().splitlines():
                if regex.search(line) and containing in line:
                    return line
            return None

        what = f"{self.name} log line /{pattern}/" + (f" with {containing!r}" if containing else "")
        return wait_until(probe, what=what, timeout=timeout, diagnostics=self.diagnostics)

    def wait_for_deferral(
        self,
        recipient: str = REPORT_RCPT,
        *,
        containing: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> str:
        return self.wait_for_log(
            self.deferral_line(recipient), containing=containing, timeout=timeout
        )

    def wait_for_delivery(
        self, recipient: str = REPORT_RCPT, *, timeout: float = DEFAULT_TIMEOUT
    ) -> str:
        return self.wait_for_log(self.delivery_line(recipient), timeout=timeout)

    def wait_for_bounce(
        self, recipient: str, *, containing: str = "", timeout: float = DEFAULT_TIMEOUT
    ) -> str:
        return self.wait_for_log(
            self.bounce_line(recipient), containing=containing, timeout=timeout
        )

    def wait_queue_empty(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_until(
            lambda: not self.queue(),
            what=f"the {self.name} queue to empty",
            timeout=timeout,
            interval=0.25,
            diagnostics=self.diagnostics,
        )

    def wait_queued(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> list[QueueEntry]:
        def probe() -> list[QueueEntry] | None:
            entries = self.queue()
            return entries if len(entries) >= count else None

        return wait_until(
            probe,
            what=f"{count} message(s) in the {self.name} queue",
            timeout=timeout,
            interval=0.25,
            diagnostics=self.diagnostics,
        )


class PostfixInstance(MtaInstance):
    """``postfix -c DIR``: own config, queue and log file; virtual domain delivered over LMTP."""

    name = "postfix"

    def __init__(self, workdir: Path, lmtp: LmtpEndpoint) -> None:
        super().__init__(workdir / "postfix", lmtp)
        self.config_dir = self.workdir / "etc"
        self.queue_dir = self.workdir / "queue"
        self.data_dir = self.workdir / "data"
        self.maillog = self.workdir / "maillog"
        # Debian's Postfix; a subclass may point these at an unpacked one (e.g. 3.10).
        self.postfix_bin: Path = POSTFIX_BIN
        self.postconf_bin: Path = POSTCONF_BIN
        self.postqueue_bin: Path = POSTQUEUE_BIN
        self.master_templates: Sequence[Path] = POSTFIX_MASTER_CF

    def main_cf(self) -> dict[str, str]:
        return {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file_prefixes": str(self.workdir),
            "maillog_file": str(self.maillog),
            "myhostname": "mx.example.test",
            "mydomain": "example.test",
            "inet_interfaces": LOOPBACK,
            "inet_protocols": "ipv4",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": "",
            "virtual_alias_maps": "",
            "virtual_mailbox_domains": REPORT_DOMAIN,
            "virtual_mailbox_maps": "",
            "virtual_transport": f"lmtp:{self.lmtp.postfix_nexthop}",
            # Bounces to the (fake) sender domains must not linger in the queue.
            "default_transport": "discard:not a report domain (test instance)",
            "relay_transport": "discard:not a report domain (test instance)",
            "queue_run_delay": "5s",
            "minimal_backoff_time": "5s",
            "maximal_backoff_time": "10s",
            "bounce_queue_lifetime": "0",
            "smtp_dns_support_level": "disabled",
            "biff": "no",
        }

    def _postconf(self, *args: str) -> None:
        run([self.postconf_bin, "-c", self.config_dir, *args])

    def configure(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        for dirpath in (self.workdir, self.queue_dir):
            dirpath.mkdir(mode=0o755, parents=True, exist_ok=True)
            os.chmod(dirpath, 0o755)  # queue_directory: root-owned, not group/world writable
        master = next((p for p in self.master_templates if p.is_file()), None)
        assert master is not None, f"no Postfix master.cf template in {self.master_templates}"
        shutil.copyfile(master, self.config_dir / "master.cf")
        (self.config_dir / "main.cf").write_text(
            "".join(f"{key} = {value}\n" for key, value in self.main_cf().items())
        )
        listen = f"{LOOPBACK}:{self.smtp_port}"
        self._postconf("-M#", "smtp/inet")
        self._postconf("-M", f"{listen}/inet={listen} inet n - n - - smtpd")
        self._postconf("-F", "*/*/chroot = n")

    def start_command(self) -> Sequence[str | Path]:
        """``postfix start`` (a subclass may wrap it, e.g. in a namespace)."""
        return self._cmd("start")

    def start(self) -> None:
        self.configure()
        proc = run(self.start_command(), check=False)
        if proc.returncode != 0:
            raise AssertionError(
                f"postfix start failed (exit {proc.returncode}){section('output', proc.stderr)}"
                + section("postfix check on a tty", run_on_tty(self._cmd("check")))
                + section("maillog", read_text(self.maillog))
            )
        self.started = True
        wait_until(
            lambda: smtp_banner(self.smtp_port),
            what=f"Postfix smtpd on {LOOPBACK}:{self.smtp_port}",
            diagnostics=lambda: (
                section("maillog", read_text(self.maillog))
                + section("postfix status on a tty", run_on_tty(self._cmd("status")))
            ),
        )

    def _cmd(self, action: str) -> list[str | Path]:
        return [self.postfix_bin, "-c", self.config_dir, action]

    def _master_pid(self) -> int | None:
        text = read_text(self.queue_dir / "pid" / "master.pid").strip()
        return int(text) if text.isdigit() else None

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        pid = self._master_pid()
        run(self._cmd("stop"), check=False)

        def gone() -> bool:
            if pid is None:
                return True
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        try:
            wait_until(gone, what="the Postfix master to exit", timeout=10)
        except AssertionError:
            run(self._cmd("abort"), check=False)
            raise

    def queue(self) -> list[QueueEntry]:
        proc = run([self.postqueue_bin, "-c", self.config_dir, "-j"])
        entries = []
        for line in proc.stdout.splitlines():
            item = json.loads(line)
            rcpts = item.get("recipients") or []
            entries.append(
                QueueEntry(
                    queue_id=item["queue_id"],
                    sender=item.get("sender", ""),
                    recipients=tuple(r["address"] for r in rcpts),
                    reason="; ".join(r.get("delay_reason", "") for r in rcpts),
                )
            )
        return entries

    def flush(self) -> None:
        run([self.postqueue_bin, "-c", self.config_dir, "-f"])

    def log_text(self) -> str:
        return read_text(self.maillog)

    def deferral_line(self, recipient: str) -> str:
        return rf"postfix/lmtp\[\d+\]: \w+: to=<{re.escape(recipient)}>.* status=deferred"

    def delivery_line(self, recipient: str) -> str:
        return rf"postfix/lmtp\[\d+\]: \w+: to=<{re.escape(recipient)}>.* status=sent"

    def bounce_line(self, recipient: str) -> str:
        return rf"postfix/lmtp\[\d+\]: \w+: to=<{re.escape(recipient)}>.* status=bounced"


EXIM_CONF = """\
# Throwaway Exim for the tlsrpt-lmtp end-to-end tests.
exim_path = {exim_bin}
primary_hostname = mx-exim.example.test
qualify_domain = example.test
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
domainlist report_domains = {domain}
acl_smtp_rcpt = acl_check_rcpt

begin acl

acl_check_rcpt:
  accept hosts = 127.0.0.1
  deny   message = loopback only

begin routers

reports_lmtp:
  driver = manualroute
  domains = +report_domains
  route_list = * 127.0.0.1
  transport = lmtp_tcp
  self = send

everything_else:
  driver = redirect
  data = :blackhole:

begin transports

lmtp_tcp:
  driver = smtp
  protocol = lmtp
  port = {lmtp_port}
  hosts_avoid_tls = *
  allow_localhost

begin retry

* * F,1h,5s
"""

_EXIM_QUEUE_HEADER = re.compile(
    r"^\s*\d+[smhdw]\s+\S+\s+(?P<id>[0-9A-Za-z]+-[0-9A-Za-z]+-[0-9A-Za-z]+)\s+<(?P<sender>[^>]*)>"
)


class EximInstance(MtaInstance):
    """The extracted Exim 4.96 run as ``exim4 -C conf -bdf -q5s`` (foreground, our own child).

    Exim drops root for ``-C`` and says so in mainlog *and* paniclog on every delivery process
    ("exim user lost privilege for using -C option"): harmless here, so the paniclog is shown in
    failure messages but never taken as a failure by itself.
    """

    name = "exim"

    def __init__(self, workdir: Path, lmtp: LmtpEndpoint) -> None:
        assert lmtp.port is not None, "the test Exim delivers by LMTP over TCP"
        super().__init__(workdir / "exim", lmtp)
        self.conf = self.workdir / "exim.conf"
        self.spool = self.workdir / "spool"
        self.logdir = self.workdir / "log"
        self.pidfile = self.workdir / "exim.pid"
        self.stderr_file = self.workdir / "exim.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(self) -> None:
        user = pwd.getpwnam(EXIM_USER)
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        for dirpath in (self.spool, self.logdir):
            dirpath.mkdir(exist_ok=True)
            os.chown(dirpath, user.pw_uid, user.pw_gid)
        self.conf.write_text(self.config_text())
        os.chmod(self.conf, 0o644)

    def config_text(self) -> str:
        return EXIM_CONF.format(
            exim_bin=EXIM_BIN,
            spool=self.spool,
            logdir=self.logdir,
            pidfile=self.pidfile,
            smtp_port=self.smtp_port,
            domain=REPORT_DOMAIN,
            lmtp_port=self.lmtp.port,
        )

    def command(self, *args: str) -> list[str]:
        """An ``exim -C CONF ...`` command line (a subclass may wrap it, e.g. in a namespace)."""
        return [str(EXIM_BIN), "-C", str(self.conf), *args]

    def exim(self, *args: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        return run([EXIM_BIN, "-C", self.conf, *args], timeout=timeout).stdout

    def start(self) -> None:
        self.configure()
        check = run([EXIM_BIN, "-C", self.conf, "-bV"], check=False)
        assert check.returncode == 0, f"exim -bV rejects the config:\n{check.stdout}{check.stderr}"
        with self.stderr_file.open("ab") as err:
            self.proc = subprocess.Popen(
                self.command("-bdf", "-q5s"), stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )
        self.started = True
        wait_started(
            self.proc,
            "Exim daemon",
            lambda: smtp_banner(self.smtp_port),
            what=f"Exim on {LOOPBACK}:{self.smtp_port}",
            diagnostics=self.diagnostics,
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        self.started = False
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def queue(self) -> list[QueueEntry]:
        entries: list[QueueEntry] = []
        for block in self.exim("-bp").split("\n\n"):
            lines = block.strip("\n").splitlines()
            if not lines or not (match := _EXIM_QUEUE_HEADER.match(lines[0])):
                continue
            queue_id = match["id"]
            pending = tuple(
                ln.strip() for ln in lines[1:] if ln.strip() and not ln.strip().startswith("D ")
            )
            deferrals = [ln for ln in self.log_text().splitlines() if f" {queue_id} == " in ln]
            entries.append(
                QueueEntry(
                    queue_id=queue_id,
                    sender=match["sender"],
                    recipients=pending,
                    reason=deferrals[-1] if deferrals else "",
                )
            )
        return entries

    def flush(self) -> None:
        self.exim("-qff")

    def log_text(self) -> str:
        return read_text(self.logdir / "mainlog")

    def diagnostics(self) -> str:
        return (
            super().diagnostics()
            + section(
                "exim paniclog (the -C privilege warning is expected)",
                read_text(self.logdir / "paniclog"),
                10,
            )
            + section("exim stderr", read_text(self.stderr_file), 10)
        )

    def deferral_line(self, recipient: str) -> str:
        return rf" == {re.escape(recipient)} .*defer"

    def delivery_line(self, recipient: str) -> str:
        return rf" => {re.escape(recipient)} .*T=lmtp_tcp"

    def bounce_line(self, recipient: str) -> str:
        return rf" \*\* {re.escape(recipient)} "


# --------------------------------------------------------------------------------------------
# scenarios shared by the Postfix and Exim tests
# --------------------------------------------------------------------------------------------


def assert_report_event(event: dict[str, Any], sample: Sample) -> None:
    """The event the server logged matches what the sample's JSON says."""
    expected = {
        "report_id": sample.report_id,
        "organization_name": sample.organization_name,
        "total_failure_session_count": sample.total_failures,
        "duplicate": False,
    }
    actual = {key: event.get(key) for key in expected}
    assert actual == expected, f"report event differs from the sample {sample.path.name}: {event}"
    assert event.get("archive_id"), f"report event without archive_id: {event}"


def assert_delivered_once(server: LmtpServer, sample: Sample) -> dict[str, Any]:
    """Exactly one report event for the sample's report, and it is not a duplicate."""
    events = server.report_events(sample.report_id)
    assert len(events) == 1, (
        f"expected exactly one tlsrpt.report event for {sample.report_id!r}, got {len(events)}:\n"
        + "\n".join(json.dumps(e) for e in events)
    )
    assert_report_event(events[0], sample)
    return events[0]


def assert_policy_events(server: LmtpServer, sample: Sample) -> None:
    """One tlsrpt.policy event per policy (same types, same order) and one tlsrpt.failure event
    per failure detail, all tagged with the report's id."""
    expected_types = [p.get("policy", {}).get("policy-type") for p in sample.policies]

    def of_report(kind: str) -> list[dict[str, Any]]:
        return [e for e in server.events(kind) if e.get("report_id") == sample.report_id]

    wait_until(
        lambda: len(of_report("tlsrpt.policy")) >= len(expected_types),
        what=f"{len(expected_types)} tlsrpt.policy event(s) for {sample.report_id!r}",
        timeout=5,
        diagnostics=server.diagnostics,
    )
    policy_types = [e.get("policy_type") for e in of_report("tlsrpt.policy")]
    assert policy_types == expected_types, server.diagnostics()
    failures = of_report("tlsrpt.failure")
    assert len(failures) == sample.failure_detail_count, (
        f"expected {sample.failure_detail_count} tlsrpt.failure event(s), got {len(failures)}"
        + server.diagnostics()
    )


def deliver_report(mta: MtaInstance, server: LmtpServer, sample: Sample) -> dict[str, Any]:
    """Send ``sample`` through a running MTA to a running server and check what arrives."""
    mta.send(sample.message())
    event = server.wait_for_report(sample.report_id, mta=mta)
    assert_report_event(event, sample)
    assert_policy_events(server, sample)
    mta.wait_for_delivery()
    mta.wait_queue_empty()
    assert_delivered_once(server, sample)
    return event


def queue_then_recover(
    mta: MtaInstance,
    server: LmtpServer,
    sample: Sample,
    *,
    deferral_reason: str,
    repair: Callable[[], None],
) -> None:
    """The MTA cannot hand the report over: it must keep it, then deliver it exactly once.

    The caller has put the server in a failing state (down, or up but answering 451); ``repair``
    brings it back to health.
    """
    mta.send(sample.message())
    mta.wait_for_deferral(containing=deferral_reason)
    entries = mta.wait_queued(1)
    assert [e.recipients for e in entries] == [(REPORT_RCPT,)], mta.diagnostics()
    assert not server.report_events(sample.report_id), (
        "a report event was logged for a message the server did not accept" + server.diagnostics()
    )
    repair()
    mta.flush()
    server.wait_for_report(sample.report_id, mta=mta)
    mta.wait_for_delivery()
    mta.wait_queue_empty()
    assert_delivered_once(server, sample)


def stop_cleanly(
    proc: subprocess.Popen[bytes] | None,
    name: str,
    timeout: float,
    diagnostics: Callable[[], str],
) -> None:
    """SIGTERM ``proc``; it must exit with status 0 within ``timeout``."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            raise AssertionError(
                f"{name} ignored SIGTERM for {timeout:.0f}s" + diagnostics()
            ) from None
    if proc.returncode != 0:
        raise AssertionError(
            f"{name} did not stop cleanly (exit {proc.returncode})" + diagnostics()
        )


def end_quietly(proc: subprocess.Popen[bytes] | None) -> None:
    """Teardown: make sure ``proc`` is gone, without judging how it ended."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def launch(
    argv: list[str], cwd: Path, log: Path, start_number: int
) -> tuple[subprocess.Popen[bytes], int]:
    """Start one of the project's commands with its output appended to ``log`` after a
    banner; returns the process and the log offset where its output begins."""
    env = dict(os.environ)
    # The project itself must be importable even when it is not installed in the venv.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (env.get("PYTHONPATH", ""), str(PROJECT_ROOT)) if p
    )
    with log.open("ab") as err:
        err.write(f"=== start #{start_number}: {shlex.join(argv)}\n".encode())
        err.flush()
        offset = err.tell()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
    return proc, offset
