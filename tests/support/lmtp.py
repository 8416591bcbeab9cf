"""The LMTP server as a real process on loopback (``Server``), what it left behind (events,
archive statuses, its stage-2 child), and DATA content as it goes over the wire."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support.lmtp_client import LMTPClient, address_of, start_server, wait_for
from tests.support.mail import RCPT


def serve_with_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """``serve --config`` with this TOML, for a config the server must refuse at start."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "tlsrpt_lmtp", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def events(data_dir: Path, *, at_least: int = 0) -> list[dict[str, object]]:
    """The events written so far; waits (bounded) until there are `at_least` of them,
    since a delivery is acknowledged once archived and its events follow."""
    path = data_dir / "events.jsonl"

    def read() -> list[dict[str, object]]:
        text = path.read_text() if path.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    wait_for(lambda: len(read()) >= at_least)
    return read()


def statuses(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "tlsrpt.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT status FROM messages")]


class Server:
    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.proc, self.listen = start_server(
            data_dir, f"--log-file={data_dir / 'events.jsonl'}", f"--recipient={RCPT}", *args
        )

    def client(self) -> LMTPClient:
        c = LMTPClient(address_of(self.listen))
        c.cmd("LHLO test.example")
        return c

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.stderr:
                self.proc.stderr.close()


def children(pid: int) -> list[int]:
    """Child processes of every thread of `pid` that are still running."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return [p for p in found if not zombie(p)]


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def stuffed(content: bytes) -> bytes:
    """``content`` (ending in CRLF, or empty) as sent after DATA: dots doubled, end marker."""
    return (b"\r\n" + content).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"
