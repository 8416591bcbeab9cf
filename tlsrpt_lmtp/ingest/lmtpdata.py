"""The LMTP server's bounds, without I/O: DATA decoding, bytes in flight, connections.

aiosmtpd keeps every DATA line as its own object (about 43 bytes of memory per byte for a
mail of empty lines) and refuses lines over its stream limit. ``DotDecoder`` takes the DATA
stream in chunks of any size and split instead: it removes the transparency dots (RFC 5321
§4.5.2) and finds the end marker in one pass, holding only the message itself.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Hashable
from dataclasses import dataclass

END = b".\r\n"  # what the reader waits for; it ends DATA only at the start of a line
_CRLF_DOT = b"\r\n."


class DotDecoder:
    """Feed the raw DATA stream; ``feed`` returns True once the ``CRLF . CRLF`` end is seen.

    Every chunk must either end with ``END`` or contain no ``END`` at all (what
    ``StreamReader.readuntil(END)`` and its ``LimitOverrunError`` give), so that the end
    marker is never split between chunks. Content is kept only while ``keep`` is true: past a
    limit the rest of the stream is read and dropped, so the reply can come after it."""

    def __init__(self) -> None:
        self._tail = b"\r\n"  # the stream begins at the start of a line
        self._out = io.BytesIO()
        self.raw_size = 0  # bytes received, dots included, the end marker not
        self.keep = True

    def feed(self, chunk: bytes) -> bool:
        joined = self._tail + chunk
        done = joined.endswith(b"\r\n" + END)
        if done:
            chunk = chunk[: -len(END)]
            joined = joined[: -len(END)]
        self.raw_size += len(chunk)
        if self.keep and chunk:
            # A dot that starts a line is removed; the tail carries a CRLF split across chunks.
            self._out.write(joined.replace(_CRLF_DOT, b"\r\n")[len(self._tail) :])
        self._tail = joined[-2:]
        return done

    def drop(self) -> None:
        """Stop keeping content (and free what was kept); sizes are still counted."""
        self.keep = False
        self._out = io.BytesIO()

    def content(self) -> bytes:
        """The message, dots removed, its last CRLF kept (what aiosmtpd gives as
        ``original_content``). BytesIO hands over its buffer without a copy."""
        return self._out.getvalue()


async def next_chunk(reader: asyncio.StreamReader) -> bytes:
    """The next piece of DATA for ``DotDecoder.feed``: up to and including the next ``END``,
    or what is buffered without one. It never reads past the end marker, since a client may
    pipeline its next commands behind it. Lines may be longer than the reader's limit."""
    try:
        return await reader.readuntil(END)
    except asyncio.LimitOverrunError as exc:
        return await reader.read(exc.consumed)


class InFlight:
    """Bytes of mail held by the server across all connections: received so far, or waiting
    to be archived. Past ``limit`` a delivery is answered 452 and the MTA retries later."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        self.peak = max(self.peak, self.held)
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class Connections:
    """Open connections, in all and per peer (see peers.py); one beyond a limit is refused, so
    that one local user cannot take every slot from the MTA."""

    def __init__(self, limit: int, per_peer: int) -> None:
        self.limit = limit
        self.per_peer = per_peer
        self.open = 0
        self._by_peer: dict[Hashable, int] = {}

    def enter(self, peer: Hashable | None) -> bool:
        if self.open >= self.limit:
            return False
        if peer is not None:
            if self._by_peer.get(peer, 0) >= self.per_peer:
                return False
            self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        self.open += 1
        return True

    def leave(self, peer: Hashable | None) -> None:
        self.open -= 1
        if peer is not None:
            left = self._by_peer.pop(peer) - 1
            if left:
                self._by_peer[peer] = left


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one LMTP server (from the [lmtp] settings)."""

    max_message_size: int
    max_in_flight: int
    max_connections: int
    max_connections_per_peer: int
    idle_timeout: float


def lmtp_replies(reply: str, recipients: int) -> str:
    """RFC 2033 §4.2: after DATA, one reply per accepted recipient."""
    return "\r\n".join(reply for _ in range(max(recipients, 1)))
