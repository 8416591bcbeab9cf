"""One HTTPS GET over one TLS connection, on a socket driven by the event loop's selector.

asyncio's own TLS layer (open_connection(ssl=...): SSLProtocol, a StreamReader and a
StreamWriter) cost about as much CPU per policy fetch as OpenSSL's handshake itself: its
buffers, flow control and callbacks run in Python for every record. A policy fetch needs
none of that: one request of a few hundred bytes, a reply of at most 64 KiB. Here an
ssl.SSLObject on memory BIOs is driven straight from the socket's reads, and
sts.httpreply parses the reply; the body is bounded while it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Callable

from tlsrpt_lmtp.sts.httpreply import Head, HttpError, ResponseReader


class TlsGetError(Exception):
    """What went wrong, in the words of one of the kinds below."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # "verify", "tls", "cut" (before the handshake ended), "http",
        # "closed" (before the response ended), "size"
        self.detail = detail


# What one read from the socket takes at most, into one buffer shared by every connection
# (a read and its processing are one callback). asyncio's Protocol path read with
# recv(256 KiB): a fresh bytes object per read, which glibc serves with mmap, mremap and
# munmap (above its mmap threshold) - three system calls per TLS record flight.
READ_SIZE = 64 * 1024
_read_buffer = bytearray(READ_SIZE)


class TlsGet:
    """Connect, handshake, send `request`, collect the response: `result` is the body.
    `check` sees the response head as soon as it is in; what it raises is the result.

    The socket is driven straight from the event loop's selector (add_reader/add_writer), not
    through an asyncio transport: a transport's set-up and tear-down (a connect future, the
    transport object, getsockname/getpeername, callbacks scheduled for connection_made and
    connection_lost) cost as much Python per fetch as the HTTP parsing."""

    def __init__(
        self,
        context: ssl.SSLContext,
        host: str,
        request: bytes,
        max_body: int,
        check: Callable[[Head], None],
    ) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_hostname=host)
        self._request = request
        self._reply = ResponseReader(max_body, check)
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._reading = False
        self._unsent = b""  # what the socket's buffer did not take (add_writer until sent)
        self._open = False  # handshake done
        self.result: asyncio.Future[bytes] = self._loop.create_future()

    async def connect(self, address: str, port: int) -> None:
        """Open the TCP connection and send the ClientHello; OSError if it cannot connect."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = self._sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect((address, port))
        except BlockingIOError:
            connected: asyncio.Future[None] = self._loop.create_future()
            self._loop.add_writer(sock.fileno(), _wake, connected)
            try:
                await connected
            finally:
                self._loop.remove_writer(sock.fileno())
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error)) from None
        self._loop.add_reader(sock.fileno(), self._readable)
        self._reading = True
        self._step(b"")

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._reading:
            self._loop.remove_reader(sock.fileno())
        if self._unsent:
            self._loop.remove_writer(sock.fileno())
            self._unsent = b""
        sock.close()

    def _readable(self) -> None:
        if self._sock is None:
            return
        try:
            size = self._sock.recv_into(_read_buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if size:
            self._step(memoryview(_read_buffer)[:size])
        else:
            self._eof()

    def _eof(self) -> None:
        self._in.write_eof()
        self._step(b"")
        if not self.result.done() and not self._open:
            self._fail(TlsGetError("cut", "connection closed during the TLS handshake"))
        elif not self.result.done():  # EOF before the end of the response
            self._step_http(b"")
        self._lost(None)

    def _lost(self, exc: Exception | None) -> None:
        if not self.result.done():
            detail = str(exc) if exc else "connection closed"
            self.result.set_exception(TlsGetError("closed" if self._open else "cut", detail))
        self.close()

    def _step(self, data: bytes | memoryview) -> None:
        if self.result.done():
            return
        if data:
            self._in.write(data)
        try:
            if not self._open:
                try:
                    self._tls.do_handshake()
                except ssl.SSLWantReadError:
                    self._flush()
                    return
                self._open = True
                # The client's last handshake flight and the request in one segment: a send
                # (and a wake-up of the server) fewer.
                self._tls.write(self._request)
                self._flush()
            while not self.result.done():
                if not (self._in.pending or self._in.eof or self._tls.pending()):
                    break  # nothing to decrypt: a read would only raise SSLWantReadError
                try:
                    chunk = self._tls.read(65536)
                except ssl.SSLWantReadError:
                    break
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    chunk = b""  # closed (with or without close_notify): the reply decides
                self._step_http(chunk)
                if not chunk:
                    break
            self._flush()  # e.g. a key update's answer
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):  # the handshake was cut off
            self._fail(TlsGetError("cut", "connection closed during the TLS handshake"))
        except ssl.SSLCertVerificationError as exc:
            self._flush()  # the alert saying why
            self._fail(TlsGetError("verify", str(exc.verify_message)))
        except ssl.SSLError as exc:
            self._flush()
            self._fail(TlsGetError("tls", str(exc.reason or exc)))

    def _step_http(self, chunk: bytes) -> None:
        """Reply bytes in (b"": the connection's end); the result once the reply is whole."""
        if self.result.done():
            return
        reply = self._reply
        try:
            if chunk:
                reply.feed(chunk)
            else:
                reply.eof()
        except HttpError as exc:
            self._fail(TlsGetError(exc.kind, exc.detail))
            return
        except Exception as exc:  # what `check` raised
            self._fail(exc)
            return
        if reply.done:
            self.result.set_result(bytes(reply.body))
            self._goodbye()

    def _goodbye(self) -> None:
        """close_notify, then close (a polite end; the response is complete)."""
        with contextlib.suppress(ssl.SSLError):  # it wants the server's close_notify: no
            self._tls.unwrap()
        self._flush()
        self.close()  # what the socket's buffer did not take of the alert is dropped

    def _flush(self) -> None:
        data = self._out.read()
        if not data or self._sock is None:
            return
        if self._unsent:
            self._unsent += data
            return
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lost(exc)
            return
        if sent < len(data):
            self._unsent = data[sent:]
            self._loop.add_writer(self._sock.fileno(), self._writable)

    def _writable(self) -> None:
        if self._sock is None:
            return
        try:
            sent = self._sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        self._unsent = self._unsent[sent:]
        if not self._unsent:
            self._loop.remove_writer(self._sock.fileno())

    def _fail(self, error: Exception) -> None:
        if not self.result.done():
            self.result.set_exception(error)
        self.close()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
