"""Writing events to the sink, at least once: a sink that fails is waited for, not skipped.

``Delivery.write`` hands each event to the emitter (sinks.py). When the sink fails with an
OSError (disk full, broken pipe, syslog collector down) a ``retry`` delivery (stage 2 of the
LMTP server) says so on stderr and tries the same event again with exponential backoff, for
as long as it takes; a delivery without retry (``parse``, the milter) raises ``SinkError`` at
once, and the message stays ``pending`` so that its events are written by the next run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from tlsrpt_lmtp.core.events import Event

Emit = Callable[[Event], None]


class SinkError(OSError):
    """Events could not be written; the message stays pending and is processed again."""


class Delivery:
    def __init__(
        self,
        emit: Emit,
        *,
        retry: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        first_delay: float = 1.0,
        max_delay: float = 60.0,
    ) -> None:
        self.emit = emit
        self.retry = retry
        self._sleep = sleep
        self._first_delay = first_delay
        self._max_delay = max_delay

    def write(self, events: Iterable[Event]) -> None:
        for event in events:
            self._attempt(self.emit, event)

    def flush(self) -> None:
        flush = getattr(self.emit, "flush", None)
        if flush is not None:
            self._attempt(lambda _: flush(), None)

    def _attempt(self, action: Callable[[Any], None], arg: Any) -> None:
        delay = self._first_delay
        while True:
            try:
                action(arg)
                return
            except OSError as exc:
                if not self.retry:
                    raise SinkError(exc.errno, f"cannot write events: {_describe(exc)}") from exc
                self.warn(f"cannot write events ({_describe(exc)}); retrying in {delay:g} s")
                self._sleep(delay)
                delay = min(delay * 2, self._max_delay)

    @staticmethod
    def warn(message: str) -> None:
        print(f"tlsrpt-lmtp: {message}", file=sys.stderr, flush=True)


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
