"""A minimal LMTP client for tests: smtplib's LMTP class reads one reply after DATA,
but RFC 2033 gives one per recipient, so this reads them all."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# The report samples carry real senders' DKIM signatures; verifying them would ask a DNS
# server off this machine. DKIM is tested on its own, against a loopback DNS server.
NO_DKIM = ("--dkim-policy", "off")


class LMTPClient:
    def __init__(self, address: tuple[str, int] | str, timeout: float = 10.0) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self.file.readline().decode()
            if not line:
                raise ConnectionError("server closed the connection")
            lines.append(line[4:].rstrip())
            if line[3:4] != "-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, text: str) -> tuple[int, str]:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()

    def deliver(self, sender: str, rcpts: list[str], raw: bytes) -> list[tuple[int, str]]:
        """MAIL, RCPT..., DATA; returns the RCPT replies of refused ones and the DATA replies."""
        self.cmd(f"MAIL FROM:<{sender}>")
        accepted = [r for r in rcpts if self.cmd(f"RCPT TO:<{r}>")[0] == 250]
        if not accepted:
            self.cmd("RSET")
            return []
        code, _ = self.cmd("DATA")
        assert code == 354
        body = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        body = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in body.split(b"\r\n"))
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self.sock.sendall(body + b".\r\n")
        return [self.reply() for _ in accepted]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.cmd("QUIT")
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start `tlsrpt-lmtp serve` and wait until it listens; returns (process, listen)."""
    listen = next((a.split("=", 1)[1] for a in args if a.startswith("--listen=")), None)
    extra = list(args)
    if listen is None:
        listen = f"127.0.0.1:{free_port()}"
        extra.append(f"--listen={listen}")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tlsrpt_lmtp",
            "serve",
            "--data-dir",
            str(data_dir),
            *NO_DKIM,
            *extra,
        ],
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if "LMTP on" not in line:
        proc.kill()
        raise AssertionError(f"server did not start: {line}{proc.stderr.read().decode()}")
    return proc, listen


def address_of(listen: str) -> tuple[str, int] | str:
    if listen.startswith("unix:"):
        return listen[5:]
    host, _, port = listen.rpartition(":")
    return host, int(port)


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only), so a test can make the disk full."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a tmpfs mount, which needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def filled(path: Path) -> Iterator[None]:
    """Fill the file system holding `path` until writes fail with ENOSPC; free it after."""
    filler = path / "filler"
    with filler.open("wb", buffering=0) as f:  # nothing left to flush at close
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    try:
        yield
    finally:
        filler.unlink()
