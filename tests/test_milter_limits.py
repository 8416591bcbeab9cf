"""The real milter's connection limit and idle timeout, from the MTA's side (miltertest).

Waits are bounded by socket timeouts; nothing asserts on speed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("Milter", reason="pymilter not installed (pip install '.[milter]')")
pytest.importorskip("miltertest", reason="miltertest not installed")

from miltertest import constants as C

from tests.support.dkim import report_mail
from tests.support.milter import (
    DKIM_OFF,
    PROJECT,
    REPORT_RCPT,
    SENDER,
    MilterProcess,
    MtaSide,
    code,
)

BASE = f'[lmtp]\nrecipients = ["{REPORT_RCPT}"]\n'


def milter(tmp_path: Path, settings: str, listen: str | None = None) -> Iterator[MilterProcess]:
    process = MilterProcess(tmp_path / "m", BASE + "[milter]\n" + settings + DKIM_OFF, listen)
    process.start()
    try:
        yield process
    finally:
        assert process.stop() == 0


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[MilterProcess]:
    yield from milter(tmp_path, "max_connections = 2\ntimeout = 30\n")


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[MilterProcess]:
    yield from milter(tmp_path, "timeout = 1\n")


def closed_by_peer(sock: socket.socket, wait: float = 30) -> bool:
    """True once the other side has closed (end of file); False if it is still open after
    ``wait`` seconds (only a bound: the test passes as soon as the close comes)."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def raw_connection(process: MilterProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", process.port), timeout=15)


def test_connections_beyond_the_limit_are_closed_and_the_others_work(
    limited: MilterProcess,
) -> None:
    first, second = limited.connect(), limited.connect()
    time.sleep(1)  # not an assertion: the watcher has seen both before the third comes
    third = raw_connection(limited)
    assert closed_by_peer(third)
    third.close()
    for side, rid in ((first, "one"), (second, "two")):
        assert side.message(report_mail(report_id=rid))[-1] == (C.SMFIR_CONTINUE, {})
        side.close()
    wait = time.monotonic() + 15
    while limited.archived() < 2 and time.monotonic() < wait:
        time.sleep(0.05)
    assert limited.archived() == 2
    again = limited.connect()  # the slots are free again
    again.close()


def test_idle_connection_is_closed(impatient: MilterProcess) -> None:
    silent = raw_connection(impatient)
    assert closed_by_peer(silent)
    silent.close()
    negotiated = impatient.connect()
    assert closed_by_peer(negotiated.conn.sock)
    negotiated.conn.sock.close()


def test_connection_limit_on_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "milter.sock"
    for process in milter(tmp_path, "max_connections = 1\ntimeout = 30\n", f"unix:{path}"):
        first = process.connect()
        time.sleep(1)  # not an assertion: the watcher has seen the first before the second
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as second:
            second.connect(str(path))
            assert closed_by_peer(second)
        assert first.message(report_mail(report_id="unix"))[-1] == (C.SMFIR_CONTINUE, {})
        first.close()


NOBODY_CONNECTS = """
import encodings.idna, os, socket, sys, time
os.setgid(65534); os.setuid(65534)
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=15) for _ in range(3)]

def closed():
    shut = 0
    for s in socks:
        s.setblocking(False)
        try:
            shut += s.recv(1) == b""
        except BlockingIOError:
            pass
    return shut

deadline = time.monotonic() + 15
while closed() == 0 and time.monotonic() < deadline:
    time.sleep(0.1)
time.sleep(1)  # not an assertion: a second look, after more watcher rounds
print(closed(), flush=True)
sys.stdin.read()
"""


def test_one_local_user_cannot_take_every_milter_slot(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another user")
    settings = "max_connections = 10\nmax_connections_per_peer = 2\ntimeout = 30\n"
    for process in milter(tmp_path, settings):
        nobody = subprocess.Popen(
            [sys.executable, "-c", NOBODY_CONNECTS, str(process.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert nobody.stdout is not None
            assert nobody.stdout.readline().split() == [b"1"]  # one of its three is closed
            mta = process.connect()  # another user's (the MTA's) connection works
            assert mta.message(report_mail(report_id="peer"))[-1] == (C.SMFIR_CONTINUE, {})
            mta.close()
        finally:
            assert nobody.stdin is not None
            nobody.stdin.close()
            nobody.wait(timeout=15)


def big_report(size: int) -> bytes:
    """A report-shaped mail (DKIM is off) whose body has ``size`` bytes."""
    head = f"From: {SENDER}\r\nTo: {REPORT_RCPT}\r\nSubject: Report\r\n\r\n"
    return head.encode() + (b"z" * 98 + b"\r\n") * (size // 100)


def up_to_end_of_message(side: MtaSide, raw: bytes) -> None:
    """Everything of one message but its end: the milter holds it, waiting."""
    if not side.protocol & C.SMFIP_NOCONNECT:
        side.conn.send_ar(
            C.SMFIC_CONNECT, hostname="client.test", family="4", port=2525, address="127.0.0.1"
        )
    if not side.protocol & C.SMFIP_NOHELO:
        side.conn.send_ar(C.SMFIC_HELO, helo="client.test")
    side._step(C.SMFIC_MAIL, C.SMFIP_NR_MAIL, args=[f"<{SENDER}>"])
    side._step(C.SMFIC_RCPT, C.SMFIP_NR_RCPT, args=[f"<{REPORT_RCPT}>"])
    side._step(C.SMFIC_DATA, C.SMFIP_NR_DATA)
    head, _, body = raw.partition(b"\r\n\r\n")
    for line in head.decode().split("\r\n"):
        name, _, value = line.partition(":")
        side._step(C.SMFIC_HEADER, C.SMFIP_NR_HDR, name=name, value=value)
    side._step(C.SMFIC_EOH, C.SMFIP_NR_EOH)
    text = body.decode()
    for start in range(0, len(text), C.MILTER_CHUNK_SIZE):
        side._step(C.SMFIC_BODY, C.SMFIP_NR_BODY, buf=text[start : start + C.MILTER_CHUNK_SIZE])


def test_report_mail_beyond_the_buffer_bound_is_451(tmp_path: Path) -> None:
    settings = "max_message_size = 200000\nmax_in_flight = 300000\ntimeout = 30\n"
    for process in milter(tmp_path, settings):
        holding = process.connect()
        up_to_end_of_message(holding, big_report(180000))
        time.sleep(1)  # not an assertion: lets the milter take in what was sent
        replies = process.send(big_report(150000))
        assert code(replies).startswith("451 4.3.1"), replies
        assert holding.conn.send_eom()[-1][0] == C.SMFIR_CONTINUE
        holding.close()
        assert process.send(big_report(150000))[-1][0] == C.SMFIR_CONTINUE  # it fits now


def test_unsafe_unix_socket_paths_are_refused(tmp_path: Path) -> None:
    victim = tmp_path / "milter.sock"
    victim.write_bytes(b"precious")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    config = tmp_path / "tlsrpt.toml"
    config.write_text(BASE + DKIM_OFF)
    for path, message in (
        (victim, "exists and is not a socket"),
        (shared / "milter.sock", "writable by group or others"),
    ):
        argv = [sys.executable, "-m", "tlsrpt_lmtp.ingest.milter", "--config", str(config)]
        argv += ["--listen", f"unix:{path}", "--data-dir", str(tmp_path / "data")]
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=30,
            env={"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin"},
        )
        assert out.returncode == 2, out.stderr
        assert message in out.stderr
    assert victim.read_bytes() == b"precious"
    assert not (shared / "milter.sock").exists()
