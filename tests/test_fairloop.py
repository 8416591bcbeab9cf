"""net.fairloop: ready sockets come out least recently served first, whatever the kernel's
order, and the policy daemon's loop is built on it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from tlsrpt_lmtp.net.fairloop import FairSelector, new_event_loop, run


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair() for _ in range(4)]
    yield made
    for a, b in made:
        a.close()
        b.close()


def _ready(selector: FairSelector) -> list[object]:
    return [key.data for key, _ in selector.select(0)]


def _drain(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    for reader, _ in pairs:
        reader.setblocking(False)
        try:
            while reader.recv(4096):
                pass
        except BlockingIOError:
            pass


def test_least_recently_served_first_whatever_the_arrival_order(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    selector = FairSelector()
    for name, (reader, _) in zip("abcd", pairs, strict=True):
        selector.register(reader, 1, name)  # EVENT_READ
    a, b, c, d = (writer for _, writer in pairs)
    a.send(b"x")
    assert _ready(selector) == ["a"]
    _drain(pairs)
    c.send(b"x")
    b.send(b"x")
    assert sorted(_ready(selector)) == ["b", "c"]  # neither served before: kernel order
    _drain(pairs)
    # All four ready, written most recently served first: out comes never-served d, then a
    # (served longest ago), then b and c in the order the last poll gave them.
    for writer in (c, b, a, d):
        writer.send(b"x")
    out = _ready(selector)
    assert out[:2] == ["d", "a"]
    assert sorted(out[2:]) == ["b", "c"]
    _drain(pairs)
    # The last poll's order is the next tie-break: served in that order, they come back so.
    for writer in (d, c, b, a):
        writer.send(b"x")
    assert _ready(selector) == out
    selector.close()


def test_an_unregistered_descriptor_is_forgotten(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    selector = FairSelector()
    reader, writer = pairs[0]
    selector.register(reader, 1, "first")
    writer.send(b"x")
    assert _ready(selector) == ["first"]
    selector.unregister(reader)
    assert reader.fileno() not in selector._served
    selector.close()


def test_the_loop_runs_on_the_fair_selector() -> None:
    async def selector_of_running_loop() -> object:
        return asyncio.get_running_loop()._selector  # type: ignore[attr-defined]

    assert isinstance(run(selector_of_running_loop()), FairSelector)
    loop = new_event_loop()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()


def test_a_server_on_the_fair_loop_answers_every_connection() -> None:
    """Many connections each asking in turn: every one gets every answer."""

    async def main() -> int:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(100):
                writer.write(data)
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(16)]
        answered = 0
        for round_ in range(50):
            for _, w in conns:
                w.write(b"%d\n" % round_)
            for r, _ in conns:
                assert await r.readline() == b"%d\n" % round_
                answered += 1
        for _, w in conns:
            w.close()
        server.close()
        await server.wait_closed()
        return answered

    assert run(main()) == 16 * 50
