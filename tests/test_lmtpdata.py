"""The LMTP server's bounds without I/O: DATA decoding (against aiosmtpd's line-by-line rule,
fed through a real asyncio StreamReader in random pieces), bytes in flight, connections."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.support.lmtp import stuffed
from tlsrpt_lmtp.ingest.lmtpdata import Connections, DotDecoder, InFlight, next_chunk


def reference(content_on_wire: bytes) -> bytes:
    """aiosmtpd's rule, line by line: drop the first dot of every line."""
    lines = content_on_wire.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def decode(wire: bytes, pieces: list[int], limit: int) -> tuple[bytes, bytes]:
    """Feed ``wire`` into a StreamReader in the given piece sizes; decode DATA with the
    server's reading rule. Returns (content, what is left in the reader)."""

    async def run() -> tuple[bytes, bytes]:
        reader = asyncio.StreamReader(limit=limit)
        decoder = DotDecoder()

        async def feed() -> None:
            at = 0
            for size in pieces:
                reader.feed_data(wire[at : at + size])
                at += size
                await asyncio.sleep(0)
            reader.feed_data(wire[at:])
            reader.feed_eof()

        feeder = asyncio.create_task(feed())
        while not decoder.feed(await next_chunk(reader)):
            pass
        await feeder
        return decoder.content(), await reader.read()

    return asyncio.run(run())


CASES = [
    b"",
    b"\r\n",
    b"a\r\n",
    b".\r\n",
    b"..\r\n",
    b".a\r\n.\r\n",
    b"\r\n.\r\n\r\n..\r\n",
    b"end of sentence.\r\n.leading\r\n",
    b"bare\n.lf\r\n",
    b"x" * 9000 + b"\r\n." + b"y" * 5000 + b"\r\n",
    b"\r\n" * 3000,
    b"a\rb\r\n.\r.\r\n",
]


@pytest.mark.parametrize("content", CASES)
def test_decoder_matches_aiosmtpd_rule_for_any_split(content: bytes) -> None:
    rng = random.Random(content)
    wire = stuffed(content)
    tail = b"MAIL FROM:<next@example.net>\r\n"  # pipelined after the end marker
    for limit in (3, 5, 64, 4096):
        for _ in range(20):
            pieces = [rng.randint(1, 7) for _ in range(rng.randint(0, 40))]
            got, left = decode(wire + tail, pieces, limit)
            assert got == reference(wire[:-3]) == content
            assert left == tail


def test_decoder_drops_content_but_keeps_counting() -> None:
    decoder = DotDecoder()
    assert not decoder.feed(b"abc\r\n")
    decoder.drop()
    assert not decoder.feed(b"x" * 100)
    assert decoder.feed(b"\r\n.\r\n")
    assert decoder.content() == b"" and decoder.raw_size == 107


def test_connections_count_in_all_and_per_peer() -> None:
    gate = Connections(limit=3, per_peer=2)
    assert gate.enter(("uid", 1)) and gate.enter(("uid", 1))
    assert not gate.enter(("uid", 1))  # that user's share is taken
    assert gate.enter(None)  # unknown peers count against the total only
    assert not gate.enter(("uid", 2))  # the total is taken
    gate.leave(("uid", 1))
    assert gate.enter(("uid", 2)) and not gate.enter(("uid", 1))
    assert gate.open == 3


def test_in_flight_bound() -> None:
    flight = InFlight(100)
    assert flight.take(60) and not flight.take(41) and flight.take(40)
    flight.give_back(100)
    assert flight.held == 0 and flight.peak == 100
