"""A bounded queue drained by one daemon thread: delivery never blocks ingestion.

When the queue is full the alert is dropped and ``on_drop`` says so (the alert event itself
is already in the event log). ``close`` gives the thread a bounded time to finish.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tlsrpt_lmtp.alerts")

Payload = dict[str, Any]
# deliver(payload, stop) -> None on success, or a reason for giving up; must honour ``stop``.
Deliver = Callable[[Payload, threading.Event], str | None]
OnDrop = Callable[[str, Payload, str], None]  # (channel, payload, reason)

_STOP: Payload = {}


class Outbox:
    def __init__(self, channel: str, deliver: Deliver, *, size: int, on_drop: OnDrop) -> None:
        self.channel = channel
        self._deliver = deliver
        self._on_drop = on_drop
        self._queue: queue.Queue[Payload] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"alerts-{channel}", daemon=True)
        self._thread.start()

    def put(self, payload: Payload) -> bool:
        if self._stop.is_set():
            self._on_drop(self.channel, payload, "shutting down")
            return False
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self._on_drop(self.channel, payload, f"queue full ({self._queue.maxsize} waiting)")
            return False
        return True

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            try:
                if payload is _STOP:
                    return
                try:
                    reason = self._deliver(payload, self._stop)
                except Exception as exc:  # a bug in delivery must not kill the thread
                    log.exception("alert delivery over %s failed", self.channel)
                    reason = f"internal error: {exc!r}"
                if reason is not None:
                    self._on_drop(self.channel, payload, reason)
            finally:
                self._queue.task_done()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queue to empty (for tests and shutdown)."""
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout`` seconds; then stop retrying and leave."""
        self.join(timeout)
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=max(timeout, 0.1))
        self._thread.join(timeout)
