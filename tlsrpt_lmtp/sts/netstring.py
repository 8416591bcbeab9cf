"""Netstrings (Postfix socketmap framing), sans-I/O: feed bytes, take complete strings."""

from __future__ import annotations

MAX_REQUEST = 10_000  # Postfix's query limit


class NetstringError(ValueError):
    pass


def encode(payload: str) -> bytes:
    data = payload.encode()
    return b"%d:%s," % (len(data), data)


class Decoder:
    def __init__(self, limit: int = MAX_REQUEST) -> None:
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            colon = self._buf.find(b":", 0, 12)
            if colon < 0:
                if len(self._buf) >= 12 or (self._buf and not self._buf[:1].isdigit()):
                    raise NetstringError("malformed netstring length")
                return out
            digits = bytes(self._buf[:colon])
            if not digits.isdigit() or (len(digits) > 1 and digits.startswith(b"0")):
                raise NetstringError("malformed netstring length")
            size = int(digits)
            if size > self._limit:
                raise NetstringError(f"netstring longer than {self._limit} bytes")
            end = colon + 1 + size
            if len(self._buf) < end + 1:
                return out
            if self._buf[end] != ord(","):
                raise NetstringError("netstring not terminated by ','")
            out.append(bytes(self._buf[colon + 1 : end]))
            del self._buf[: end + 1]
