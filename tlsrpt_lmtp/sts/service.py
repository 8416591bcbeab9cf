"""Policy resolution with a cache that never downgrades (RFC 8461 §3.3, §5.1).

- A cached policy is applied until its max_age, whatever DNS or HTTPS say meanwhile.
- The TXT id is re-checked in the background once its DNS TTL has run out (bounded to
  [recheck_min, recheck_max]); a new id triggers a fetch, and the new policy replaces the old
  one only once fetched and valid.
- Policies are re-fetched proactively before they expire (daily, or at half their max_age),
  but only for domains looked up within the refresh window (default: the policy's max_age),
  so the daemon does not keep telling policy hosts about domains nobody mails any more.
- A failed fetch is retried at most every `retry_after` seconds per domain and id.
- Concurrent lookups of one uncached domain share one DNS query and one fetch.
- With a shared cache (sts/shared/, optional) behind the local one, a policy another node
  fetched is applied here too, fetches and failures are coordinated across nodes, and the
  node goes on alone when the shared cache is down (sts/shared/tier.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypedDict

from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.sts.cache import Entry, Lru, PolicyCache
from tlsrpt_lmtp.sts.dnsclient import Dane, DnsClient, TxtLookup
from tlsrpt_lmtp.sts.domain import policy_domain
from tlsrpt_lmtp.sts.events import FetchFailed, PolicyChanged, PolicyFetched, RefreshFailed
from tlsrpt_lmtp.sts.fetch import FetchError
from tlsrpt_lmtp.sts.policy import Mode, PolicyError, checked_policy
from tlsrpt_lmtp.sts.record import parse_txt
from tlsrpt_lmtp.sts.reply import Answer, Kind
from tlsrpt_lmtp.sts.shared.tier import SharedTier

Emit = Callable[[Event], None]


class PolicyFetcher(Protocol):
    """What the service needs of the HTTPS side (sts.fetch.Fetcher)."""

    async def fetch(self, domain: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Timing:
    recheck_min: float = 60.0  # a cached policy's TXT id is re-checked after its TTL,
    recheck_max: float = 3600.0  # bounded to [recheck_min, recheck_max]
    retry_after: float = 300.0  # §3.3: no more than one failed fetch per 5 min per id
    refresh_every: float = 86400.0  # proactive refresh, or at half of max_age if shorter
    negative_min: float = 300.0  # how long "no policy" is believed (bounded TXT TTL)
    negative_max: float = 3600.0
    dns_error_ttl: float = 60.0  # "no policy" after a DNS failure, before asking again
    dane_ttl: float = 300.0
    refresh_window: float = 0.0  # refresh only if looked up this recently; 0: max_age
    lookup_mark: float = 3600.0  # how often a hit records its time (it costs a write)
    # A discovery whose TXT answer takes longer than this (not in the resolver's cache)
    # looks up the policy host's addresses meanwhile, saving a DNS round trip when the
    # domain has a policy. DNS only: nothing is fetched before the TXT record says so.
    # None: one after the other.
    early_addresses: float | None = 0.010


# Per-policy bounds (RFC 8461 sets none but the 64 KiB size): a policy beyond them is refused
# as sts-policy-invalid, so one attacker-made domain cannot take a large share of the cache.
MAX_DISCOVERIES = 128  # concurrent TXT lookups + fetches; more wait their turn


class PolicyService:
    def __init__(
        self,
        dns: DnsClient,
        fetcher: PolicyFetcher,
        cache: PolicyCache,
        emit: Emit,
        *,
        timing: Timing = Timing(),
        clock: Callable[[], float] = time.time,
        shared: SharedTier | None = None,
    ) -> None:
        self.dns = dns
        self.fetcher = fetcher
        self.cache = cache
        self.emit = emit
        self.timing = timing
        self.clock = clock
        self.shared = shared or SharedTier(None, emit)
        self._inflight: dict[str, asyncio.Task[Answer]] = {}
        # Bounded like the cache: neither may grow with the number of domains ever seen.
        self._failures: Lru[tuple[str, str], float] = Lru(cache.size)
        self._dane: Lru[str, tuple[float, Dane]] = Lru(cache.size)
        self._background: dict[str, asyncio.Task[Any]] = {}
        self._discoveries = asyncio.Semaphore(MAX_DISCOVERIES)

    def cached_answer(self, key: str) -> Answer | None:
        """The answer if it needs no I/O (the hot path of a busy MTA), else None."""
        domain = policy_domain(key)
        if domain is None:
            return Answer(Kind.NO_POLICY, reason="not a policy domain")
        now = self.clock()
        entry = self.cache.peek(domain)
        if entry is not None and now < entry.expires_at:
            if now >= entry.recheck_at:
                self._spawn(domain, lambda: self._recheck(entry))
            if now - entry.looked_up_at >= self.timing.lookup_mark:
                self.cache.looked_up(entry, now)
            return self._applicable(domain, entry, now)
        until = self.cache.no_policy_until(domain)
        if until is not None and now < until:
            return Answer(Kind.NO_POLICY, domain)
        return None

    async def lookup(self, key: str) -> Answer:
        answer = self.cached_answer(key)
        if answer is not None:
            return answer
        domain = policy_domain(key)
        assert domain is not None
        entry = self.cache.get(domain)  # not in memory: perhaps persisted
        now = self.clock()
        if entry is not None and now < entry.expires_at:
            self.cache.looked_up(entry, now)
            if now >= entry.recheck_at:
                self._spawn(domain, lambda: self._recheck(entry))
            return await self._applicable_async(domain, entry)
        task = self._inflight.get(domain)
        if task is None:
            task = asyncio.ensure_future(self._discover_bounded(domain, entry))
            self._inflight[domain] = task
            task.add_done_callback(lambda _: self._inflight.pop(domain, None))
        answer = await asyncio.shield(task)
        if answer.kind is Kind.POLICY:
            cached = self.cache.get(domain)
            if cached is not None:
                return await self._applicable_async(domain, cached)
        return answer

    def _applicable(self, domain: str, entry: Entry, now: float) -> Answer | None:
        """The policy's answer, unless DANE must be checked and its status is not known."""
        answer = entry.answer  # built with the entry: a frozen Answer is 5 % of a hit's CPU
        if entry.policy.mode is Mode.NONE or not self.dns.checks_dane:
            return answer
        hit = self._dane.get(domain)
        if hit is None or now >= hit[0]:
            return None
        return _with_dane(answer, hit[1])

    async def _applicable_async(self, domain: str, entry: Entry) -> Answer:
        answer = self._applicable(domain, entry, self.clock())
        if answer is not None:
            return answer
        status = await self._dane_status(domain)
        return _with_dane(Answer(Kind.POLICY, domain, entry.policy, entry.policy_id), status)

    async def _dane_status(self, domain: str) -> Dane:
        status = await self.dns.dane(domain)
        ttl = self.timing.dns_error_ttl if status is Dane.ERROR else self.timing.dane_ttl
        self._dane.put(domain, (self.clock() + ttl, status))
        return status

    async def _discover_bounded(self, domain: str, expired: Entry | None) -> Answer:
        async with self._discoveries:
            newer_than = expired.fetched_at if expired is not None else 0.0
            found = await self.shared.find(domain, self.clock(), newer_than=newer_than)
            if found is not None:  # fetched by another node: applied until its max_age
                return self._adopt(found, expired)
            return await self._discover(domain, expired)

    def _recheck_at(self, now: float, ttl: int) -> float:
        return now + min(max(ttl, self.timing.recheck_min), self.timing.recheck_max)

    async def _discover(self, domain: str, expired: Entry | None) -> Answer:
        early = self.timing.early_addresses
        if early is None:
            return await self._discover_after(domain, expired, await self.dns.sts_txt(domain))
        host = f"mta-sts.{domain}"
        timer = asyncio.get_running_loop().call_later(early, self.dns.start_addresses, host)
        try:
            txt = await self.dns.sts_txt(domain)
            timer.cancel()
            return await self._discover_after(domain, expired, txt)
        finally:
            timer.cancel()
            self.dns.forget_addresses(host)  # unless the fetch took it

    async def _discover_after(self, domain: str, expired: Entry | None, txt: TxtLookup) -> Answer:
        now = self.clock()
        if txt.error is not None:
            self.cache.set_no_policy(domain, now + self.timing.dns_error_ttl)
            return Answer(Kind.NO_POLICY, domain, reason=txt.error)
        found = parse_txt(list(txt.records))
        if found.record is None:
            ttl = min(max(txt.ttl, self.timing.negative_min), self.timing.negative_max)
            self.cache.set_no_policy(domain, now + ttl)
            if expired is not None:
                self.cache.drop(domain)
            return Answer(Kind.NO_POLICY, domain, reason=found.reason)
        return await self._fetch(domain, found.record.id, expired, txt.ttl)

    async def _fetch(self, domain: str, policy_id: str, previous: Entry | None, ttl: int) -> Answer:
        now = self.clock()
        failed_at = self._failures.get((domain, policy_id))
        if failed_at is not None and now - failed_at < self.timing.retry_after:
            return self._fallback(domain, previous, now, "fetch failed recently")
        retry = self.timing.retry_after
        async with self.shared.fetching(domain, policy_id, previous, now, retry) as step:
            if step.adopt is not None:
                return self._adopt(step.adopt, previous)
            if step.failed_elsewhere:
                self._failures.put((domain, policy_id), now)
                return self._fallback(domain, previous, now, "fetch failed recently (shared)")
            try:
                body = await self.fetcher.fetch(domain)
                policy = checked_policy(body)
            except FetchError as exc:
                step.failed = True
                return self._failed(domain, policy_id, previous, exc.result_type, exc.reason)
            except PolicyError as exc:
                step.failed = True
                return self._failed(domain, policy_id, previous, "sts-policy-invalid", str(exc))
            self._failures.pop((domain, policy_id))
            now = self.clock()
            looked_up = now if previous is None else previous.looked_up_at
            entry = Entry(
                domain, policy_id, policy, body, now, now, looked_up, self._recheck_at(now, ttl)
            )
            step.fetched = entry
            self.cache.put(entry)
            self._log_change(previous, entry)
            return Answer(Kind.POLICY, domain, policy, policy_id)

    def _adopt(self, entry: Entry, previous: Entry | None) -> Answer:
        """Take a policy another node fetched (its fetched_at kept: max_age runs from then);
        its TXT id is checked by this node after recheck_min."""
        now = self.clock()
        looked_up = now if previous is None else previous.looked_up_at
        entry = replace(entry, looked_up_at=looked_up, recheck_at=now + self.timing.recheck_min)
        self.cache.put(entry)
        if previous is not None:
            self._log_change(previous, entry)
        return Answer(Kind.POLICY, entry.domain, entry.policy, entry.policy_id)

    def _failed(
        self, domain: str, policy_id: str, previous: Entry | None, result_type: str, reason: str
    ) -> Answer:
        now = self.clock()
        self._failures.put((domain, policy_id), now)
        usable = previous is not None and now < previous.expires_at
        self.emit(
            FetchFailed(
                **_fields(domain, previous),
                policy_id=policy_id,
                result_type=result_type,
                reason=reason,
                cached_policy_applied=usable,
            )
        )
        return self._fallback(domain, previous, now, reason)

    def _fallback(self, domain: str, previous: Entry | None, now: float, reason: str) -> Answer:
        if previous is not None and now < previous.expires_at:
            return Answer(Kind.POLICY, domain, previous.policy, previous.policy_id)
        return Answer(Kind.NO_POLICY, domain, reason=reason)

    def _log_change(self, previous: Entry | None, entry: Entry) -> None:
        if previous is None:
            self.emit(PolicyFetched(**_fields(entry.domain, entry), policy_id=entry.policy_id))
            return
        changes: dict[str, tuple[object, object]] = {
            name: (old, new)
            for name, old, new in (
                ("policy_id", previous.policy_id, entry.policy_id),
                ("mode", str(previous.policy.mode), str(entry.policy.mode)),
                ("mx", tuple(previous.policy.mx), tuple(entry.policy.mx)),
                ("max_age", previous.policy.max_age, entry.policy.max_age),
            )
            if old != new
        }
        if changes:
            self.emit(
                PolicyChanged(
                    **_fields(entry.domain, entry), policy_id=entry.policy_id, changes=changes
                )
            )

    async def _recheck(self, entry: Entry) -> None:
        txt = await self.dns.sts_txt(entry.domain)
        found = parse_txt(list(txt.records)) if txt.error is None else None
        # §3.1/§5.1: a missing or broken TXT record does not drop a cached policy.
        if found is None or found.record is None or found.record.id == entry.policy_id:
            now = self.clock()
            ttl = txt.ttl if found is not None else int(self.timing.dns_error_ttl)
            current = self.cache.peek(entry.domain) or entry
            self.cache.checked(current, now, self._recheck_at(now, ttl))
            return
        await self._fetch(entry.domain, found.record.id, entry, txt.ttl)
        after = self.cache.peek(entry.domain)
        if after is not None and after.policy_id == entry.policy_id:
            # The new id's policy could not be fetched: ask again soon, not on every hit.
            now = self.clock()
            self.cache.checked(after, now, now + self.timing.recheck_min)

    async def refresh(self, entry: Entry) -> None:
        """Proactive refresh (§3.3, §10.2): fetch again regardless of the TXT id."""
        txt = await self.dns.sts_txt(entry.domain)
        found = parse_txt(list(txt.records)) if txt.error is None else None
        policy_id = found.record.id if found and found.record else entry.policy_id
        answer = await self._fetch(entry.domain, policy_id, entry, txt.ttl)
        fresh = self.cache.get(entry.domain)
        if fresh is not None and fresh.fetched_at > entry.fetched_at:
            return
        if entry.policy.mode is not Mode.NONE:
            self.emit(
                RefreshFailed(
                    **_fields(entry.domain, entry),
                    policy_id=entry.policy_id,
                    expires_at=entry.expires_at,
                    reason=answer.reason or "refresh failed",
                )
            )

    def due_for_refresh(self, now: float) -> list[Entry]:
        """Policies to fetch again now: half-way to expiry (or daily), and only for domains
        looked up within the refresh window (privacy: no traffic for forgotten domains)."""
        due = []
        for entry in self.cache.entries():
            every = min(self.timing.refresh_every, entry.policy.max_age / 2)
            window = self.timing.refresh_window or entry.policy.max_age
            if (
                now < entry.expires_at
                and now - entry.fetched_at >= every
                and now - entry.looked_up_at <= window
            ):
                due.append(entry)
        return due

    async def refresh_loop(self, interval: float = 600.0, concurrency: int = 10) -> None:
        limit = asyncio.Semaphore(concurrency)

        async def one(entry: Entry) -> None:
            async with limit:
                await self.refresh(entry)

        while True:
            now = self.clock()
            self.cache.purge_expired(now)
            await asyncio.gather(*(one(e) for e in self.due_for_refresh(now)))
            await asyncio.sleep(interval)

    def _spawn(self, domain: str, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run start() in the background unless one is under way for `domain` (then nothing
        is built: a busy domain's hits call this on every lookup until the re-check ends)."""
        if domain in self._background:
            return
        task = asyncio.ensure_future(start())
        self._background[domain] = task
        task.add_done_callback(lambda _: self._background.pop(domain, None))

    async def settle(self) -> None:
        """Wait for the background TXT re-checks under way (for tests and shutdown)."""
        while self._background:
            await asyncio.gather(*self._background.values())


def _with_dane(answer: Answer, status: Dane) -> Answer:
    """RFC 8461 §2: never override DANE; and do not guess when DNSSEC cannot be read."""
    if status is Dane.PRESENT:
        return Answer(
            Kind.DANE, answer.domain, answer.policy, answer.policy_id, "DANE TLSA present"
        )
    if status is Dane.ERROR:
        return Answer(Kind.TEMP, answer.domain, reason=f"DNSSEC status of {answer.domain} unknown")
    return answer


class _Fields(TypedDict):
    domain: str
    mode: str | None
    mx: tuple[str, ...] | None


def _fields(domain: str, entry: Entry | None) -> _Fields:
    return {
        "domain": domain,
        "mode": str(entry.policy.mode) if entry else None,
        "mx": tuple(entry.policy.mx) if entry else None,
    }
