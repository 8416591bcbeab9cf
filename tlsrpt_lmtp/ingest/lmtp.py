"""The LMTP adapter: aiosmtpd's LMTP protocol in front of the ingest pipeline.

A delivery is answered once its message is durably archived (stage 1, the ``Archiver``: all
this process holds of the intake); parsing and storing follow in the stage 2 process. LMTP
wants one reply per recipient after DATA (RFC 2033 §4.2); the message is archived once, so
every recipient gets the same answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, syntax

from tlsrpt_lmtp import metrics
from tlsrpt_lmtp.config import Config, parse_listen
from tlsrpt_lmtp.ingest.archiver import Archiver
from tlsrpt_lmtp.ingest.lmtpdata import (
    Connections,
    DotDecoder,
    InFlight,
    Limits,
    lmtp_replies,
    next_chunk,
)
from tlsrpt_lmtp.ingest.stage2 import Stage2Process
from tlsrpt_lmtp.net.peers import PeerKey, peer_key
from tlsrpt_lmtp.net.unixsock import prepare_unix_listen
from tlsrpt_lmtp.store.base import ArchiveError

_MAX_BATCH = 256
_TOO_MANY = b"421 4.3.2 tlsrpt-lmtp too many connections, try again later\r\n"


class _Refused(asyncio.Protocol):
    """A connection beyond the limit: told so, then closed (the MTA retries later)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_TOO_MANY)
        transport.close()


class _LMTP(LMTP):
    """aiosmtpd's LMTP with DATA read in chunks (memory ≈ message size, lines as long as the
    message), a bound on mail held across connections, a connection limit and an idle
    timeout counted from the client's last command or piece of mail data."""

    # Command lines only: DATA does not go through line reads (see smtp_DATA).
    line_length_limit = 4096

    def __init__(
        self, handler: Any, limits: Limits, gate: Connections, flight: InFlight, **kw: Any
    ) -> None:
        super().__init__(
            handler, data_size_limit=limits.max_message_size, timeout=limits.idle_timeout, **kw
        )
        self._gate = gate
        self._flight = flight
        self._admitted = False
        self._peer: PeerKey | None = None
        self._busy = False  # the server, not the client, is working (archiving)
        self._last_activity = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer = peer_key(transport.get_extra_info("socket"))
        self._admitted = self._gate.enter(self._peer)
        if not self._admitted:
            _Refused().connection_made(transport)
            return
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._gate.leave(self._peer)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return super().eof_received() if self._admitted else False

    def _timeout_cb(self) -> None:
        idle = self.loop.time() - self._last_activity
        if self._busy or idle < self._timeout_duration:
            self._reset_timeout(self._timeout_duration - idle if not self._busy else None)
            return
        if self.transport is not None:
            self._writer.write(b"421 4.4.2 tlsrpt-lmtp idle timeout, closing connection\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        decoder = DotDecoder()
        held = 0
        refusal = ""
        busy = "452 4.3.1 Insufficient system storage, try again later"
        done = False
        try:
            while not done:
                done = decoder.feed(await next_chunk(self._reader))
                self._last_activity = self.loop.time()
                if not decoder.keep:
                    continue  # read to the end, then refuse
                size = decoder.raw_size
                if self.data_size_limit and size > self.data_size_limit:
                    refusal = "552 5.3.4 Error: Too much mail data"
                elif self._flight.take(size - held):
                    held = size
                    continue
                else:
                    refusal = busy
                decoder.drop()
                self._flight.give_back(held)
                held = 0
            if refusal:
                await self.push(lmtp_replies(refusal, len(self.envelope.rcpt_tos)))
                self._set_post_data_state()  # type: ignore[no-untyped-call]
                return
            content = decoder.content()
            del decoder
            self.envelope.content = self.envelope.original_content = content
            self._busy = True
            try:
                status = await self._call_handler_hook("DATA")
            finally:
                self._busy = False
                self._last_activity = self.loop.time()
        finally:
            self._flight.give_back(held)
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)


class IngestWorker:
    """The archiver thread: every message queued while it was busy is stored in one fsynced
    commit (group commit), the waiting deliveries are answered, and `archived` is called
    (it nudges stage 2, which runs in its own process: see stage2.py)."""

    def __init__(
        self, archiver: Archiver, loop: asyncio.AbstractEventLoop, archived: Callable[[], None]
    ) -> None:
        self.archiver = archiver
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
            keys = self.archiver.put([(raw, "lmtp") for raw, _ in batch])
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
    config: Config, archiver: Archiver, stage2: Stage2Process, *, ready: Any = None
) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, finish deliveries in flight, let
    stage 2 finish what is pending, return."""
    loop = asyncio.get_running_loop()
    worker = IngestWorker(archiver, loop, stage2.nudge)
    handler = ReportHandler(worker, config.recipients)

    limits = Limits(
        max_message_size=config.max_message_size,
        max_in_flight=config.max_in_flight,
        max_connections=config.max_connections,
        max_connections_per_peer=config.max_connections_per_peer,
        idle_timeout=config.idle_timeout,
    )
    gate = Connections(limits.max_connections, limits.max_connections_per_peer)
    flight = InFlight(limits.max_in_flight)

    fqdn = socket.getfqdn()  # once, not per connection (it may ask DNS)

    def factory() -> asyncio.Protocol:
        if gate.open >= gate.limit:  # refused without building a session
            return _Refused()
        return _LMTP(
            handler,
            limits,
            gate,
            flight,
            enable_SMTPUTF8=True,
            hostname=fqdn,
            ident="tlsrpt-lmtp",
            loop=loop,
        )

    host, port = parse_listen(config.listen)
    path = str(port) if host == "unix" else None
    if path is not None:
        prepare_unix_listen(path)
        server = await loop.create_unix_server(factory, path)
        # Postfix's lmtp client runs as another user; access is guarded by the directory,
        # which prepare_unix_listen checked is writable by its owner only.
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
