"""The socket adapters: Postfix socketmap (netstrings) and a line protocol for Exim.

Each connection's requests are answered in order; Postfix keeps a connection open and sends
several requests on it. Exim's ${readsocket} sends `domain\\n`, reads one line, and the
server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tlsrpt_lmtp import metrics
from tlsrpt_lmtp.config import parse_listen
from tlsrpt_lmtp.sts.netstring import Decoder, NetstringError, encode
from tlsrpt_lmtp.sts.reply import exim_line, postfix_reply
from tlsrpt_lmtp.sts.service import PolicyService

IDLE_TIMEOUT = 300.0  # Postfix closes idle socketmap connections after 10 s itself
MAX_LINE = 1024
MAX_UNREAD_REPLIES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReplyOptions:
    tlsrpt_maps: frozenset[str] = frozenset({"sts-tlsrpt"})
    tlsrpt_all: bool = False
    enforce_testing: bool = False

    def tlsrpt_for(self, name: str) -> bool:
        return self.tlsrpt_all or name in self.tlsrpt_maps


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class SocketmapProtocol(asyncio.Protocol):
    """One Postfix connection. Requests are answered in order; a cached answer is written
    at once from data_received, and only a lookup that needs DNS or HTTPS (and whatever
    arrives behind it) waits in the connection's queue."""

    def __init__(self, service: PolicyService, options: ReplyOptions) -> None:
        self.service = service
        self.options = options
        self._decoder = Decoder()
        self._queue: deque[bytes] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._last_seen = 0.0
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._last_seen = asyncio.get_running_loop().time()
        self._idle = asyncio.get_running_loop().call_later(IDLE_TIMEOUT, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self._worker is not None:
            self._worker.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        self._last_seen = asyncio.get_running_loop().time()
        try:
            requests = self._decoder.feed(data)
        except NetstringError:
            transport.close()
            return
        if transport.get_write_buffer_size() > MAX_UNREAD_REPLIES:
            transport.close()  # a client that sends without reading its replies
            return
        for request in requests:
            if self._worker is None:
                reply = _reply_now(self.service, self.options, request)
                if reply is not None:
                    transport.write(encode(reply))
                    continue
                self._worker = asyncio.ensure_future(self._drain())
            self._queue.append(request)

    async def _drain(self) -> None:
        while self._queue and self._transport is not None:
            request = self._queue.popleft()
            reply = _reply_now(self.service, self.options, request)
            if reply is None:
                reply = await _reply_later(self.service, self.options, request)
            if self._transport is not None:
                self._transport.write(encode(reply))
        self._worker = None

    def _check_idle(self) -> None:
        if self._transport is None:
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_seen
        if idle >= IDLE_TIMEOUT and self._worker is None:
            self._transport.close()
            return
        self._idle = loop.call_later(max(IDLE_TIMEOUT - idle, 1.0), self._check_idle)


def _request(request: bytes) -> tuple[str, str] | str:
    """(map name, key), or the PERM reply for a malformed request."""
    try:
        name, _, key = request.decode("utf-8").partition(" ")
    except UnicodeDecodeError:
        return "PERM request is not UTF-8"
    if not key:
        return "PERM expected '<name> <key>'"
    return name, key


def _reply_now(service: PolicyService, options: ReplyOptions, request: bytes) -> str | None:
    parsed = _request(request)
    if isinstance(parsed, str):
        return parsed
    answer = service.cached_answer(parsed[1])
    if answer is None:
        return None
    metrics.RECORDER.policy_answer(parsed[0], answer, options.enforce_testing, True)
    return postfix_reply(
        answer, tlsrpt=options.tlsrpt_for(parsed[0]), enforce_testing=options.enforce_testing
    )


async def _reply_later(service: PolicyService, options: ReplyOptions, request: bytes) -> str:
    parsed = _request(request)
    if isinstance(parsed, str):
        return parsed
    answer = await service.lookup(parsed[1])
    metrics.RECORDER.policy_answer(parsed[0], answer, options.enforce_testing, False)
    return postfix_reply(
        answer, tlsrpt=options.tlsrpt_for(parsed[0]), enforce_testing=options.enforce_testing
    )


def line_handler(service: PolicyService, options: ReplyOptions) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), 30)
            key = line[:MAX_LINE].decode("utf-8", "replace").strip()
            cached = service.cached_answer(key)
            answer = cached if cached is not None else await service.lookup(key)
            metrics.RECORDER.policy_answer("exim", answer, options.enforce_testing, bool(cached))
            writer.write(exim_line(answer, enforce_testing=options.enforce_testing).encode())
            writer.write(b"\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    return handle


async def listen_socketmap(
    listen_on: str, service: PolicyService, options: ReplyOptions
) -> asyncio.Server:
    loop = asyncio.get_running_loop()

    def factory() -> SocketmapProtocol:
        return SocketmapProtocol(service, options)

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
