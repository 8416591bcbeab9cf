"""The LMTP server under abuse, as a real process on loopback or a unix socket in a temp dir:
long lines and big mail, memory and connection bounds, socket files, store file modes.
(The decoder alone: test_lmtpdata.py.) Waits are bounded; nothing asserts on speed.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.lmtp import Server, serve_with_config, stuffed
from tests.support.lmtp_client import NO_DKIM, LMTPClient, address_of
from tests.support.mail import RCPT, report_mail
from tests.support.procs import free_port

MIB = 1024 * 1024


def send_raw(client: LMTPClient, content: bytes) -> tuple[int, str]:
    """MAIL, RCPT, DATA with ``content`` sent in 1 MiB writes; the single DATA reply."""
    assert client.cmd("MAIL FROM:<r@example.net>")[0] == 250
    assert client.cmd(f"RCPT TO:<{RCPT}>")[0] == 250
    assert client.cmd("DATA")[0] == 354
    wire = stuffed(content)
    for at in range(0, len(wire), MIB):
        client.sock.sendall(wire[at : at + MIB])
    return client.reply()


def archived(data_dir: Path) -> list[bytes]:
    with sqlite3.connect(data_dir / "tlsrpt.sqlite3") as db:
        return [bytes(row[0]) for row in db.execute("SELECT raw FROM messages")]


def assert_stored(reply: tuple[int, str], data_dir: Path, content: bytes) -> None:
    code, text = reply
    assert code == 250, text
    assert text.endswith(hashlib.sha256(content).hexdigest()[:16])
    assert content in archived(data_dir)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    if s.proc.poll() is None:
        s.stop()


def test_ten_megabytes_of_empty_lines_is_stored_byte_exact(server: Server) -> None:
    content = b"Subject: empty lines\r\n\r\n" + b"\r\n" * (5 * 1000 * 1000)
    c = server.client()
    assert_stored(send_raw(c, content), server.data_dir, content)
    c.close()


def test_a_two_mebibyte_line_is_stored_byte_exact(server: Server) -> None:
    content = report_mail(rid="long", extra_line=b"." + b"y" * (2 * MIB) + b"\r\n..\r\n")
    c = server.client()
    assert_stored(send_raw(c, content), server.data_dir, content)
    c.close()


def test_commands_pipelined_after_the_end_marker_are_answered(server: Server) -> None:
    c = server.client()
    c.cmd("MAIL FROM:<r@example.net>")
    c.cmd(f"RCPT TO:<{RCPT}>")
    assert c.cmd("DATA")[0] == 354
    c.sock.sendall(stuffed(b"Subject: x\r\n\r\n.\r\n") + b"RSET\r\nNOOP\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 250]
    c.close()
    assert b"Subject: x\r\n\r\n.\r\n" in archived(server.data_dir)


def config_server(tmp_path: Path, lmtp: str, *args: str) -> Server:
    cfg = tmp_path / "tlsrpt.toml"
    cfg.write_text("[lmtp]\n" + lmtp)
    return Server(tmp_path, f"--config={cfg}", *args)


def test_mail_beyond_the_in_flight_bound_is_452_and_fits_later(tmp_path: Path) -> None:
    s = config_server(tmp_path, "max_message_size = 200000\nmax_in_flight = 300000\n")
    try:
        slow = s.client()
        slow.cmd("MAIL FROM:<r@example.net>")
        slow.cmd(f"RCPT TO:<{RCPT}>")
        assert slow.cmd("DATA")[0] == 354
        held = b"Subject: slow\r\n\r\n" + b"z" * 198 + b"\r\n"
        slow.sock.sendall(held * 900)  # 180 kB held, the end marker not sent yet
        time.sleep(1)  # not an assertion: lets the server read what was sent
        other = s.client()
        content = b"Subject: other\r\n\r\n" + (b"o" * 198 + b"\r\n") * 700  # 140 kB
        code, text = send_raw(other, content)
        assert (code, text.split()[0]) == (452, "4.3.1")
        slow.sock.sendall(b".\r\n")
        assert slow.reply()[0] == 250
        assert_stored(send_raw(other, content), tmp_path, content)
        other.close()
        slow.close()
    finally:
        s.stop()


def test_size_limit_is_552_to_every_recipient(tmp_path: Path) -> None:
    s = Server(tmp_path, "--max-message-size=5000")
    try:
        c = s.client()
        replies = c.deliver("r@example.net", [RCPT, RCPT.upper()], b"x" * 9000 + b"\r\n")
        assert [(code, text.split()[0]) for code, text in replies] == [(552, "5.3.4")] * 2
        assert c.cmd("NOOP")[0] == 250
        c.close()
    finally:
        s.stop()


def test_connection_beyond_the_limit_is_421_and_the_others_deliver(tmp_path: Path) -> None:
    s = config_server(tmp_path, "max_connections = 2\n")
    try:
        first, second = s.client(), s.client()
        third = LMTPClient(address_of(s.listen))
        assert third.greeting[0] == 421 and third.greeting[1].startswith("4.3.2")
        with pytest.raises(ConnectionError):
            third.reply()  # the server closed it
        third.sock.close()
        for c, rid in ((first, "one"), (second, "two")):
            assert [code for code, _ in c.deliver("r@example.net", [RCPT], report_mail(rid))] == [
                250
            ]
        first.close()
        deadline = time.monotonic() + 10
        while True:  # the freed slot is taken again
            c = LMTPClient(address_of(s.listen))
            if c.greeting[0] == 220 or time.monotonic() > deadline:
                break
            c.sock.close()
            time.sleep(0.05)
        assert c.greeting[0] == 220
        c.close()
        second.close()
    finally:
        s.stop()


def test_one_local_user_cannot_take_every_slot(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another user")
    s = config_server(tmp_path, "max_connections = 10\nmax_connections_per_peer = 2\n")
    host, port = address_of(s.listen)
    script = (
        "import encodings.idna, os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        f"socks = [socket.create_connection(({host!r}, {port}), timeout=15) for _ in range(3)]\n"
        "print(' '.join(c.recv(512)[:3].decode() for c in socks), flush=True)\n"
        "sys.stdin.read()\n"
    )
    nobody = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert nobody.stdout is not None
        assert nobody.stdout.readline().decode().split() == ["220", "220", "421"]
        c = s.client()  # another user (root, like the MTA's own user) still gets in
        assert [code for code, _ in c.deliver("r@example.net", [RCPT], report_mail())] == [250]
        c.close()
    finally:
        assert nobody.stdin is not None
        nobody.stdin.close()
        nobody.wait(timeout=15)
        s.stop()


def test_per_peer_limit_on_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "lmtp.sock"
    s = config_server(tmp_path, "max_connections_per_peer = 1\n", f"--listen=unix:{path}")
    try:
        first = s.client()
        second = LMTPClient(str(path))
        assert second.greeting[0] == 421 and second.greeting[1].startswith("4.3.2")
        second.sock.close()
        assert [code for code, _ in first.deliver("r@example.net", [RCPT], report_mail())] == [250]
        first.close()
    finally:
        s.stop()


def test_in_flight_below_the_message_size_is_a_config_error(tmp_path: Path) -> None:
    out = serve_with_config(tmp_path, "[lmtp]\nmax_message_size = 2000\nmax_in_flight = 1000\n")
    assert out.returncode == 2
    assert "max_in_flight must be at least max_message_size" in out.stderr


def test_idle_connection_is_closed(tmp_path: Path) -> None:
    s = config_server(tmp_path, "idle_timeout = 1\n")
    try:
        c = s.client()
        c.sock.settimeout(30)  # generous: only bounds the wait
        code, text = c.reply()
        assert (code, text.split()[0]) == (421, "4.4.2")
        assert c.sock.recv(1) == b""
        c.sock.close()
    finally:
        s.stop()


def test_a_stalled_data_is_closed_and_its_bytes_are_freed(tmp_path: Path) -> None:
    s = config_server(
        tmp_path, "idle_timeout = 1\nmax_message_size = 100000\nmax_in_flight = 100000\n"
    )
    try:
        stalled = s.client()
        stalled.cmd("MAIL FROM:<r@example.net>")
        stalled.cmd(f"RCPT TO:<{RCPT}>")
        assert stalled.cmd("DATA")[0] == 354
        stalled.sock.sendall(b"Subject: stalled\r\n\r\n" + b"s" * 90000)  # then nothing
        stalled.sock.settimeout(30)  # generous: only bounds the wait
        assert stalled.reply()[0] == 421
        assert stalled.sock.recv(1) == b""
        stalled.sock.close()
        content = b"Subject: after\r\n\r\n" + b"a" * 90000 + b"\r\n"
        c = s.client()
        assert_stored(send_raw(c, content), tmp_path, content)
        c.close()
    finally:
        s.stop()


def run_serve(data_dir: Path, listen: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "tlsrpt_lmtp", "serve", "--data-dir", str(data_dir)]
    return subprocess.run(
        [*argv, *NO_DKIM, f"--listen={listen}"], capture_output=True, text=True, timeout=30
    )


def test_a_regular_file_at_the_socket_path_is_refused_and_kept(tmp_path: Path) -> None:
    victim = tmp_path / "lmtp.sock"
    victim.write_bytes(b"precious")
    out = run_serve(tmp_path / "data", f"unix:{victim}")
    assert out.returncode == 2
    assert "exists and is not a socket" in out.stderr
    assert victim.read_bytes() == b"precious"


def test_a_group_or_world_writable_socket_directory_is_refused(tmp_path: Path) -> None:
    for mode in (0o777, 0o1777, 0o770):
        shared = tmp_path / f"shared{mode:o}"
        shared.mkdir()
        shared.chmod(mode)
        out = run_serve(tmp_path / "data", f"unix:{shared / 'lmtp.sock'}")
        assert out.returncode == 2
        assert "writable by group or others" in out.stderr
        assert not (shared / "lmtp.sock").exists()


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "lmtp.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # left behind, nobody listening
    s = Server(tmp_path, f"--listen=unix:{path}")
    c = s.client()
    assert [code for code, _ in c.deliver("r@example.net", [RCPT], report_mail())] == [250]
    c.close()
    assert s.stop() == 0


def test_store_files_are_0640_from_the_first_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    listen = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "tlsrpt_lmtp", "serve", "--data-dir", str(data), *NO_DKIM]
    proc = subprocess.Popen(
        [*argv, f"--listen={listen}", "--log-file=/dev/null"],
        stderr=subprocess.PIPE,
        umask=0o022,
    )
    try:
        assert proc.stderr is not None
        assert "LMTP on" in proc.stderr.readline().decode()
        at_start = modes(data)
        c = LMTPClient(address_of(listen))
        c.cmd("LHLO test.example")
        assert c.deliver("r@example.net", [RCPT], report_mail())[0][0] == 250
        after_delivery = modes(data)
        c.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
    db = "tlsrpt.sqlite3"
    for names in (at_start, after_delivery):
        assert {db, f"{db}-wal", f"{db}-shm"} <= set(names)
        assert {names[n] for n in (db, f"{db}-wal", f"{db}-shm")} == {0o640}
    assert stat.S_IMODE(data.stat().st_mode) == 0o750


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
