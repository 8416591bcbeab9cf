"""The real milter (pymilter on libmilter, in its own process) driven without an MTA.

``miltertest`` plays the MTA's side of the milter protocol. It leaves two things to its caller,
which ``MtaSide`` does: honouring the no-reply flags the milter negotiated (SMFIP_NR_*: for
those steps the milter sends nothing, so waiting for a reply would hang), and passing body
chunks as ``str``. Every wait is bounded (socket timeouts, process waits).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("Milter", reason="pymilter not installed (pip install '.[milter]')")
miltertest = pytest.importorskip("miltertest", reason="miltertest not installed")
from miltertest import constants as C  # noqa: E402

from tests.dkim_support import (  # noqa: E402
    SUBMITTER,
    LoopbackDns,
    free_port,
    key_pair,
    loopback_dns,
    report_mail,
    sign,
)

PROJECT = Path(__file__).resolve().parents[1]
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


@pytest.fixture(scope="module")
def milters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Milters]:
    registry = Milters(tmp_path_factory.mktemp("milters"))
    yield registry
    assert all(rc == 0 for rc in registry.stop_all())


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    with loopback_dns() as server:
        yield server


def verdict(replies: list[Reply]) -> Reply:
    return replies[-1]


def code(replies: list[Reply]) -> str:
    reply = verdict(replies)
    assert reply[0] == C.SMFIR_REPLYCODE, replies
    return f"{reply[1]['smtpcode']} {reply[1]['text']}"


# --- negotiation and mail that is not a report ----------------------------------------------


def reports(milter: MilterProcess, report_id: str, kind: str = "tlsrpt.report") -> list[Any]:
    return [e for e in milter.events(kind) if e.get("report_id") == report_id]


def test_negotiates_no_reply_steps_and_leading_space(milters: Milters) -> None:
    side = milters.get().connect()
    try:
        for flag in ("NR_MAIL", "NR_RCPT", "NR_HDR", "NR_BODY", "HDR_LEADSPC", "NOCONNECT"):
            assert side.protocol & getattr(C, f"SMFIP_{flag}"), flag
        assert not side.protocol & (C.SMFIP_NR_DATA | C.SMFIP_NR_EOH)  # it answers there
    finally:
        side.close()


def test_other_mail_is_accepted_at_data_and_never_buffered(milters: Milters) -> None:
    milter = milters.get()
    milter.send(report_mail(report_id="warm-up"))
    before = milter.archived()
    replies = milter.send(report_mail(report_id="not-for-us"), [OTHER_RCPT])
    assert replies == [(C.SMFIR_ACCEPT, {})]
    assert milter.archived() == before
    assert reports(milter, "not-for-us") == []


# --- the three modes ------------------------------------------------------------------------


def test_tap_ingests_and_adds_the_header(milters: Milters) -> None:
    milter = milters.get("tap")
    replies = milter.send(report_mail(report_id="tap-1", failures=2))
    [event] = reports(milter, "tap-1")
    assert (event["source"], event["total_failure_session_count"]) == ("milter", 2)
    value = f"archive={event['archive_id'][:16]}; reports=1; failures=2"
    assert replies == [
        (C.SMFIR_ADDHEADER, {"name": "X-TLSRPT-Report", "value": " " + value}),
        (C.SMFIR_CONTINUE, {}),
    ]


def test_several_messages_on_one_connection(milters: Milters) -> None:
    milter = milters.get("tap")
    side = milter.connect()
    try:
        for i in range(3):
            reply = verdict(side.message(report_mail(report_id=f"conn-{i}")))
            assert reply[0] == C.SMFIR_CONTINUE
        assert side.message(report_mail(), [OTHER_RCPT]) == [(C.SMFIR_ACCEPT, {})]
        assert verdict(side.message(report_mail(report_id="conn-3")))[0] == C.SMFIR_CONTINUE
    finally:
        side.close()
    assert all(len(reports(milter, f"conn-{i}")) == 1 for i in range(4))


def test_discard(milters: Milters) -> None:
    milter = milters.get("discard")
    assert milter.send(report_mail(report_id="discard-1")) == [(C.SMFIR_DISCARD, {})]
    assert len(reports(milter, "discard-1")) == 1


def test_discard_removes_only_the_report_recipient(milters: Milters) -> None:
    milter = milters.get("discard")
    replies = milter.send(report_mail(report_id="discard-2"), [REPORT_RCPT, OTHER_RCPT])
    assert replies == [
        (C.SMFIR_DELRCPT, {"rcpt": f"<{REPORT_RCPT}>"}),
        (C.SMFIR_CONTINUE, {}),
    ]
    assert len(reports(milter, "discard-2")) == 1


def test_reject_invalid(milters: Milters) -> None:
    milter = milters.get("reject-invalid")
    before = len(milter.events("tlsrpt.invalid"))
    replies = milter.send(b"From: a@b.test\r\nSubject: x\r\n\r\nnot a report\r\n")
    assert code(replies) == "550 5.6.0 no usable TLS report: no report attachment found"
    assert len(milter.events("tlsrpt.invalid")) == before + 1
    assert verdict(milter.send(report_mail(report_id="valid")))[0] == C.SMFIR_CONTINUE
    assert len(reports(milter, "valid")) == 1


# --- failures -------------------------------------------------------------------------------


def test_archive_failure_is_451(milters: Milters) -> None:
    milter = milters.get("tap")
    assert verdict(milter.send(report_mail(report_id="before-lock")))[0] == C.SMFIR_CONTINUE
    blocker = sqlite3.connect(milter.data_dir / "tlsrpt.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: archiving must fail
    try:
        replies = milter.send(report_mail(report_id="locked-out"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert code(replies).startswith("451 4.3.0 cannot store the report, try again later")
    assert reports(milter, "locked-out") == []
    assert verdict(milter.send(report_mail(report_id="locked-out")))[0] == C.SMFIR_CONTINUE
    assert len(reports(milter, "locked-out")) == 1  # the retry is stored


def test_dkim_verdict_and_enforce_through_libmilter(milters: Milters, dns: LoopbackDns) -> None:
    good = key_pair("good")
    dns.publish(good)
    enforce = f'[dkim]\npolicy = "enforce"\nnameservers = ["{dns.nameserver}"]\ntimeout = 1\n'
    milter = milters.get("reject-invalid", enforce)
    signed = sign(report_mail(report_id="signed"), good)
    assert verdict(milter.send(signed))[0] == C.SMFIR_CONTINUE
    [event] = reports(milter, "signed")
    assert (event["dkim_result"], event["dkim_domain"], event["dkim_aligned"]) == (
        "pass",
        SUBMITTER,
        True,
    )
    replies = milter.send(report_mail(report_id="unsigned"))
    assert code(replies).startswith("550 5.7.20 TLS report not authenticated: no DKIM signature")
    [invalid] = reports(milter, "unsigned", "tlsrpt.invalid")
    assert invalid["dkim_result"] == "none"


def test_dkim_dns_down_with_enforce_is_451(milters: Milters) -> None:
    dead = f"127.0.0.1:{free_port()}"
    enforce = f'[dkim]\npolicy = "enforce"\nnameservers = ["{dead}"]\ntimeout = 0.5\n'
    milter = milters.get("reject-invalid", enforce)
    replies = milter.send(sign(report_mail(report_id="dns-down"), key_pair("good")))
    assert code(replies).startswith("451 4.4.3")
    assert reports(milter, "dns-down") == []


def test_unix_socket_and_clean_shutdown(tmp_path: Path) -> None:
    sock = tmp_path / "milter.sock"
    config = f'[lmtp]\nrecipients = ["{REPORT_RCPT}"]\n' + DKIM_OFF
    milter = MilterProcess(tmp_path / "unix", config, f"unix:{sock}")
    milter.start()
    try:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o666
        assert verdict(milter.send(report_mail()))[0] == C.SMFIR_CONTINUE
    finally:
        assert milter.stop() == 0
    assert not sock.exists()
    assert "Traceback" not in milter.stderr()


def test_tcp_nodelay_reaches_the_accepted_sockets() -> None:
    """disable_nagle() finds the listening socket among the process's descriptors; Linux hands
    TCP_NODELAY on to accepted sockets (else 40 ms per tapped message, see the adapter)."""
    from tlsrpt_lmtp.ingest.milter.adapter import disable_nagle

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert disable_nagle() >= 1
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        with socket.create_connection(listener.getsockname(), timeout=5) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert not client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_stops_on_sigterm_with_an_alert_thread_running(tmp_path: Path) -> None:
    """A webhook alert channel starts a delivery thread before libmilter's main loop; SIGTERM
    must still reach libmilter (the only thread that waits for it), not that thread."""
    config = (
        f'[lmtp]\nrecipients = ["{REPORT_RCPT}"]\n'
        f'[alerts]\nwebhook_url = "http://127.0.0.1:{free_port()}/hook"\n' + DKIM_OFF
    )
    milter = MilterProcess(tmp_path / "alerts", config)
    milter.start()
    try:
        assert verdict(milter.send(report_mail(report_id="alerting")))[0] == C.SMFIR_CONTINUE
    finally:
        assert milter.stop() == 0, milter.stderr()
