"""A loopback "test internet" for the MTA-STS / DANE / TLSRPT tests.

Real servers on this machine only (addresses in 127.0.0.0/8, one /24 "slot" per running harness):

* ``dns.DnsServer``          authoritative DNS (UDP+TCP, DNSSEC signed at test time, faults)
* ``dns.ValidatingResolver`` a real ``unbound`` validating resolver in front of it (AD bit)
* ``https.PolicyServer``     HTTPS (SNI) server for ``mta-sts.<domain>/.well-known/mta-sts.txt``
* ``smtp_sink.SmtpSink``     STARTTLS SMTP sinks (good/rogue/wrong-name/expired cert, or no TLS)
* ``pki.TestPKI``            the test CA, a rogue CA and server certificates
* ``fixtures``               ``NetSim`` bundling all of them, and the pytest fixtures ``netsim`` /
                             ``netsim_session``

See ``fixtures.py`` for the API; ``test_netsim.py`` shows each part used with plain clients.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["LoopThread"]


class LoopThread:
    """An asyncio event loop in a daemon thread; every server of the harness runs on it."""

    def __init__(self, name: str = "netsim-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        # Cancel whatever is still pending (client handlers, sleeps) and close the loop.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def start(self, timeout: float = 5.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("netsim event loop did not start")

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the loop from another thread and return its result (bounded wait)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"netsim: {coro!r} did not finish within {timeout} s") from None

    def call(self, func: Any, *args: Any) -> None:
        """Schedule a plain callable on the loop (fire and forget)."""
        self.loop.call_soon_threadsafe(func, *args)

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
