"""The MTA-STS policy daemon (``python -m tlsrpt_lmtp policy serve``) as a test subprocess,
and the message helpers the policy tests share.

Shared by tests/mta/test_policy_postfix.py and test_policy_exim.py: the daemon listens on
127.0.0.1 for Postfix (socketmap) and Exim (line protocol), asks the netsim authoritative DNS
and trusts the netsim test CA. Its data directory (with the SQLite policy cache) belongs to the
object, so a restart keeps the cache, as a restarted production daemon does.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.lmtp_client import free_port

from .harness import (
    DEFAULT_TIMEOUT,
    LOOPBACK,
    end_quietly,
    launch,
    read_events,
    read_text,
    section,
    send_smtp,
    stop_cleanly,
    wait_started,
    wait_until,
)

if TYPE_CHECKING:
    from tests.netsim.fixtures import NetSim
    from tests.netsim.smtp_sink import ReceivedMessage, SmtpSink

READY_LINE = "policy socketmap on"


class PolicyDaemon:
    """``tlsrpt-lmtp policy serve`` on 127.0.0.1:port (socketmap) and :exim_port (lines)."""

    def __init__(
        self,
        workdir: Path,
        *,
        nameserver: str,
        ca_file: Path,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir / "policy-daemon"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nameserver = nameserver
        self.ca_file = ca_file
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.exim_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # --- where it is -----------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def events_file(self) -> Path:
        return self.workdir / "events.jsonl"

    @property
    def stderr_file(self) -> Path:
        return self.workdir / "stderr.log"

    def socketmap(self, name: str = "sts") -> str:
        """The Postfix table, e.g. ``socketmap:inet:127.0.0.1:8461:sts``."""
        return f"socketmap:inet:{LOOPBACK}:{self.port}:{name}"

    @property
    def exim_socket(self) -> str:
        """The ``${readsocket}`` spec, e.g. ``inet:127.0.0.1:8462``."""
        return f"inet:{LOOPBACK}:{self.exim_port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tlsrpt_lmtp",
            "policy",
            "serve",
            "--listen",
            f"{LOOPBACK}:{self.port}",
            "--exim-listen",
            f"{LOOPBACK}:{self.exim_port}",
            "--data-dir",
            str(self.data_dir),
            "--nameserver",
            self.nameserver,
            "--ca-file",
            str(self.ca_file),
            "--log-file",
            str(self.events_file),
            "--allow-private-policy-hosts",  # the test internet's policy hosts: 127.0.0.x
            *self.extra_args,
        ]

    # --- life cycle ------------------------------------------------------------------------------

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Start it and wait (bounded) for its "policy socketmap on ..." line on stderr."""
        assert self.proc is None, "policy daemon already running"
        self.starts += 1
        self.proc, offset = launch(self.command(), self.workdir, self.stderr_file, self.starts)

        def ready() -> bool:
            with self.stderr_file.open("rb") as f:
                f.seek(offset)
                return READY_LINE in f.read().decode("utf-8", "replace")

        wait_started(
            self.proc,
            "policy daemon",
            ready,
            what=f"the policy daemon's {READY_LINE!r} line",
            timeout=timeout,
            diagnostics=self.diagnostics,
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM; it must exit 0 within ``timeout``."""
        proc, self.proc = self.proc, None
        stop_cleanly(proc, "policy daemon", timeout, self.diagnostics)

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """Teardown: make sure the process is gone, without judging how it ended."""
        proc, self.proc = self.proc, None
        end_quietly(proc)

    # --- asking it directly (no MTA) ------------------------------------------------------------

    def socketmap_query(self, key: str, name: str = "sts", timeout: float = 10.0) -> str:
        """One socketmap request, as Postfix sends it; the decoded reply."""
        request = f"{name} {key}".encode()
        with socket.create_connection((LOOPBACK, self.port), timeout=timeout) as sock:
            sock.sendall(b"%d:%s," % (len(request), request))
            data = b""
            while True:
                length, colon, rest = data.partition(b":")
                if colon and length.isdigit() and len(rest) > int(length):
                    return rest[: int(length)].decode()
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError(f"socketmap connection closed after {data!r}")
                data += chunk

    def exim_query(self, domain: str, timeout: float = 10.0) -> str:
        """One line-protocol request, as Exim's ${readsocket} sends it; the line."""
        with socket.create_connection((LOOPBACK, self.exim_port), timeout=timeout) as sock:
            sock.sendall(domain.encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode().rstrip("\n")

    # --- what it logged --------------------------------------------------------------------------

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return read_events(self.events_file, kind)

    def diagnostics(self) -> str:
        return section("policy daemon stderr", read_text(self.stderr_file), 30) + section(
            f"policy daemon events ({self.events_file.name})", read_text(self.events_file), 20
        )


@contextmanager
def running_daemon(workdir: Path, netsim: NetSim) -> Iterator[PolicyDaemon]:
    """The policy daemon, running, on the netsim DNS and trusting the netsim test CA."""
    policy = PolicyDaemon(workdir, nameserver=netsim.nameserver, ca_file=netsim.ca_file)
    try:
        policy.start()
        yield policy
    finally:
        policy.kill()


# --------------------------------------------------------------------------------------------
# test messages and the netsim sinks
# --------------------------------------------------------------------------------------------

SENDER = "sender@client.example.test"
WAIT = 30.0  # every wait for an MTA outcome


def message(rcpt: str, tag: str) -> bytes:
    """A small message whose Subject and Message-ID local part are ``tag``."""
    return (
        f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}@client.example.test>\r\n\r\nMTA-STS test message {tag}\r\n"
    ).encode()


def submit(smtp_port: int, rcpt: str) -> str:
    """Submit a fresh message for ``rcpt`` to the MTA on 127.0.0.1:smtp_port; its tag."""
    tag = f"sts-{uuid.uuid4().hex[:12]}"
    send_smtp(smtp_port, message(rcpt, tag), recipients=[rcpt], sender=SENDER)
    return tag


def received(sink: SmtpSink, tag: str) -> list[ReceivedMessage]:
    """The messages tagged ``tag`` that ``sink`` accepted."""
    return [m for m in sink.messages if m.message["Subject"] == tag]


def wait_received(sink: SmtpSink, tag: str) -> ReceivedMessage:
    return wait_until(
        lambda: next(iter(received(sink, tag)), None),
        what=f"message {tag} at sink {sink.hostname}",
        timeout=WAIT,
    )
