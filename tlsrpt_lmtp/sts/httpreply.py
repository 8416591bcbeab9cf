"""The policy host's HTTP/1.1 reply to our one GET, sans-I/O, with every size bounded.

Parsing is llhttp's (Node.js's HTTP parser, through httptools): strict by default, it
refuses duplicate or malformed Content-Length, Content-Length with Transfer-Encoding,
folded or malformed headers and bad chunk framing. h11 did the same in pure Python at about
a tenth of the daemon's CPU per uncached policy fetch, more than all our other Python on that
path but DNS; llhttp takes a few microseconds. What llhttp leaves to its user is bounded
here: the head (status lines and headers of interim 1xx replies and of the final one) to
MAX_HEAD bytes, the body to the caller's limit while it arrives; and a Transfer-Encoding
other than chunked, which llhttp would read to the end of the connection, is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httptools

MAX_HEAD = 16 * 1024  # as h11's default bound on an incomplete head


class HttpError(Exception):
    """`kind` as sts.tlsget names it: "http" (malformed), "closed" (cut short), "size"."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]  # names in lower case, in the order sent


def request(host: str, target: str, user_agent: str) -> bytes:
    """The GET for `target` on `host` (an A-label host name), asking for the connection's
    end after the reply."""
    if not host.isascii() or not host.replace(".", "").replace("-", "").isalnum():
        raise ValueError(f"not a host name: {host!r}")
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n"
        "Accept: text/plain\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


class ResponseReader:
    """Feed the bytes of the reply with `feed` and the end of the connection with `eof`;
    `check` sees the final head as soon as it is in (what it raises comes out of `feed`).
    `body` is the whole body once `done`; HttpError for anything else."""

    def __init__(self, max_body: int, check: Callable[[Head], None]) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._max_body = max_body
        self._check = check
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0  # fed before the final head was complete
        self._final = False  # the final (non-1xx) head is in
        self._framed = False  # the body's end is known (Content-Length or chunked)
        self._failure: BaseException | None = None
        self.body = bytearray()
        self.done = False

    def feed(self, data: bytes | memoryview) -> None:
        if self.done:
            return  # what follows the reply is not read (Connection: close)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._failure is None:
                raise HttpError("http", "malformed HTTP response: protocol switch") from None
        except httptools.HttpParserError as exc:
            if self._failure is None and not self.done:
                raise HttpError("http", f"malformed HTTP response: {exc}") from None
        if self._failure is not None:
            raise self._failure
        if not self._final:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                raise HttpError("http", f"malformed HTTP response: head over {MAX_HEAD} bytes")

    def eof(self) -> None:
        """The connection ended: a body without a declared end is complete now."""
        if self.done:
            return
        if not self._final:
            raise HttpError("closed", "connection closed before the response")
        if self._framed:
            raise HttpError("closed", "connection closed mid-response")
        self.done = True

    # llhttp's callbacks. An exception raised in one is kept and raised from feed: httptools
    # reports it as its own error, which would hide what it was.

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        headers, self._headers = tuple(self._headers), []
        if 100 <= status < 200 and status != 101:
            return  # an interim reply (103 Early Hints, ...): the final one follows
        self._final = True
        coding = [v.strip().lower() for n, v in headers if n == b"transfer-encoding"]
        if coding and coding != [b"chunked"]:
            self._fail(HttpError("http", "malformed HTTP response: transfer coding not chunked"))
            return
        self._framed = bool(coding) or any(n == b"content-length" for n, _ in headers)
        try:
            self._check(Head(status, headers))
        except Exception as exc:  # the caller's verdict, raised from feed
            self._fail(exc)
        if status == 101:  # not for one GET that did not ask for it
            self._fail(HttpError("http", "malformed HTTP response: protocol switch"))

    def on_body(self, data: bytes) -> None:
        if self._failure is not None:
            return
        self.body += data
        if len(self.body) > self._max_body:
            self._fail(HttpError("size", f"more than {self._max_body} bytes"))

    def on_message_complete(self) -> None:
        if self._final and self._failure is None:
            self.done = True
            raise _Stop  # nothing after the reply is parsed (or taken for a second one)

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        raise _Stop


class _Stop(Exception):
    """Ends llhttp's run through the bytes fed (it reports it as a callback error)."""
