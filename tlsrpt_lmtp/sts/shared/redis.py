"""The shared policy cache on Redis (redis-py's asyncio client).

Keys, under ``tlsrpt-lmtp:sts:``: ``policy:<domain>`` (the record, expiring with the policy's
max_age, replaced only by a record fetched later: a Lua script compares the times
atomically), ``failed:<domain>:<id>`` (the back-off marker, ``SET ... PX``) and
``lease:<domain>`` (the fetch lease, ``SET NX PX``, released by compare-and-delete).
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from tlsrpt_lmtp.sts.shared.base import (
    MAX_RECORD,
    MAX_SKEW,
    Backend,
    BackendError,
    SharedPolicy,
)

PREFIX = "tlsrpt-lmtp:sts:"
MAX_CONNECTIONS = 64

# KEYS[1] policy key; ARGV: record, its fetched_at, milliseconds to keep it, the latest
# plausible fetched_at (a stored record beyond it blocks nothing)
_PUT = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then
  local head = redis.call('GETRANGE', KEYS[1], 0, 63)
  local stored = tonumber(string.match(head, '^1 (%S+) '))
  if stored and stored >= tonumber(ARGV[2]) and stored <= tonumber(ARGV[4]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisBackend(Backend):
    kind = "redis"

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.server = (
            parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
        )
        self._url = url
        self._timeout = timeout
        self._client: Redis | None = None

    def _redis(self) -> Redis:
        if self._client is None:
            # Bounded, and a call waits (within the tier's timeout) for a free connection
            # rather than failing at once: a burst of misses must not look like an outage.
            pool = BlockingConnectionPool.from_url(
                self._url,
                max_connections=MAX_CONNECTIONS,
                timeout=self._timeout,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 0),  # the tier decides when to try again
            )
            self._client = Redis(connection_pool=pool)
        return self._client

    async def get(self, domain: str) -> bytes | None:
        try:
            value = await self._redis().getrange(f"{PREFIX}policy:{domain}", 0, MAX_RECORD)
        except ResponseError:
            return None  # not a string: nothing this version wrote
        except (RedisError, OSError) as exc:
            raise BackendError(_why(exc)) from exc
        return value.encode() if isinstance(value, str) else (bytes(value) or None)

    async def put(self, policy: SharedPolicy, record: bytes, now: float) -> bool:
        keep = int((policy.expires_at - now) * 1000)
        if keep <= 0:
            return False
        try:
            stored = await self._redis().eval(
                _PUT,
                1,
                f"{PREFIX}policy:{policy.domain}",
                record,
                repr(policy.fetched_at),
                keep,
                repr(now + MAX_SKEW),
            )
        except (RedisError, OSError) as exc:
            raise BackendError(_why(exc)) from exc
        return bool(stored)

    async def failed(self, domain: str, policy_id: str) -> bool:
        try:
            return bool(await self._redis().exists(f"{PREFIX}failed:{domain}:{policy_id}"))
        except (RedisError, OSError) as exc:
            raise BackendError(_why(exc)) from exc

    async def mark_failed(self, domain: str, policy_id: str, seconds: float) -> None:
        try:
            await self._redis().set(
                f"{PREFIX}failed:{domain}:{policy_id}", b"1", px=max(1, int(seconds * 1000))
            )
        except (RedisError, OSError) as exc:
            raise BackendError(_why(exc)) from exc

    async def claim(self, domain: str, token: str, seconds: float) -> bool:
        try:
            taken = await self._redis().set(
                f"{PREFIX}lease:{domain}", token, nx=True, px=max(1, int(seconds * 1000))
            )
        except (RedisError, OSError) as exc:
            raise BackendError(_why(exc)) from exc
        return bool(taken)

    async def release(self, domain: str, token: str) -> None:
        try:
            await self._redis().eval(_RELEASE, 1, f"{PREFIX}lease:{domain}", token)
        except (RedisError, OSError) as exc:
            raise BackendError(_why(exc)) from exc

    async def reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose(close_connection_pool=True)

    async def close(self) -> None:
        await self.reset()


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
