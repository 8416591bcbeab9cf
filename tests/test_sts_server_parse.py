"""A socketmap request is parsed once, hit or miss (the miss used to parse it three times)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tlsrpt_lmtp.sts import server
from tlsrpt_lmtp.sts.netstring import Decoder, encode
from tlsrpt_lmtp.sts.reply import Answer, Kind
from tlsrpt_lmtp.sts.server import ReplyOptions, listen_socketmap


class CountingService:
    """The two calls the socketmap adapter makes; a miss for every key but hit.test."""

    def __init__(self) -> None:
        self.cached: list[str] = []
        self.lookups: list[str] = []

    def cached_answer(self, key: str) -> Answer | None:
        self.cached.append(key)
        return Answer(Kind.NO_POLICY, key) if key == "hit.test" else None

    async def lookup(self, key: str) -> Answer:
        self.lookups.append(key)
        await asyncio.sleep(0)
        return Answer(Kind.NO_POLICY, key)


async def _exchange(service: CountingService, requests: list[bytes]) -> list[bytes]:
    listener = await listen_socketmap("127.0.0.1:0", service, ReplyOptions())  # type: ignore[arg-type]
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(requests))
        decoder, replies = Decoder(), []
        while len(replies) < len(requests):
            replies += decoder.feed(await asyncio.wait_for(reader.read(4096), 5))
        writer.close()
        return replies
    finally:
        listener.close()


def test_each_request_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes] = []
    real = server._request

    def counting(request: bytes) -> Any:
        parsed.append(request)
        return real(request)

    monkeypatch.setattr(server, "_request", counting)
    service = CountingService()
    requests = [encode("sts miss.test"), encode("sts hit.test"), encode("sts other.test")]
    replies = asyncio.run(_exchange(service, requests))
    assert replies == [b"NOTFOUND ", b"NOTFOUND ", b"NOTFOUND "]
    assert parsed == [b"sts miss.test", b"sts hit.test", b"sts other.test"]
    # the adapter asks the cache once per request before the worker takes over (the
    # queued ones go to lookup, which checks the cache itself)
    assert service.cached == ["miss.test"]
    assert service.lookups == ["miss.test", "hit.test", "other.test"]


def test_a_malformed_request_queued_behind_a_miss_is_answered_in_order() -> None:
    service = CountingService()
    requests = [encode("sts miss.test"), encode("no-key"), encode("sts hit.test")]
    replies = asyncio.run(_exchange(service, requests))
    assert replies == [b"NOTFOUND ", b"PERM expected '<name> <key>'", b"NOTFOUND "]
    assert service.lookups == ["miss.test", "hit.test"]
