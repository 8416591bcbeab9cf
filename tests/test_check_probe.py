"""The STARTTLS probe against scripted SMTP servers that misbehave (loopback, ephemeral port).

The well-behaved cases (good, expired, wrong-name, untrusted certificates, no STARTTLS) run
against the netsim sinks on port 25 in test_check_netsim.py; these are the odd ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from tlsrpt_lmtp.check import render
from tlsrpt_lmtp.check.checks import Limits, check_tls
from tlsrpt_lmtp.check.findings import Report
from tlsrpt_lmtp.check.observed import MxHost, MxLookup, Probe, ProbeStatus
from tlsrpt_lmtp.check.probe import probe
from tlsrpt_lmtp.sts.fetch import tls_context

EHLO_OK = b"250-mx.example.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"


def scripted(replies: Sequence[bytes], *, timeout: float = 2.0) -> Probe:
    """Run the probe against a server that sends ``replies[0]`` on connect, then one reply per
    line received (and then keeps the connection open without a word)."""

    async def main() -> Probe:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(replies[0])
            for reply in replies[1:]:
                if not await reader.readline():
                    break
                writer.write(reply)
            await reader.read()  # hold the line until the client gives up
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await probe(
                "mx.example.test",
                "127.0.0.1",
                tls_context(None),
                timeout=timeout,
                helo="checker.example.test",
                port=port,
            )
        finally:
            server.close()

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("replies", "status", "detail", "rt"),
    [
        ([b"554 5.7.1 go away\r\n"], ProbeStatus.SMTP_ERROR, "greeting refused: 554", None),
        ([b"HTTP/1.1 400 Bad\r\n"], ProbeStatus.SMTP_ERROR, "not an SMTP reply", None),
        (
            [b"220 hi\r\n", b"502 5.5.2 no EHLO\r\n"],
            ProbeStatus.NO_STARTTLS,
            "EHLO refused",
            "starttls-not-supported",
        ),
        (
            [b"220 hi\r\n", EHLO_OK, b"454 4.7.0 TLS not available\r\n"],
            ProbeStatus.NO_STARTTLS,
            "STARTTLS refused: 454",
            "starttls-not-supported",
        ),
        (
            [b"220 hi\r\n", EHLO_OK, b"220 go ahead\r\n"],
            ProbeStatus.TLS_FAILED,
            "(in the TLS handshake)",
            "validation-failure",
        ),
        ([b"220-hi\r\n"], ProbeStatus.UNREACHABLE, "(waiting for the greeting)", None),
        ([b"220 " + b"x" * 70000 + b"\r\n"], ProbeStatus.SMTP_ERROR, "SMTP failed", None),
    ],
)
def test_misbehaving_servers(
    replies: list[bytes], status: ProbeStatus, detail: str, rt: str | None
) -> None:
    result = scripted(replies, timeout=0.5)
    assert result.status is status, result
    assert detail in result.detail and result.result_type == rt
    assert result.host == "mx.example.test" and result.address == "127.0.0.1"


def test_connection_refused_is_unreachable() -> None:
    async def main() -> Probe:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return await probe(
            "mx.example.test", "127.0.0.1", tls_context(None), timeout=2, helo="x", port=port
        )

    result = asyncio.run(main())
    assert result.status is ProbeStatus.UNREACHABLE
    assert result.detail.startswith("cannot connect to port ")


def test_hostile_greeting_is_kept_as_data_and_printed_escaped() -> None:
    hostile = b"554 5.7.1 \x1b]52;c;ZXZpbA==\x07\x1b[2J\x9b2J\r\x1b[1Agone\r\n"
    result = scripted([hostile], timeout=0.5)
    assert result.status is ProbeStatus.SMTP_ERROR
    assert "\x1b]52;c;ZXZpbA==\x07\x1b[2J\x9b2J\r\x1b[1Agone" in result.detail  # the data
    now = datetime.now(UTC)
    host = MxHost("mx.example.test", 10, ("127.0.0.1",), probes=(result,))
    report = Report("example.test", now, tuple(check_tls(MxLookup((host,)), now, Limits())))
    text = render.text(report)
    assert all(line.isprintable() for line in text.splitlines()), repr(text)
    assert "\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\x9b2J\\x0d\\x1b[1Agone" in "".join(
        line.strip() for line in text.splitlines()
    )
    doc = render.as_json(report)
    assert all(c == "\n" or c.isprintable() for c in doc), repr(doc)
