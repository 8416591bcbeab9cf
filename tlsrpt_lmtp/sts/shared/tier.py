"""The shared tier behind the in-process policy cache: what the service asks of it, with the
RFC 8461 rules that must hold across nodes, and its failure behaviour.

- Read before discovery: a policy another node fetched, unexpired, is applied as if this node
  had fetched it (its fetched_at, so its max_age runs from the real fetch), and kept locally.
- Written only after a successful fetch, and only if newer (by fetched_at) than what is there:
  a DNS or HTTPS failure on one node never deletes, replaces or shortens a shared policy.
- Before a fetch: a policy for the wanted id fetched by another node is taken instead; a
  recent failure of another node for that (domain, id) means back-off here too; otherwise the
  domain's fetch lease is taken (or waited for, bounded, while another node fetches).
- Everything read is untrusted: a record is bounded in size, its header checked, its body
  parsed again with the daemon's own parser and bounds; anything else is ignored.
- Every call is bounded by ``timeout``. A failure or timeout marks the shared cache down for
  ``retry_after`` seconds, during which no call is tried (no lookup waits on it); the node
  answers from its own cache meanwhile, and says so once (``sts.shared_cache_unavailable``,
  repeated at most every ``report_every`` seconds) and again when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.sts.cache import Entry
from tlsrpt_lmtp.sts.events import SharedCacheRestored, SharedCacheUnavailable
from tlsrpt_lmtp.sts.policy import PolicyError, StsPolicy, parse_policy
from tlsrpt_lmtp.sts.shared.base import (
    MAX_SKEW,
    Backend,
    BackendError,
    SharedPolicy,
    decode,
    encode,
)

T = TypeVar("T")


@dataclass
class FetchStep:
    """What the tier found before a fetch, and what the service did (read on exit)."""

    adopt: Entry | None = None  # another node fetched the wanted policy: take it
    failed_elsewhere: bool = False  # another node's fetch of this id failed recently
    fetched: Entry | None = None  # set by the service: the policy it fetched (with its body)
    failed: bool = False  # set by the service: its fetch failed


class _Skip(Exception):
    """The shared cache is off or down: go on with the local cache alone."""


class SharedTier:
    def __init__(
        self,
        backend: Backend | None,
        emit: Callable[[Event], None],
        *,
        parse: Callable[[bytes], StsPolicy] = parse_policy,
        timeout: float = 0.5,
        retry_after: float = 5.0,
        report_every: float = 60.0,
        lease: float = 15.0,
        poll: float = 0.05,
    ) -> None:
        self.backend = backend
        self.emit = emit
        self.parse = parse
        self.timeout = timeout
        self.retry_after = retry_after
        self.report_every = report_every
        self.lease = lease  # longest wait for another node's fetch (its fetch timeout + DNS)
        self.poll = poll
        self._down_until = 0.0
        self._down_since: float | None = None
        self._reported_at = 0.0

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    def available(self) -> bool:
        return self.backend is not None and time.monotonic() >= self._down_until

    async def find(
        self, domain: str, now: float, *, policy_id: str | None = None, newer_than: float = 0.0
    ) -> Entry | None:
        """The shared policy for ``domain`` if it is valid, unexpired, fetched after
        ``newer_than`` (and for ``policy_id``, if given); None otherwise or when down."""
        backend = self.backend
        if backend is None:
            return None
        record = await self._quietly(domain, lambda: backend.get(domain), None)
        if record is None:
            return None
        shared = decode(domain, record)
        if shared is None or shared.fetched_at > now + MAX_SKEW:
            return None
        if shared.fetched_at <= newer_than or policy_id not in (None, shared.policy_id):
            return None
        try:
            policy = self.parse(shared.body)
        except PolicyError:
            return None
        entry = Entry(domain, shared.policy_id, policy, shared.body, shared.fetched_at, now, now)
        return entry if now < entry.expires_at else None

    async def publish(self, entry: Entry, now: float) -> None:
        """Offer a freshly fetched policy (with its body); kept only if newer."""
        backend = self.backend
        if backend is None or not entry.body:
            return
        shared = SharedPolicy(
            entry.domain, entry.policy_id, entry.body, entry.fetched_at, entry.expires_at
        )
        await self._quietly(entry.domain, lambda: backend.put(shared, encode(shared), now), False)

    @contextlib.asynccontextmanager
    async def fetching(
        self, domain: str, policy_id: str, previous: Entry | None, now: float, retry_after: float
    ) -> AsyncIterator[FetchStep]:
        """Around one fetch of (domain, policy_id): see the module docstring."""
        step = FetchStep()
        token = await self._coordinate(step, domain, policy_id, previous, now)
        try:
            yield step
        finally:
            backend = self.backend
            if backend is not None:
                if step.fetched is not None:
                    await self.publish(step.fetched, now)
                elif step.failed:
                    await self._quietly(
                        domain, lambda: backend.mark_failed(domain, policy_id, retry_after), None
                    )
                if token is not None:
                    await self._quietly(domain, lambda: backend.release(domain, token), None)

    async def _coordinate(
        self, step: FetchStep, domain: str, policy_id: str, previous: Entry | None, now: float
    ) -> str | None:
        """Fill ``step``; the lease token if this node is to fetch holding the lease."""
        backend = self.backend
        if backend is None:
            return None
        newer_than = previous.fetched_at if previous is not None else 0.0
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.lease
        while self.available():
            claimed: bool | None = False
            for attempt in range(2):  # look, claim; after a claim look again (a race lost)
                found = await self.find(domain, now, policy_id=policy_id, newer_than=newer_than)
                if found is not None:
                    step.adopt = found
                elif await self._quietly(domain, lambda: backend.failed(domain, policy_id), False):
                    step.failed_elsewhere = True
                if step.adopt is not None or step.failed_elsewhere:
                    if claimed:
                        await self._quietly(domain, lambda: backend.release(domain, token), None)
                    return None
                if attempt == 0:
                    claimed = await self._quietly(
                        domain, lambda: backend.claim(domain, token, self.lease), None
                    )
                    if not claimed:
                        break
            if claimed is None:
                return None  # down: fetch alone
            if claimed:
                return token
            if time.monotonic() >= deadline:
                return None  # the holder is stuck or gone: fetch without the lease
            await asyncio.sleep(self.poll)
        return None

    async def _quietly(self, domain: str, call: Callable[[], Awaitable[T]], default: T) -> T:
        try:
            return await self._call(domain, call)
        except _Skip:
            return default

    async def _call(self, domain: str, call: Callable[[], Awaitable[T]]) -> T:
        backend = self.backend
        if backend is None or not self.available():
            raise _Skip
        try:
            result = await asyncio.wait_for(call(), self.timeout)
        except (BackendError, TimeoutError) as exc:
            await self._went_down(backend, domain, str(exc) or f"no answer in {self.timeout} s")
            raise _Skip from exc
        except Exception as exc:  # a library's surprise must never fail a policy lookup
            await self._went_down(backend, domain, f"{type(exc).__name__}: {exc}"[:300])
            raise _Skip from exc
        if self._down_since is not None:
            self.emit(
                SharedCacheRestored(
                    backend=backend.kind,
                    server=backend.server,
                    unavailable_seconds=round(time.monotonic() - self._down_since, 3),
                )
            )
            self._down_since = None
        return result

    async def _went_down(self, backend: Backend, domain: str, reason: str) -> None:
        now = time.monotonic()
        self._down_until = now + self.retry_after
        with contextlib.suppress(Exception):
            await asyncio.wait_for(backend.reset(), self.timeout)
        if self._down_since is None:
            self._down_since = now
        elif now - self._reported_at < self.report_every:
            return
        self._reported_at = now
        self.emit(
            SharedCacheUnavailable(
                backend=backend.kind,
                server=backend.server,
                domain=domain,
                reason=reason,
                retry_in_seconds=self.retry_after,
            )
        )

    async def close(self) -> None:
        if self.backend is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.backend.close(), self.timeout)
