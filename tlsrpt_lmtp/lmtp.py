"""The LMTP adapter: aiosmtpd's LMTP protocol in front of the ingest pipeline.

A delivery is answered once its message is durably archived (stage 1 of the pipeline);
parsing and storing follow in the stage 2 process. LMTP wants one reply per recipient after
DATA (RFC 2033 §4.2); the message is archived once, so every recipient gets the same answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import threading
from collections.abc import Callable
from typing import Any

from aiosmtpd.lmtp import LMTP

from tlsrpt_lmtp import metrics
from tlsrpt_lmtp.config import Config, parse_listen
from tlsrpt_lmtp.pipeline import ArchiveError, Pipeline
from tlsrpt_lmtp.stage2 import Stage2Process

_MAX_BATCH = 256

# aiosmtpd refuses lines over 1001 bytes with "500 Line too long"; a report with a long
# JSON line must not bounce, so lines are bounded by the message size limit instead.
_LINE_LIMIT = 1024 * 1024


class _LMTP(LMTP):
    line_length_limit = _LINE_LIMIT


class IngestWorker:
    """The archiver thread: every message queued while it was busy is stored in one fsynced
    commit (group commit), the waiting deliveries are answered, and `archived` is called
    (it nudges stage 2, which runs in its own process: see stage2.py)."""

    def __init__(
        self, pipeline: Pipeline, loop: asyncio.AbstractEventLoop, archived: Callable[[], None]
    ) -> None:
        self.pipeline = pipeline
        self._loop = loop
        self._archived = archived
        self._incoming: queue.SimpleQueue[tuple[bytes, asyncio.Future[str]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="archive", daemon=True)
        self._thread.start()

    def submit(self, raw: bytes) -> asyncio.Future[str]:
        """A future for the archive id, or ArchiveError if the message is not stored."""
        future: asyncio.Future[str] = self._loop.create_future()
        self._incoming.put((raw, future))
        return future

    def stop(self) -> None:
        """Archive everything queued so far, then end the thread."""
        self._incoming.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch, stopping = _take(self._incoming)
            if batch:
                self._archive(batch)
            if stopping:
                return

    def _archive(self, batch: list[tuple[bytes, asyncio.Future[str]]]) -> None:
        try:
            keys = self.pipeline.archive_many([(raw, "lmtp") for raw, _ in batch])
        except Exception as exc:  # ArchiveError, or a bug: either way the MTA retries
            for _, future in batch:
                self._resolve(future, exc)
            return
        for (_, future), key in zip(batch, keys, strict=True):
            self._resolve(future, key)
        self._archived()

    def _resolve(self, future: asyncio.Future[str], outcome: str | BaseException) -> None:
        def settle() -> None:
            if future.done():  # the client went away meanwhile
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        self._loop.call_soon_threadsafe(settle)


def _take(
    q: queue.SimpleQueue[tuple[bytes, asyncio.Future[str]] | None],
) -> tuple[list[tuple[bytes, asyncio.Future[str]]], bool]:
    """Block for one item, then take what else is queued (a batch); True when told to stop."""
    first = q.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < _MAX_BATCH:
        try:
            item = q.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


class ReportHandler:
    """aiosmtpd handler: recipient check at RCPT, archive at DATA, then reply."""

    def __init__(self, worker: IngestWorker, recipients: tuple[str, ...]) -> None:
        self.worker = worker
        self.recipients = frozenset(r.lower() for r in recipients)
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
        self._in_flight += 1
        self._idle.clear()
        try:
            key = await self.worker.submit(envelope.original_content)
            reply = f"250 2.0.0 stored as {key[:16]}"
        except ArchiveError as exc:
            reply = f"451 4.3.0 cannot store message, try again later ({exc.strerror})"
        except Exception:
            reply = "451 4.3.0 internal error, try again later"
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        metrics.RECORDER.intake("lmtp", reply.startswith("250"))
        # RFC 2033 §4.2: one reply per accepted recipient; the message was stored once.
        return "\r\n".join(reply for _ in envelope.rcpt_tos)

    async def drain(self) -> None:
        await self._idle.wait()


async def serve(
    config: Config, pipeline: Pipeline, stage2: Stage2Process, *, ready: Any = None
) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, finish deliveries in flight, let
    stage 2 finish what is pending, return."""
    loop = asyncio.get_running_loop()
    worker = IngestWorker(pipeline, loop, stage2.nudge)
    handler = ReportHandler(worker, config.recipients)

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
        await loop.run_in_executor(None, worker.stop)
        await loop.run_in_executor(None, stage2.stop)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
