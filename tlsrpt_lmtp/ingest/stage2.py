"""The LMTP server's stage 2 (parse, verify, store, emit) in a process of its own.

The server's process speaks LMTP and archives (stage 1); this one does the rest, so the two
run at once on two cores instead of taking turns under one GIL (measured with the
benchmark's load client at 8 connections: 1,000 → 1,600 small reports/s, with nothing left
pending). They share only the database: the server stores ``pending`` rows and nudges this
process through a pipe, and the pipe's end tells it to finish what is pending and exit.

The server supervises it: when it dies (a bug, the OOM killer, kill -9) it is started again
with a growing delay, whether or not mail arrives; the message it was working on is retried
alone and, after ``archive.MAX_ATTEMPTS`` interruptions, quarantined as poison.
"""

from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from tlsrpt_lmtp import metrics
from tlsrpt_lmtp.ingest.pipeline import Pipeline

BATCH = 256
BATCH_BYTES = 8 * 1024 * 1024  # raw mail per batch; parsing is bounded per chunk (pipeline)
POLL_SECONDS = 1.0  # look for pending rows even without a nudge
MAX_BACKOFF = 60.0


def follow(
    pipeline: Pipeline,
    nudges: int,
    *,
    recovery_before: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Process pending messages whenever nudged (and every POLL_SECONDS) until EOF.

    Messages archived before ``recovery_before`` (the server's start) or taken up before
    were left behind by an earlier run: their events say ``source: "recovery"``.
    A temporary database error (locked, busy, disk I/O) is waited out with backoff instead of
    ending the process."""
    done = False
    delay = 1.0
    while True:
        try:
            while batch := pipeline.archive.claim(BATCH, BATCH_BYTES):
                results = pipeline.process_many(batch, recovery_before=recovery_before)
                metrics.RECORDER.stage2_done(batch, results)
            delay = 1.0
        except sqlite3.OperationalError as exc:
            print(
                f"tlsrpt-lmtp: stage 2: database error ({exc}); retrying in {delay:g} s",
                file=sys.stderr,
                flush=True,
            )
            sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
            continue
        if done:
            return
        ready, _, _ = select.select([nudges], [], [], POLL_SECONDS)
        if ready and not os.read(nudges, 65536):
            done = True


class Stage2Process:
    """The server's side: start the process, nudge it, restart it when it dies, stop it."""

    def __init__(
        self, argv: Sequence[str], *, first_delay: float = 0.5, max_delay: float = MAX_BACKOFF
    ) -> None:
        self._argv = list(argv)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._first_delay = first_delay
        self._max_delay = max_delay
        self.restarts = 0
        self._proc = self._start()
        self._watcher = threading.Thread(target=self._supervise, name="stage2", daemon=True)
        self._watcher.start()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        os.set_blocking(proc.stdin.fileno(), False)
        return proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _supervise(self) -> None:
        delay = self._first_delay
        while True:
            proc = self._proc
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > self._max_delay:
                delay = self._first_delay  # it ran well for a while: not a crash loop
            print(
                f"tlsrpt-lmtp: stage 2 process exited ({code}); restarting it in {delay:g} s",
                file=sys.stderr,
                flush=True,
            )
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._proc = self._start()
                self.restarts += 1
            delay = min(delay * 2, self._max_delay)

    def nudge(self) -> None:
        with self._lock:
            stdin = self._proc.stdin
            assert stdin is not None
            # Busy with pending rows anyway, or dead: then the supervisor restarts it.
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(stdin.fileno(), b".")

    def stop(self, timeout: float = 120.0) -> int:
        """Let it finish what is pending, then reap it (killed after `timeout`)."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        self._watcher.join(timeout=5)
        return code
