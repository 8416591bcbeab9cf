"""The real milter (pymilter on libmilter, in its own process) and the MTA's side of the milter
protocol, spoken with ``miltertest``.

``miltertest`` leaves two things to its caller, which ``MtaSide`` does: honouring the no-reply
flags the milter negotiated (SMFIP_NR_*: for those steps the milter sends nothing, so waiting
for a reply would hang), and passing body chunks as ``str``. Every wait is bounded (socket
timeouts, process waits).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("Milter", reason="pymilter not installed (pip install '.[milter]')")
miltertest = pytest.importorskip("miltertest", reason="miltertest not installed")
from miltertest import constants as C  # noqa: E402

from tests.support.dkim import free_port  # noqa: E402

PROJECT = Path(__file__).resolve().parents[2]


REPORT_RCPT = "tlsrpt@reports.example.test"


OTHER_RCPT = "postmaster@reports.example.test"


SENDER = "reporter@reporter.example"


Reply = tuple[str, dict[str, Any]]


DKIM_OFF = '[dkim]\npolicy = "off"\n'


class MtaSide:
    """One milter connection, spoken from the MTA's side with miltertest."""

    def __init__(self, address: str | Path) -> None:
        if isinstance(address, Path):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(15)
            sock.connect(str(address))
        else:
            sock = socket.create_connection(("127.0.0.1", int(address)), timeout=15)
            # Like an MTA: several packets go out back to back (no-reply steps).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = miltertest.MilterConnection(sock)
        self.actions, self.protocol = self.conn.optneg_mta()

    def close(self) -> None:
        self.conn._send(C.SMFIC_QUIT)
        self.conn.sock.close()

    def _step(self, cmd: str, no_reply_flag: int, **args: Any) -> Reply | None:
        if self.protocol & no_reply_flag:
            self.conn._send(cmd, **args)
            return None
        reply: Reply = self.conn.send_ar(cmd, **args)
        return reply

    def message(self, raw: bytes, recipients: Sequence[str] = (REPORT_RCPT,)) -> list[Reply]:
        """One message; returns the replies that ended it (modifications, then the verdict)."""
        if not self.protocol & C.SMFIP_NOCONNECT:
            self.conn.send_ar(
                C.SMFIC_CONNECT, hostname="client.test", family="4", port=2525, address="127.0.0.1"
            )
        if not self.protocol & C.SMFIP_NOHELO:
            self.conn.send_ar(C.SMFIC_HELO, helo="client.test")
        steps: list[tuple[str, int, dict[str, Any]]] = [
            (C.SMFIC_MAIL, C.SMFIP_NR_MAIL, {"args": [f"<{SENDER}>"]}),
            *((C.SMFIC_RCPT, C.SMFIP_NR_RCPT, {"args": [f"<{r}>"]}) for r in recipients),
            (C.SMFIC_DATA, C.SMFIP_NR_DATA, {}),
        ]
        head, _, body = raw.partition(b"\r\n\r\n")
        for name, value in _headers(head):
            steps.append((C.SMFIC_HEADER, C.SMFIP_NR_HDR, {"name": name, "value": value}))
        steps.append((C.SMFIC_EOH, C.SMFIP_NR_EOH, {}))
        text = body.decode("utf-8")  # miltertest encodes body chunks from str
        for start in range(0, len(text), C.MILTER_CHUNK_SIZE):
            chunk = text[start : start + C.MILTER_CHUNK_SIZE]
            steps.append((C.SMFIC_BODY, C.SMFIP_NR_BODY, {"buf": chunk}))
        for cmd, flag, args in steps:
            reply = self._step(cmd, flag, **args)
            if reply is not None and reply[0] != C.SMFIR_CONTINUE:
                return [reply]
        replies: list[Reply] = self.conn.send_eom()
        return replies


def _headers(head: bytes) -> list[tuple[str, str]]:
    """As Postfix passes them with SMFIP_HDR_LEADSPC: the value after the colon, unfolded not."""
    headers: list[tuple[str, str]] = []
    for line in head.decode("utf-8").split("\r\n"):
        if line[:1] in (" ", "\t"):
            name, value = headers[-1]
            headers[-1] = (name, f"{value}\n{line}")
        else:
            name, _, value = line.partition(":")
            headers.append((name, value))
    return headers


class MilterProcess:
    """``python -m tlsrpt_lmtp.ingest.milter`` with its own config, data dir and event log."""

    def __init__(self, workdir: Path, config: str, listen: str | None = None) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.events_file = workdir / "events.jsonl"
        self.stderr_file = workdir / "milter.stderr"
        self.listen = listen or f"inet:{free_port()}@127.0.0.1"
        self.port = int(self.listen.split("@")[0][5:]) if self.listen.startswith("inet:") else 0
        self.config = workdir / "tlsrpt.toml"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str | Path:
        if self.listen.startswith("unix:"):
            return Path(self.listen[5:])
        return str(self.port)

    def start(self) -> None:
        argv = [sys.executable, "-m", "tlsrpt_lmtp.ingest.milter", "--config", str(self.config)]
        argv += ["--listen", self.listen, "--data-dir", str(self.data_dir)]
        argv += ["--log-file", str(self.events_file)]
        env = {**os.environ, "PYTHONPATH": str(PROJECT)}
        with self.stderr_file.open("ab") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.monotonic() + 15
        while b"milter on" not in self.stderr_file.read_bytes():
            assert self.proc.poll() is None, f"milter exited: {self.stderr()}"
            assert time.monotonic() < deadline, f"milter did not start: {self.stderr()}"
            time.sleep(0.05)

    def stop(self) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    return proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        raise
                    self._wake()
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            raise AssertionError(f"milter ignored SIGTERM: {self.stderr()}") from None

    def _wake(self) -> None:
        """libmilter checks its stop flag when its listener wakes up: every 5 s, or at once
        when a connection comes in. Connect (and leave) so that a stop takes no 5 s."""
        address = self.address
        try:
            if isinstance(address, Path):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(1)
                    sock.connect(str(address))
            else:
                socket.create_connection(("127.0.0.1", int(address)), timeout=1).close()
        except OSError:
            pass

    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace")

    def events(self, kind: str) -> list[dict[str, Any]]:
        if not self.events_file.exists():
            return []
        lines = self.events_file.read_text().splitlines()
        return [e for e in map(json.loads, filter(None, lines)) if e["event"] == kind]

    def connect(self) -> MtaSide:
        return MtaSide(self.address)

    def send(self, raw: bytes, recipients: Sequence[str] = (REPORT_RCPT,)) -> list[Reply]:
        side = self.connect()
        try:
            return side.message(raw, recipients)
        finally:
            side.close()

    def archived(self) -> int:
        with sqlite3.connect(self.data_dir / "tlsrpt.sqlite3") as db:
            return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])


class Milters:
    """The module's milter processes, one per configuration, started on first use and stopped
    together at the end (libmilter notices SIGTERM within about 5 s: stopping them one by one
    would cost that much per process)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[tuple[str, str, str | None], MilterProcess] = {}

    def get(self, mode: str = "tap", extra: str = "", listen: str | None = None) -> MilterProcess:
        key = (mode, extra, listen)
        if key not in self.running:
            config = (
                f'[lmtp]\nrecipients = ["{REPORT_RCPT}"]\n'
                f'[milter]\nmode = "{mode}"\ntimeout = 30\n' + (extra or DKIM_OFF)
            )
            milter = MilterProcess(self.root / f"m{len(self.running)}", config, listen)
            self.running[key] = milter
            milter.start()
        return self.running[key]

    def stop_all(self) -> list[int]:
        procs = [m.proc for m in self.running.values() if m.proc is not None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        return [m.stop() for m in self.running.values()]


def verdict(replies: list[Reply]) -> Reply:
    return replies[-1]


def code(replies: list[Reply]) -> str:
    reply = verdict(replies)
    assert reply[0] == C.SMFIR_REPLYCODE, replies
    return f"{reply[1]['smtpcode']} {reply[1]['text']}"
