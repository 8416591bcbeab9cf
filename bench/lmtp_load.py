"""LMTP load client on raw asyncio sockets (no aiosmtpd), bounded in count and time.

Each of N connections sends LHLO once, then MAIL / RCPT / DATA per message, waiting for
each reply (no pipelining), until the shared message list is used up or the time cap passes.
Only for servers on this machine's loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

MAIL_FROM = b"MAIL FROM:<noreply-smtp-tls-reporting@bench.example>\r\n"
RCPT_TO = b"RCPT TO:<tlsrpt@bench.example>\r\n"


@dataclass
class LoadResult:
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0
    capped: bool = False
    first_failure: str = ""

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0


def to_data(raw: bytes) -> bytes:
    """The DATA payload: CRLF line ends, dot-stuffed, with the terminating '.' line."""
    lines = raw.replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n")
    stuffed = (b"." + line if line.startswith(b".") else line for line in lines)
    return b"\r\n".join(stuffed) + b"\r\n.\r\n"


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return int(line[:3]), line.rstrip()


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, expect: int
) -> None:
    writer.write(data)
    await writer.drain()
    code, line = await _reply(reader)
    if code != expect:
        raise ConnectionError(f"{data[:20]!r} -> {line!r}")


async def _session(
    host: str, port: int, work: Iterator[bytes], deadline: float, result: LoadResult
) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        await _reply(reader)
        await _command(reader, writer, b"LHLO bench.localhost\r\n", 250)
        for payload in work:
            if time.monotonic() > deadline:
                result.capped = True
                return
            await _command(reader, writer, MAIL_FROM, 250)
            await _command(reader, writer, RCPT_TO, 250)
            await _command(reader, writer, b"DATA\r\n", 354)
            writer.write(payload)
            await writer.drain()
            code, line = await _reply(reader)  # LMTP: one reply per accepted recipient
            if 200 <= code < 300:
                result.delivered += 1
            else:
                result.failed += 1
                result.first_failure = result.first_failure or line.decode(errors="replace")
        writer.write(b"QUIT\r\n")
        await _reply(reader)
    finally:
        writer.close()


async def _load(
    host: str, port: int, payloads: list[bytes], connections: int, time_cap: float
) -> LoadResult:
    result = LoadResult()
    work = iter(payloads)  # shared by all sessions: each message is sent once
    started = time.monotonic()
    sessions = (_session(host, port, work, started + time_cap, result) for _ in range(connections))
    outcomes = await asyncio.gather(*sessions, return_exceptions=True)
    result.seconds = time.monotonic() - started
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            result.failed += 1
            result.first_failure = result.first_failure or f"{type(outcome).__name__}: {outcome}"
    return result


def run_load(
    host: str, port: int, payloads: list[bytes], connections: int, time_cap: float
) -> LoadResult:
    """Send every payload once over ``connections`` concurrent LMTP sessions."""
    if not host.startswith("127."):
        raise ValueError("the load client only targets loopback")
    return asyncio.run(_load(host, port, payloads, connections, time_cap))
