"""Child processes: a measured worker (peak RSS via wait4) and LMTP servers on loopback."""

from __future__ import annotations

import json
import os
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
    """A worker's JSON report, its exit code and its peak RSS (ru_maxrss of that child)."""

    report: dict[str, Any]
    returncode: int
    maxrss_kib: int
    stderr: str


def run_measured(argv: list[str], log: Path, timeout: float = 300.0) -> Measured:
    """Run ``argv`` from the repo root; reap it with wait4() so ru_maxrss is this child's alone."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out_path = log.with_suffix(".out")
    with out_path.open("wb") as out, log.open("wb") as err:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline and time.monotonic() > deadline:
                proc.kill()
                deadline = 0.0
            time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text().strip().splitlines()
    report: dict[str, Any] = json.loads(stdout[-1]) if stdout else {}
    stderr = log.read_text(errors="replace")
    return Measured(report, proc.returncode, usage.ru_maxrss, stderr)


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
