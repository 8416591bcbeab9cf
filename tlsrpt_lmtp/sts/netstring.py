"""Netstrings (Postfix socketmap framing), sans-I/O: feed bytes, take complete strings."""

from __future__ import annotations

MAX_REQUEST = 10_000  # Postfix's query limit


class NetstringError(ValueError):
    pass


def encode(payload: str) -> bytes:
    data = payload.encode()
    return b"%d:%s," % (len(data), data)


class Decoder:
    """Bytes in with `push`, one string at a time out with `next` (so a reader can stop
    taking requests while it is busy, leaving the rest here), or all of them with `feed`."""

    def __init__(self, limit: int = MAX_REQUEST) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the unread part; the buffer is compacted when it is empty
        self._limit = limit

    def push(self, data: bytes | bytearray) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next(self) -> bytes | None:
        """The next complete string, or None until more bytes are pushed."""
        buf, pos = self._buf, self._pos
        if pos == len(buf):  # all taken (the usual end of a read): nothing to parse
            return None
        colon = buf.find(b":", pos, pos + 12)
        if colon < 0:
            if len(buf) - pos >= 12 or (len(buf) > pos and not buf[pos : pos + 1].isdigit()):
                raise NetstringError("malformed netstring length")
            self._compact()
            return None
        digits = bytes(buf[pos:colon])
        if not digits.isdigit() or (len(digits) > 1 and digits.startswith(b"0")):
            raise NetstringError("malformed netstring length")
        size = int(digits)
        if size > self._limit:
            raise NetstringError(f"netstring longer than {self._limit} bytes")
        end = colon + 1 + size
        if len(buf) < end + 1:
            self._compact()
            return None
        if buf[end] != ord(","):
            raise NetstringError("netstring not terminated by ','")
        self._pos = end + 1
        return bytes(buf[colon + 1 : end])

    def _compact(self) -> None:
        """Keep only the incomplete string."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.push(data)
        out: list[bytes] = []
        while (item := self.next()) is not None:
            out.append(item)
        return out
