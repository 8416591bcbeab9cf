"""The socket adapters: Postfix socketmap (netstrings) and a line protocol for Exim.

Each connection's requests are answered in order; Postfix keeps a connection open and sends
several requests on it. Exim's ${readsocket} sends `domain\\n`, reads one line, and the
server closes. Each listener holds at most `Limits.max_connections`; when full, a new
socketmap connection replaces one idle for a second or more, else it is closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tlsrpt_lmtp import metrics
from tlsrpt_lmtp.config import parse_listen
from tlsrpt_lmtp.sts.netstring import Decoder, NetstringError, encode
from tlsrpt_lmtp.sts.reply import Answer, Kind, exim_line, postfix_reply
from tlsrpt_lmtp.sts.service import PolicyService

MAX_LINE = 1024
READ_CHUNK = 16 * 1024  # what one connection reads at a time
WRITE_HIGH = 64 * 1024  # unread replies beyond this: stop answering until the client reads
EVICT_IDLE = 1.0  # when full, a connection idle this long makes room for a new one


@dataclass(frozen=True, slots=True)
class Limits:
    """Per listener. Postfix closes idle socketmap connections itself after about 10 s, so the
    idle timeout only reaps abandoned ones; Exim sends its line at once."""

    max_connections: int = 256
    idle_timeout: float = 30.0  # socketmap: no request (or unread replies) for this long
    line_timeout: float = 10.0  # Exim: the whole exchange
    max_pending: int = 16  # requests of one connection read and not yet answered


@dataclass(frozen=True, slots=True)
class ReplyOptions:
    tlsrpt_maps: frozenset[str] = frozenset({"sts-tlsrpt"})
    tlsrpt_all: bool = False
    enforce_testing: bool = False

    def tlsrpt_for(self, name: str) -> bool:
        return self.tlsrpt_all or name in self.tlsrpt_maps


class Replies:
    """Framed Postfix replies for one listener's options. A policy answer's reply is kept
    on the answer itself (`Answer.framed`): for cache hits that is the cache entry's answer,
    so the reply is built once per policy and goes when the entry goes (the cache's bounds
    count it). Building one (mx patterns, TLSRPT attributes, netstring) was a tenth of a
    cache hit's CPU. Replies over KEEP_SIZE (long policies with TLSRPT attributes) are
    rebuilt each time."""

    KEEP_SIZE = 512  # a typical reply is 80-450 bytes; entry_cost counts two of this size

    def __init__(self, options: ReplyOptions) -> None:
        self.options = options

    def framed(self, map_name: str, answer: Answer) -> bytes:
        options = self.options
        key = (options.tlsrpt_for(map_name), options.enforce_testing)
        if answer.kind is Kind.POLICY and (kept := answer.framed.get(key)) is not None:
            return kept
        data = encode(postfix_reply(answer, tlsrpt=key[0], enforce_testing=key[1]))
        if answer.kind is Kind.POLICY and len(data) <= self.KEEP_SIZE:
            answer.framed[key] = data
        return data


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Connections:
    """The open connections of one listener, least recently active first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: OrderedDict[SocketmapProtocol, None] = OrderedDict()
        self.refused = 0

    def admit(self, conn: SocketmapProtocol, now: float) -> bool:
        if len(self.open) >= self.limit:
            oldest = next(iter(self.open))
            if not oldest.idle_since(now - EVICT_IDLE):
                self.refused += 1
                return False
            oldest.close()
        self.open[conn] = None
        return True


class SocketmapProtocol(asyncio.BufferedProtocol):
    """One Postfix connection. Requests are answered in order; a cached answer is written
    at once, and only a lookup that needs DNS or HTTPS (and whatever arrives behind it)
    waits in the connection's queue. Reading stops while `max_pending` requests wait or
    while the client leaves WRITE_HIGH bytes of replies unread, so memory per connection
    is bounded whatever the client sends."""

    def __init__(
        self, service: PolicyService, replies: Replies, limits: Limits, table: Connections
    ) -> None:
        self.service = service
        self.replies = replies
        self.limits = limits
        self.table = table
        self._buf = bytearray(READ_CHUNK)
        self._decoder = Decoder()
        # parsed requests waiting for the worker (a str: the reply already known, e.g. PERM)
        self._queue: deque[tuple[str, str] | str] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._reading = True
        self._writable = asyncio.Event()
        self._writable.set()
        self._last_seen = 0.0
        self._idle: asyncio.TimerHandle | None = None
        # Python 3.11's get_running_loop() makes a getpid() system call: once per connection
        self._clock: Callable[[], float] = time.monotonic

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        self._last_seen = loop.time()
        if not self.table.admit(self, self._last_seen):
            transport.abort()
            return
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        self._idle = loop.call_later(self.limits.idle_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self._worker is not None:
            self._worker.cancel()
        self._transport = None
        self._queue.clear()
        self.table.open.pop(self, None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def idle_since(self, when: float) -> bool:
        return self._worker is None and self._last_seen <= when and self._writable.is_set()

    @property
    def backlog(self) -> tuple[int, int, int]:
        """(requests queued, request bytes buffered, reply bytes unread by the client)."""
        unread = self._transport.get_write_buffer_size() if self._transport else 0
        return len(self._queue), self._decoder.buffered, unread

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buf)

    def buffer_updated(self, nbytes: int) -> None:
        self._last_seen = self._clock()
        self.table.open.move_to_end(self)
        self._decoder.push(self._buf[:nbytes])
        self._answer()

    def pause_writing(self) -> None:
        self._writable.clear()
        self._set_reading(False)

    def resume_writing(self) -> None:
        self._writable.set()
        self._last_seen = self._clock()
        self._answer()

    def _answer(self) -> None:
        """Take requests from the decoder while the connection may."""
        transport = self._transport
        if transport is None:
            return
        try:
            while self._writable.is_set() and not transport.is_closing():
                if self._worker is not None and len(self._queue) >= self.limits.max_pending:
                    break
                request = self._decoder.next()
                if request is None:
                    break
                parsed = _request(request)  # once per request, hit or miss
                if self._worker is None:
                    reply = _reply_now(self.service, self.replies, parsed)
                    if reply is not None:
                        transport.write(reply)
                        continue
                    self._worker = asyncio.ensure_future(self._drain())
                self._queue.append(parsed)
        except NetstringError:
            transport.close()
            return
        self._set_reading(
            self._writable.is_set()
            and (self._worker is None or len(self._queue) < self.limits.max_pending)
        )

    def _set_reading(self, on: bool) -> None:
        if self._transport is None or on == self._reading:
            return
        self._reading = on
        if on:
            self._transport.resume_reading()
        else:
            self._transport.pause_reading()

    async def _drain(self) -> None:
        while self._queue and self._transport is not None:
            parsed = self._queue.popleft()
            # The service answers from its cache without waiting when it can.
            reply = await _reply_later(self.service, self.replies, parsed)
            await self._writable.wait()
            if self._transport is not None and not self._transport.is_closing():
                self._transport.write(reply)
        self._worker = None
        self._answer()  # what the decoder holds, and reading again

    def _check_idle(self) -> None:
        if self._transport is None:
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_seen
        timeout = self.limits.idle_timeout
        if idle >= timeout and (self._worker is None or not self._writable.is_set()):
            self._transport.close()
            return
        self._idle = loop.call_later(max(timeout - idle, 1.0), self._check_idle)


def _request(request: bytes) -> tuple[str, str] | str:
    """(map name, key), or the PERM reply for a malformed request."""
    try:
        name, _, key = request.decode("utf-8").partition(" ")
    except UnicodeDecodeError:
        return "PERM request is not UTF-8"
    if not key:
        return "PERM expected '<name> <key>'"
    return name, key


def _reply_now(
    service: PolicyService, replies: Replies, parsed: tuple[str, str] | str
) -> bytes | None:
    """The framed reply without waiting (a malformed request, a cache hit), or None."""
    if isinstance(parsed, str):
        return encode(parsed)
    answer = service.cached_answer(parsed[1])
    if answer is None:
        return None
    metrics.RECORDER.policy_answer(parsed[0], answer, replies.options.enforce_testing, True)
    return replies.framed(parsed[0], answer)


async def _reply_later(
    service: PolicyService, replies: Replies, parsed: tuple[str, str] | str
) -> bytes:
    if isinstance(parsed, str):
        return encode(parsed)
    answer = await service.lookup(parsed[1])
    metrics.RECORDER.policy_answer(parsed[0], answer, replies.options.enforce_testing, False)
    return replies.framed(parsed[0], answer)


def line_handler(
    service: PolicyService, options: ReplyOptions, limits: Limits = Limits()
) -> Handler:
    active = 0

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readuntil(b"\n")
        key = line[:MAX_LINE].decode("utf-8", "replace").strip()
        cached = service.cached_answer(key)
        answer = cached if cached is not None else await service.lookup(key)
        metrics.RECORDER.policy_answer("exim", answer, options.enforce_testing, bool(cached))
        writer.write(exim_line(answer, enforce_testing=options.enforce_testing).encode())
        writer.write(b"\n")
        await writer.drain()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= limits.max_connections:
            writer.transport.abort()  # full: the new one goes, those being answered stay
            return
        active += 1
        try:
            await asyncio.wait_for(exchange(reader, writer), limits.line_timeout)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except ConnectionError:
            pass
        finally:
            active -= 1
            writer.close()

    return handle


async def listen_socketmap(
    listen_on: str,
    service: PolicyService,
    options: ReplyOptions,
    limits: Limits = Limits(),
    table: Connections | None = None,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    connections = table or Connections(limits.max_connections)
    replies = Replies(options)

    def factory() -> SocketmapProtocol:
        return SocketmapProtocol(service, replies, limits, connections)

    host, port = parse_listen(listen_on)
    if host == "unix":
        path = _fresh_socket_path(str(port))
        server = await loop.create_unix_server(factory, path)
        os.chmod(path, 0o666)  # access is guarded by the directory
        return server
    return await loop.create_server(factory, host, int(port))


async def listen(listen_on: str, handler: Handler) -> asyncio.Server:
    """A stream server for a coroutine handler (the Exim line protocol)."""
    host, port = parse_listen(listen_on)
    if host == "unix":
        path = _fresh_socket_path(str(port))
        server = await asyncio.start_unix_server(handler, path, limit=MAX_LINE * 16)
        os.chmod(path, 0o666)  # access is guarded by the directory
        return server
    return await asyncio.start_server(handler, host, int(port), limit=MAX_LINE * 16)


def _fresh_socket_path(path: str) -> str:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return path
