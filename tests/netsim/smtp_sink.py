"""STARTTLS SMTP sinks (aiosmtpd) for the loopback test internet.

A sink plays one MX host: it listens on its own ``127.x.y.z:25`` (so an MX → A → port 25 lookup
works for a real MTA), greets as its host name, offers STARTTLS with the configured certificate
(or offers no STARTTLS at all) and records every message it accepts, with what the TLS session
looked like (version, cipher, the SNI the client sent). It also records every SNI it saw in a
ClientHello and every handshake that failed, so a test can assert that a client *refused* the
certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.message
import email.policy
import functools
import logging
import ssl
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from .pki import IssuedCert

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsInfo:
    version: str | None
    cipher: str | None
    sni: str | None


@dataclass(frozen=True)
class ReceivedMessage:
    """One message accepted by a sink."""

    time: float
    peer: tuple[str, int]
    helo: str | None
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls: TlsInfo | None  # None: delivered in clear text

    @property
    def message(self) -> email.message.EmailMessage:
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        return msg


@dataclass
class _SinkLog:
    messages: list[ReceivedMessage] = field(default_factory=list)
    sni_seen: list[str | None] = field(default_factory=list)
    handshake_failures: int = 0
    connections: int = 0


def make_server_context(cert: IssuedCert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert.chain_file, cert.key_file)
    return ctx


class SmtpSink:
    """An SMTP server on ``host:port`` named ``hostname``; ``cert=None`` → no STARTTLS."""

    def __init__(
        self,
        host: str,
        port: int,
        hostname: str,
        cert: IssuedCert | None,
        *,
        data_reply: str = "250 2.0.0 OK: queued by netsim sink",
    ) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname
        self.data_reply = data_reply
        self.banner = "netsim sink"  # the greeting is "220 <hostname> <banner>"
        self.ehlo_reply: tuple[bytes, ...] | None = None  # raw reply lines instead of EHLO
        self._cond = threading.Condition()
        self._log = _SinkLog()
        self._sni_by_conn: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()
        self._server: asyncio.Server | None = None
        self._cert: IssuedCert | None = None
        self._tls: ssl.SSLContext | None = None
        self.set_cert(cert)

    # ---- configuration ----------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def cert(self) -> IssuedCert | None:
        return self._cert

    @property
    def starttls(self) -> bool:
        return self._tls is not None

    def set_cert(self, cert: IssuedCert | None) -> None:
        """Use ``cert`` from the next connection on (``None``: stop offering STARTTLS)."""
        self._cert = cert
        if cert is None:
            self._tls = None
            return
        ctx = make_server_context(cert)
        ctx.sni_callback = self._on_sni
        self._tls = ctx

    def _on_sni(self, conn: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        with self._cond:
            self._log.sni_seen.append(server_name)
        with contextlib.suppress(TypeError):
            self._sni_by_conn[conn] = server_name

    # ---- what was seen ---------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._cond:
            return list(self._log.messages)

    @property
    def sni_seen(self) -> list[str | None]:
        """SNI of every ClientHello (``None``: the client sent none)."""
        with self._cond:
            return list(self._log.sni_seen)

    @property
    def handshake_failures(self) -> int:
        """STARTTLS handshakes that did not complete (e.g. the client rejected the cert)."""
        with self._cond:
            return self._log.handshake_failures

    @property
    def connections(self) -> int:
        with self._cond:
            return self._log.connections

    def clear(self) -> None:
        with self._cond:
            self._log = _SinkLog()

    def mark(self) -> int:
        """Number of messages so far (for ``restore_to``)."""
        with self._cond:
            return len(self._log.messages)

    def wait_for_messages(self, count: int = 1, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages arrived (bounded); return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._log.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"sink {self.hostname} ({self.address}): {len(self._log.messages)} "
                        f"message(s) after {timeout} s, wanted {count}"
                    )
                self._cond.wait(remaining)
            return list(self._log.messages)

    # ---- SMTP ------------------------------------------------------------------------------

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        tls: TlsInfo | None = None
        if session.ssl:
            sslobj = session.ssl.get("ssl_object")
            cipher = session.ssl.get("cipher")
            sni = self._sni_by_conn.get(sslobj) if sslobj is not None else None
            tls = TlsInfo(
                sslobj.version() if sslobj is not None else None,
                cipher[0] if cipher else None,
                sni,
            )
        content = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else content.encode()
        peer = session.peer if isinstance(session.peer, tuple) else ("?", 0)
        received = ReceivedMessage(
            time.time(),
            (str(peer[0]), int(peer[1])),
            session.host_name,
            envelope.mail_from or "",
            tuple(envelope.rcpt_tos),
            data,
            tls,
        )
        with self._cond:
            self._log.messages.append(received)
            self._cond.notify_all()
        return self.data_reply

    def _factory(self) -> SMTP:
        sink = self

        class _Smtp(SMTP):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                if self._original_transport is None and self.transport is None:
                    with sink._cond:
                        sink._log.connections += 1
                super().connection_made(transport)

            async def smtp_EHLO(self, hostname: str) -> None:
                if sink.ehlo_reply is None:
                    await super().smtp_EHLO(hostname)
                    return
                for line in sink.ehlo_reply:
                    await self.push(line)

            async def smtp_STARTTLS(self, arg: str) -> None:
                try:
                    await super().smtp_STARTTLS(arg)
                except Exception:
                    with sink._cond:
                        sink._log.handshake_failures += 1
                    raise

        return _Smtp(
            self,
            hostname=self.hostname,
            ident=self.banner,
            tls_context=self._tls,
            require_starttls=False,
            timeout=30,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            functools.partial(self._factory), self.host, self.port, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
