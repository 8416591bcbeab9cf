"""The LMTP server's stage 2 (parse, verify, store, emit) in a process of its own.

The server's process speaks LMTP and archives (stage 1); this one does the rest, so the two
run at once on two cores instead of taking turns under one GIL (measured with the
benchmark's load client at 8 connections: 1,000 → 1,600 small reports/s, with nothing left
pending). They share only the database: the server stores ``pending`` rows and nudges this
process through a pipe, and the pipe's end tells it to finish what is pending and exit.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Sequence

from tlsrpt_lmtp.pipeline import Pipeline

BATCH = 256
POLL_SECONDS = 1.0  # look for pending rows even without a nudge


def follow(pipeline: Pipeline, nudges: int) -> None:
    """Process pending messages whenever nudged (and every POLL_SECONDS) until EOF."""
    done = False
    while True:
        while batch := pipeline.archive.pending(BATCH):
            pipeline.process_many(batch)
        if done:
            return
        ready, _, _ = select.select([nudges], [], [], POLL_SECONDS)
        if ready and not os.read(nudges, 65536):
            done = True


class Stage2Process:
    """The server's side: start the process, nudge it, restart it if it died, stop it."""

    def __init__(self, argv: Sequence[str]) -> None:
        self._argv = list(argv)
        self._proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        os.set_blocking(proc.stdin.fileno(), False)
        return proc

    def nudge(self) -> None:
        assert self._proc.stdin is not None
        if self._proc.poll() is not None:
            self._restart()
        try:
            os.write(self._proc.stdin.fileno(), b".")
        except BlockingIOError:
            pass  # nudges it has not read yet: it is busy with pending rows anyway
        except BrokenPipeError:
            self._restart()

    def _restart(self) -> None:
        print(
            f"tlsrpt-lmtp: stage 2 process exited ({self._proc.returncode}); restarting it",
            file=sys.stderr,
        )
        self._proc = self._start()

    def stop(self, timeout: float = 120.0) -> int:
        """Let it finish what is pending, then reap it (killed after `timeout`)."""
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return self._proc.wait()
