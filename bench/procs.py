"""Child processes: one measurement worker at a time, and LMTP servers on loopback."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Measured:
    """A worker's JSON report (its last stdout line), exit code and stderr."""

    report: dict[str, Any]
    returncode: int
    stderr: str


def run_measured(argv: list[str], log: Path, timeout: float = 300.0) -> Measured:
    """Run one worker from the repo root; its stderr is kept in ``log``.

    Peak RSS comes from the worker's own VmHWM, not from wait4()'s ru_maxrss: Linux carries
    the parent's high-water mark into a child across (v)fork + exec, so ru_maxrss of a small
    worker reads as the parent's size.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:  # run() has killed the child already
        log.write_text(f"killed after {timeout:g} s\n")
        return Measured({}, -1, f"killed after {timeout:g} s")
    log.write_text(done.stderr)
    lines = done.stdout.strip().splitlines()
    report: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return Measured(report, done.returncode, done.stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _greets(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            return sock.recv(512).startswith(b"220")
    except OSError:
        return False


class Server:
    """An LMTP server subprocess on 127.0.0.1:port, started and stopped by us alone."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.port = port
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("wb")
        self._proc = subprocess.Popen(argv, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if _greets(self.port):
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
