"""The socket adapters: Postfix socketmap (netstrings) and a line protocol for Exim.

Each connection's requests are answered in order; Postfix keeps a connection open and sends
several requests on it. Exim's ${readsocket} sends `domain\\n`, reads one line, and the
server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tlsrpt_lmtp.config import parse_listen
from tlsrpt_lmtp.sts.netstring import Decoder, NetstringError, encode
from tlsrpt_lmtp.sts.reply import exim_line, postfix_reply
from tlsrpt_lmtp.sts.service import PolicyService

IDLE_TIMEOUT = 300.0  # Postfix closes idle socketmap connections after 10 s itself
MAX_LINE = 1024


@dataclass(frozen=True, slots=True)
class ReplyOptions:
    tlsrpt_maps: frozenset[str] = frozenset({"sts-tlsrpt"})
    tlsrpt_all: bool = False
    enforce_testing: bool = False

    def tlsrpt_for(self, name: str) -> bool:
        return self.tlsrpt_all or name in self.tlsrpt_maps


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def socketmap_handler(service: PolicyService, options: ReplyOptions) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = Decoder()
        try:
            while True:
                data = await asyncio.wait_for(reader.read(4096), IDLE_TIMEOUT)
                if not data:
                    return
                for request in decoder.feed(data):
                    writer.write(encode(await _answer(service, options, request)))
                await writer.drain()
        except (NetstringError, TimeoutError, ConnectionError):
            return
        finally:
            writer.close()

    return handle


async def _answer(service: PolicyService, options: ReplyOptions, request: bytes) -> str:
    try:
        name, _, key = request.decode("utf-8").partition(" ")
    except UnicodeDecodeError:
        return "PERM request is not UTF-8"
    if not key:
        return "PERM expected '<name> <key>'"
    answer = await service.lookup(key)
    return postfix_reply(
        answer, tlsrpt=options.tlsrpt_for(name), enforce_testing=options.enforce_testing
    )


def line_handler(service: PolicyService, options: ReplyOptions) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), 30)
            key = line[:MAX_LINE].decode("utf-8", "replace").strip()
            answer = await service.lookup(key)
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


async def listen(listen_on: str, handler: Handler) -> asyncio.Server:
    host, port = parse_listen(listen_on)
    if host == "unix":
        path = str(port)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        server = await asyncio.start_unix_server(handler, path, limit=MAX_LINE * 16)
        os.chmod(path, 0o666)  # access is guarded by the directory
        return server
    return await asyncio.start_server(handler, host, int(port), limit=MAX_LINE * 16)
