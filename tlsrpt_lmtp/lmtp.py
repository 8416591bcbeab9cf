"""The LMTP adapter: aiosmtpd's LMTP protocol in front of the ingest pipeline.

The pipeline runs in one worker thread (fsync and SQLite block; one thread keeps the store
single-writer). LMTP wants one reply per recipient after DATA (RFC 2033 §4.2); the message
is archived once, so every recipient gets the same answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.lmtp import LMTP

from tlsrpt_lmtp.config import Config, parse_listen
from tlsrpt_lmtp.pipeline import ArchiveError, Pipeline

# aiosmtpd refuses lines over 1001 bytes with "500 Line too long"; a report with a long
# JSON line must not bounce, so lines are bounded by the message size limit instead.
_LINE_LIMIT = 1024 * 1024


class _LMTP(LMTP):
    line_length_limit = _LINE_LIMIT


class ReportHandler:
    """aiosmtpd handler: recipient check at RCPT, archive-then-process at DATA."""

    def __init__(self, pipeline: Pipeline, recipients: tuple[str, ...]) -> None:
        self.pipeline = pipeline
        self.recipients = frozenset(r.lower() for r in recipients)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.recipients and address.lower() not in self.recipients:
            return f"550 5.1.1 <{address}>: recipient not accepted here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content
        self._in_flight += 1
        self._idle.clear()
        try:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._worker, self._ingest, raw)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        if isinstance(result, ArchiveError):
            reply = f"451 4.3.0 cannot store message, try again later ({result.strerror})"
        elif isinstance(result, Exception):
            reply = "451 4.3.0 internal error, try again later"
        else:
            reply = f"250 2.0.0 stored as {result.archive_id[:16]}"
        return "\r\n".join(f"{reply}" for _ in envelope.rcpt_tos)

    def _ingest(self, raw: bytes) -> Any:
        try:
            return self.pipeline.ingest(raw, source="lmtp")
        except Exception as exc:  # reported as 451: archived bytes are retried idempotently
            return exc

    async def drain(self) -> None:
        await self._idle.wait()
        self._worker.shutdown(wait=True)


async def serve(config: Config, pipeline: Pipeline, *, ready: Any = None) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, finish deliveries in flight, return."""
    loop = asyncio.get_running_loop()
    handler = ReportHandler(pipeline, config.recipients)

    def factory() -> _LMTP:
        return _LMTP(
            handler,
            data_size_limit=config.max_message_size,
            enable_SMTPUTF8=True,
            hostname=None,
            ident="tlsrpt-lmtp",
            loop=loop,
        )

    host, port = parse_listen(config.listen)
    path = str(port) if host == "unix" else None
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        server = await loop.create_unix_server(factory, path)
        # Postfix's lmtp client runs as another user; guard access with the directory.
        os.chmod(path, 0o666)
    else:
        server = await loop.create_server(factory, host, int(port))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(server)
    try:
        await stop.wait()
    finally:
        server.close()
        await handler.drain()
        # Let the protocol tasks push the replies of the deliveries just finished.
        await asyncio.sleep(0.05)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
