"""The LMTP server's stage 2 (parse, verify, store, emit) in a process of its own.

The server's process speaks LMTP and archives (stage 1); this one does the rest, so the two
run at once on two cores instead of taking turns under one GIL (measured with the
benchmark's load client at 8 connections: 1,000 → 1,600 small reports/s, with nothing left
pending). They share only the store: the server stores ``pending`` rows and nudges this
process through a pipe, and the pipe's end tells it to finish what is pending and exit. The
server's process holds only the archiver (archiver.py); this one holds the processor, built
from the configuration the server resolved and handed over once (``spawn``, ``main``).

The server supervises it: when it dies (a bug, the OOM killer, kill -9) it is started again
with a growing delay, whether or not mail arrives; the message it was working on is retried
alone and, after ``archive.MAX_ATTEMPTS`` interruptions, quarantined as poison.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tlsrpt_lmtp import metrics
from tlsrpt_lmtp.alerts.config import AlertsConfig
from tlsrpt_lmtp.config import Config
from tlsrpt_lmtp.configfields import from_json, to_json
from tlsrpt_lmtp.ingest.dkimconfig import DkimConfig
from tlsrpt_lmtp.ingest.pipeline import Pipeline
from tlsrpt_lmtp.ingest.retention import Pruner, Scheduled
from tlsrpt_lmtp.metrics.config import MetricsConfig
from tlsrpt_lmtp.store.base import StoreUnavailable

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
    prune: Scheduled | None = None,
) -> None:
    """Process pending messages whenever nudged (and every POLL_SECONDS) until EOF.

    Messages archived before ``recovery_before`` (the server's start) or taken up before
    were left behind by an earlier run: their events say ``source: "recovery"``.
    A temporary database error (locked, busy, unreachable) is waited out with backoff instead of
    ending the process. With ``prune`` (``[storage] retention``), old raw mail is deleted in
    slices between the batches: pending messages always come first."""
    done = False
    delay = 1.0
    while True:
        try:
            while batch := pipeline.store.claim(BATCH, BATCH_BYTES):
                results = pipeline.process_many(batch, recovery_before=recovery_before)
                metrics.RECORDER.stage2_done(batch, results)
            if prune is not None:
                _prune(pipeline, prune)
            delay = 1.0
        except StoreUnavailable as exc:
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
        busy = prune is not None and prune.busy
        ready, _, _ = select.select([nudges], [], [], 0 if busy else POLL_SECONDS)
        if ready and not os.read(nudges, 65536):
            done = True


def _prune(pipeline: Pipeline, prune: Scheduled) -> None:
    """One slice of the scheduled prune; a locked database is waited out by the caller, any
    other failure postpones the prune (by an hour) and never stops ingest."""
    try:
        event = prune.tick()
    except StoreUnavailable:
        raise
    except Exception as exc:
        prune.postpone()
        print(f"tlsrpt-lmtp: prune failed ({exc!r}); next try in an hour", file=sys.stderr)
        return
    if event is not None:
        pipeline.delivery.write([event])
        pipeline.delivery.flush()


class Stage2Process:
    """The server's side: start the process, nudge it, restart it when it dies, stop it."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        first_delay: float = 0.5,
        max_delay: float = MAX_BACKOFF,
    ) -> None:
        self._argv = list(argv)
        self._env = dict(env or {})  # added to this process's environment at each start
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._first_delay = first_delay
        self._max_delay = max_delay
        self.restarts = 0
        self._proc = self._start()
        self._watcher = threading.Thread(target=self._supervise, name="stage2", daemon=True)
        self._watcher.start()

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self._env}  # at each start: the metrics directory may be new
        proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE, env=env)
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


# --------------------------------------------------------------------------------------------
# the hop: `serve` resolves the configuration once and hands it to the process it spawns
# --------------------------------------------------------------------------------------------

HANDOVER_ENV = "TLSRPT_LMTP_STAGE2_CONFIG"  # JSON, read (and removed) by the process at start


@dataclass(frozen=True, slots=True)
class Stage2Config:
    """All stage 2 needs: file, then flags, resolved by ``serve``; never read again here."""

    ingest: Config
    dkim: DkimConfig
    alerts: AlertsConfig
    metrics: MetricsConfig
    server_started: str  # messages archived before were left behind by an earlier run


def serialise(config: Stage2Config) -> str:
    return json.dumps(to_json(config), separators=(",", ":"))


def deserialise(text: str) -> Stage2Config:
    result: Stage2Config = from_json(Stage2Config, json.loads(text))
    return result


def spawn(config: Stage2Config) -> Stage2Process:
    """Start (and supervise) the stage 2 process with ``config``."""
    argv = [sys.executable, "-m", "tlsrpt_lmtp.ingest.stage2"]
    return Stage2Process(argv, env={HANDOVER_ENV: serialise(config)})


def main() -> int:
    """The stage 2 process: the processor on the shared store, until the server closes stdin."""
    from tlsrpt_lmtp.alerts.hook import hook_from_config
    from tlsrpt_lmtp.config import syslog_options
    from tlsrpt_lmtp.core.retention import Retention
    from tlsrpt_lmtp.ingest.delivery import Delivery
    from tlsrpt_lmtp.ingest.dkim import build_checker
    from tlsrpt_lmtp.metrics import exposition
    from tlsrpt_lmtp.output.sinks import open_emitter

    # The server ends this process by closing its stdin, after the last delivery; a
    # signal to the whole process group must not cut a batch short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Removed, so that nothing this process starts (sendmail) inherits it.
    config = deserialise(os.environ.pop(HANDOVER_ENV))
    c = config.ingest
    exposition.join_serve(config.metrics)
    target = c.syslog_address if c.log_format == "syslog" else c.log_file
    try:  # checked by serve before it started this process; the disk may have changed since
        emitter = open_emitter(c.log_format, target, syslog=syslog_options(c))
        processor = Pipeline.open(
            c.data_dir,
            emitter,
            max_decompressed=c.max_decompressed,
            dkim=build_checker(config.dkim),
            delivery=Delivery(emitter, retry=True),  # waits for a failing sink
            max_failure_details=c.max_failure_details,
            database=c.database or None,
        )
        hook = hook_from_config(config.alerts, processor.store, processor.emit)
        retention = Retention.parse(c.retention, c.report_retention)
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError
        print(f"tlsrpt-lmtp: stage 2: {exc}", file=sys.stderr, flush=True)
        return 2
    processor.hooks.append(hook)  # alerts are for what arrives, not for backfills
    prune = Scheduled(Pruner(processor.store, retention)) if retention.enabled else None
    try:
        follow(processor, sys.stdin.fileno(), recovery_before=config.server_started, prune=prune)
    finally:
        hook.close()
        processor.close()
        emitter.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
