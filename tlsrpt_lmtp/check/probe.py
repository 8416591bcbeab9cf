"""The STARTTLS probe of one MX address: a thin asyncio + ssl adapter.

Plain SMTP on port 25 (greeting, EHLO, STARTTLS), then the TLS handshake with SNI = the MX
name and the certificate checked against the trust store with the policy daemon's strict
context (``sts.fetch.tls_context``: TLS >= 1.2, chain to the trust store, SAN dNSName only,
dates). A verification failure is mapped to the RFC 8460 result type a sender would report.
Every wait is bounded by one deadline per probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ssl
from datetime import UTC, datetime

from tlsrpt_lmtp.check.observed import Probe, ProbeStatus

SMTP_PORT = 25
MAX_REPLY_LINES = 100
_HANDSHAKE = "in the TLS handshake"

# OpenSSL X509_V_ERR_* codes → RFC 8460 §4.3.2.1 result types.
_RESULT_TYPES = {
    10: "certificate-expired",
    62: "certificate-host-mismatch",
    **dict.fromkeys((2, 7, 18, 19, 20, 21, 24, 27, 28), "certificate-not-trusted"),
}


class _SmtpFailure(Exception):
    pass


class _Session:
    def __init__(self, host: str, address: str, port: int) -> None:
        self.host = host
        self.address = address
        self.port = port
        self.stage = "connecting"
        self.writer: asyncio.StreamWriter | None = None

    def result(self, status: ProbeStatus, detail: str, rt: str | None = None) -> Probe:
        return Probe(self.host, self.address, status, detail, rt)

    async def run(self, context: ssl.SSLContext, helo: str) -> Probe:
        try:
            reader, self.writer = await asyncio.open_connection(self.address, self.port)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if ":" in self.address and exc.errno in (errno.ENETUNREACH, errno.EADDRNOTAVAIL):
                return self.result(ProbeStatus.SKIPPED, f"not checked: {why} from this host")
            detail = f"cannot connect to port {self.port}: {why}"
            return self.result(ProbeStatus.UNREACHABLE, detail)
        try:
            return await self._dialogue(reader, self.writer, context, helo)
        except _SmtpFailure as exc:
            return self.result(ProbeStatus.SMTP_ERROR, str(exc))
        except (OSError, ValueError) as exc:  # reset, or an overlong line (ValueError)
            why = f"{type(exc).__name__}: {exc}"
            return self.result(ProbeStatus.SMTP_ERROR, f"SMTP failed {self.stage}: {why}")

    async def _dialogue(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        helo: str,
    ) -> Probe:
        self.stage = "waiting for the greeting"
        code, lines = await self._reply(reader)
        if code != 220:
            raise _SmtpFailure(f"greeting refused: {code} {lines[0]}".rstrip())
        self.stage = "after EHLO"
        writer.write(f"EHLO {helo}\r\n".encode("ascii"))
        code, lines = await self._reply(reader)
        if code != 250:
            detail = f"EHLO refused, so no STARTTLS: {code} {lines[0]}".rstrip()
            return self.result(ProbeStatus.NO_STARTTLS, detail, "starttls-not-supported")
        keywords = {line.split(" ", 1)[0].upper() for line in lines[1:] if line}
        if "STARTTLS" not in keywords:
            detail = "STARTTLS is not offered in the EHLO reply"
            return self.result(ProbeStatus.NO_STARTTLS, detail, "starttls-not-supported")
        self.stage = "after STARTTLS"
        writer.write(b"STARTTLS\r\n")
        code, lines = await self._reply(reader)
        if code != 220:
            detail = f"STARTTLS refused: {code} {lines[0]}".rstrip()
            return self.result(ProbeStatus.NO_STARTTLS, detail, "starttls-not-supported")
        self.stage = _HANDSHAKE
        return await self._handshake(writer, context)

    async def _handshake(self, writer: asyncio.StreamWriter, context: ssl.SSLContext) -> Probe:
        try:
            await writer.start_tls(context, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            rt = _RESULT_TYPES.get(exc.verify_code, "validation-failure")
            detail = f"certificate rejected: {exc.verify_message}"
            return self.result(ProbeStatus.CERT_INVALID, detail, rt)
        except ssl.SSLError as exc:
            detail = f"TLS handshake failed: {exc.reason or exc}"
            return self.result(ProbeStatus.TLS_FAILED, detail, "validation-failure")
        except (OSError, EOFError) as exc:
            detail = f"connection lost in the TLS handshake: {exc}"
            return self.result(ProbeStatus.TLS_FAILED, detail, "validation-failure")
        ssl_object = writer.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        if not cert or "notAfter" not in cert:
            return self.result(ProbeStatus.TLS_FAILED, "no peer certificate", "validation-failure")
        not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(str(cert["notAfter"])), UTC)
        self.stage = "after QUIT"
        writer.write(b"QUIT\r\n")
        return Probe(
            self.host,
            self.address,
            ProbeStatus.OK,
            not_after=not_after,
            tls_version=ssl_object.version(),
        )

    async def _reply(self, reader: asyncio.StreamReader) -> tuple[int, list[str]]:
        lines: list[str] = []
        for _ in range(MAX_REPLY_LINES):
            raw = await reader.readline()
            if not raw:
                raise _SmtpFailure(f"connection closed {self.stage}")
            line = raw.decode("latin-1").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                raise _SmtpFailure(f"not an SMTP reply {self.stage}: {line[:60]!r}")
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), lines
        raise _SmtpFailure(f"more than {MAX_REPLY_LINES} reply lines {self.stage}")

    async def close(self, *, graceful: bool) -> None:
        """Close the connection; after a timeout, abort it (no more waiting)."""
        if self.writer is None:
            return
        if not graceful:
            self.writer.transport.abort()
            return
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


async def probe(
    host: str,
    address: str,
    context: ssl.SSLContext,
    *,
    timeout: float,
    helo: str,
    port: int = SMTP_PORT,
) -> Probe:
    """Probe ``address`` (one address of MX ``host``); never raises for network trouble."""
    session = _Session(host, address, port)
    try:
        async with asyncio.timeout(timeout):
            result = await session.run(context, helo)
    except TimeoutError:
        await session.close(graceful=False)
        detail = f"no answer within {timeout:g} s ({session.stage})"
        if session.stage == _HANDSHAKE:
            return session.result(ProbeStatus.TLS_FAILED, detail, "validation-failure")
        return session.result(ProbeStatus.UNREACHABLE, detail)
    except BaseException:
        await session.close(graceful=False)
        raise
    await session.close(graceful=True)
    return result
