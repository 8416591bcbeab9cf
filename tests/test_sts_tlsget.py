"""The policy fetch's own TLS + HTTP protocol (sts.tlsget) against hostile policy hosts.

Each test runs a raw server on loopback with a certificate of the test internet's CA that
sends exactly the bytes the test chooses (over TLS, or nothing at all), and fetches through
the real Fetcher: whatever the host sends, the result is a policy body or a FetchError with
a reason, never a truncated body taken as whole, and the body stays bounded.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest

from tlsrpt_lmtp.sts.fetch import Fetcher, FetchError, tls_context
from tlsrpt_lmtp.sts.policy import MAX_POLICY_SIZE

if TYPE_CHECKING:
    from tests.netsim.fixtures import NetSim

pytest_plugins = ["tests.netsim.fixtures"]

DOMAIN = "raw.test"
HOST = f"mta-sts.{DOMAIN}"
POLICY = b"version: STSv1\nmode: enforce\nmx: mx1.raw.test\nmax_age: 86400\n"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def head(extra: str = "", length: int | None = None) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: text/plain", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sending(*parts: bytes, close_notify: bool = True) -> Handler:
    """A handler that reads the request head, writes `parts` one by one and closes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            for part in parts:
                writer.write(part)
                await writer.drain()
            if close_notify:
                writer.close()
            else:
                writer.transport.abort()  # TCP close without TLS close_notify
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            writer.transport.abort()

    return handler


async def fetch(netsim: NetSim, handler: Handler, *, tls: bool = True) -> bytes:
    server_ctx: ssl.SSLContext | None = None
    if tls:
        cert = netsim.pki.issue(HOST)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert.chain_file, cert.key_file)
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]

    async def resolve(host: str) -> list[str]:
        assert host == HOST
        return ["127.0.0.1"]

    fetcher = Fetcher(
        resolve, tls_context(str(netsim.ca_file)), timeout=5.0, port=port, allow_private=True
    )
    try:
        return await fetcher.fetch(DOMAIN)
    finally:
        server.close()


def failure(netsim: NetSim, handler: Handler, *, tls: bool = True) -> FetchError:
    with pytest.raises(FetchError) as caught:
        asyncio.run(fetch(netsim, handler, tls=tls))
    return caught.value


def test_content_length_body(netsim: NetSim) -> None:
    assert asyncio.run(fetch(netsim, sending(head(length=len(POLICY)) + POLICY))) == POLICY


def test_body_in_one_byte_records(netsim: NetSim) -> None:
    whole = head(length=len(POLICY)) + POLICY
    parts = [whole[i : i + 1] for i in range(len(whole))]
    assert asyncio.run(fetch(netsim, sending(*parts))) == POLICY


def test_chunked_body(netsim: NetSim) -> None:
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(POLICY[i : i + 7]), POLICY[i : i + 7])
        for i in range(0, len(POLICY), 7)
    )
    body = asyncio.run(
        fetch(netsim, sending(head("Transfer-Encoding: chunked") + chunks + b"0\r\n\r\n"))
    )
    assert body == POLICY


def test_close_delimited_body(netsim: NetSim) -> None:
    assert asyncio.run(fetch(netsim, sending(head() + POLICY))) == POLICY


def test_body_cut_short_is_an_error_not_a_policy(netsim: NetSim) -> None:
    error = failure(netsim, sending(head(length=len(POLICY)) + POLICY[:20]))
    assert error.result_type == "sts-policy-fetch-error"
    assert "closed" in error.reason


def test_body_cut_short_without_close_notify(netsim: NetSim) -> None:
    error = failure(netsim, sending(head(length=len(POLICY)) + POLICY[:20], close_notify=False))
    assert "closed" in error.reason


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_body_without_length_is_cut_off(netsim: NetSim, chunked: bool) -> None:
    block = b"x" * 16384
    if chunked:
        parts = [head("Transfer-Encoding: chunked")]
        parts += [b"%x\r\n%s\r\n" % (len(block), block)] * 8
    else:
        parts = [head()] + [block] * 8
    error = failure(netsim, sending(*parts))
    assert f"larger than {MAX_POLICY_SIZE}" in error.reason


def test_declared_oversize_fails_at_the_head(netsim: NetSim) -> None:
    error = failure(netsim, sending(head(length=MAX_POLICY_SIZE + 1)))
    assert f"larger than {MAX_POLICY_SIZE}" in error.reason


@pytest.mark.parametrize(
    "reply",
    [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", b"HTTP/1.1 99\r\n\r\n"],
)
def test_malformed_http_is_an_error(netsim: NetSim, reply: bytes) -> None:
    error = failure(netsim, sending(reply))
    assert "malformed HTTP response" in error.reason


def test_endless_header_is_bounded(netsim: NetSim) -> None:
    endless = b"HTTP/1.1 200 OK\r\nX-Fill: " + b"a" * 200_000
    error = failure(netsim, sending(endless))
    assert "malformed HTTP response" in error.reason


def test_status_other_than_200(netsim: NetSim) -> None:
    reply = b"HTTP/1.1 302 Found\r\nLocation: https://elsewhere.test/\r\nContent-Length: 0\r\n\r\n"
    assert "HTTP 302" in failure(netsim, sending(reply)).reason


def test_peer_closing_during_the_handshake_is_a_connect_failure(netsim: NetSim) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.close()

    error = failure(netsim, hang_up, tls=False)
    assert error.result_type == "sts-policy-fetch-error"
    assert "cannot connect" in error.reason


def test_plain_http_on_443_is_a_tls_failure(netsim: NetSim) -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    error = failure(netsim, plain, tls=False)
    assert error.result_type == "sts-webpki-invalid"


def test_wrong_name_certificate(netsim: NetSim) -> None:
    async def run() -> bytes:
        cert = netsim.pki.issue("mta-sts.other.test")
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert.chain_file, cert.key_file)
        server = await asyncio.start_server(sending(POLICY), "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]

        async def resolve(host: str) -> list[str]:
            return ["127.0.0.1"]

        ctx = tls_context(str(netsim.ca_file))
        try:
            return await Fetcher(resolve, ctx, port=port, allow_private=True).fetch(DOMAIN)
        finally:
            server.close()

    with pytest.raises(FetchError) as caught:
        asyncio.run(run())
    assert caught.value.result_type == "sts-webpki-invalid"
    assert "not valid" in caught.value.reason


def test_refused_connection_is_a_connect_failure_and_the_next_address_is_tried(
    netsim: NetSim,
) -> None:
    async def run() -> tuple[str, bytes]:
        closed = socket.socket()
        closed.bind(("127.0.0.2", 0))  # bound, never listening: connecting is refused
        cert = netsim.pki.issue(HOST)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert.chain_file, cert.key_file)
        server = await asyncio.start_server(
            sending(head(length=len(POLICY)) + POLICY), "127.0.0.1", 0, ssl=server_ctx
        )
        port = server.sockets[0].getsockname()[1]
        closed.close()
        ctx = tls_context(str(netsim.ca_file))

        async def only_refused(host: str) -> list[str]:
            return ["127.0.0.2"]

        async def refused_then_good(host: str) -> list[str]:
            return ["127.0.0.2", "127.0.0.1"]

        try:
            with pytest.raises(FetchError) as caught:
                await Fetcher(only_refused, ctx, port=port, allow_private=True).fetch(DOMAIN)
            body = await Fetcher(refused_then_good, ctx, port=port, allow_private=True).fetch(
                DOMAIN
            )
            return caught.value.reason, body
        finally:
            server.close()

    reason, body = asyncio.run(run())
    assert reason == f"cannot connect to {HOST} [127.0.0.2]: Connection refused"
    assert body == POLICY
