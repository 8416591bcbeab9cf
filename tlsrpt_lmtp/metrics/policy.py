"""The policy daemon's instruments: requests by map and answer with cache hits and misses
(PolicyRequests, fed by the socket adapters), fetches by outcome and RFC 8460 result type,
DNS and fetch latency, cache size.

They wrap the service's collaborators from outside (``instrument``), so that the service
itself carries no metrics code: the fetcher is replaced by a timing one, and the DNS
client's lookups are timed where the service calls them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tlsrpt_lmtp.metrics.labels import MAX_LABEL_LENGTH, OTHER
from tlsrpt_lmtp.sts.fetch import FetchError
from tlsrpt_lmtp.sts.policy import Mode, PolicyError, parse_policy
from tlsrpt_lmtp.sts.reply import Answer, Kind
from tlsrpt_lmtp.sts.service import PolicyFetcher, PolicyService

DNS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class TimedFetcher:
    """A PolicyFetcher that counts and times each HTTPS fetch. A body that will not parse
    is the failure ``sts-policy-invalid``, as the service reports it (it is parsed here a
    second time: fetches are rare and policies at most 64 KiB)."""

    def __init__(self, inner: PolicyFetcher, fetches: Counter, seconds: Histogram) -> None:
        self._inner = inner
        self._fetches = fetches
        self._seconds = seconds

    async def fetch(self, domain: str) -> bytes:
        start = time.perf_counter()
        try:
            body = await self._inner.fetch(domain)
        except FetchError as exc:
            self._fetches.labels("failure", exc.result_type).inc()
            raise
        finally:
            self._seconds.observe(time.perf_counter() - start)
        try:
            parse_policy(body)
        except PolicyError:
            self._fetches.labels("failure", "sts-policy-invalid").inc()
        else:
            self._fetches.labels("success", "").inc()
        return body


def _timed(
    func: Callable[..., Awaitable[Any]], seconds: Histogram, query: str
) -> Callable[..., Awaitable[Any]]:
    child = seconds.labels(query)

    @functools.wraps(func)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await func(*args, **kwargs)
        finally:
            child.observe(time.perf_counter() - start)

    return timed


class CacheSize(Collector):
    def __init__(self, service: PolicyService) -> None:
        self._cache = service.cache

    def collect(self) -> Iterable[Metric]:
        memory = getattr(self._cache, "_mem", None)  # the in-memory LRU (no SQLite here)
        yield GaugeMetricFamily(
            "tlsrpt_policy_cache_entries",
            "Policies held in memory",
            value=len(memory) if memory is not None else 0,
        )
        yield GaugeMetricFamily(
            "tlsrpt_policy_cache_capacity",
            "Policies the memory cache holds at most",
            value=self._cache.size,
        )


def instrument(service: PolicyService, registry: CollectorRegistry) -> None:
    fetches = Counter(
        "tlsrpt_policy_fetches",
        "Policy fetches (HTTPS) by outcome and RFC 8460 result type",
        ["outcome", "result_type"],
        registry=registry,
    )
    fetch_seconds = Histogram(
        "tlsrpt_policy_fetch_duration_seconds",
        "Time of a policy fetch (address lookup, TLS, HTTP)",
        buckets=FETCH_BUCKETS,
        registry=registry,
    )
    dns_seconds = Histogram(
        "tlsrpt_policy_dns_duration_seconds",
        "Time of the service's DNS lookups (_mta-sts TXT, TLSA for DANE)",
        ["query"],
        buckets=DNS_BUCKETS,
        registry=registry,
    )
    service.fetcher = TimedFetcher(service.fetcher, fetches, fetch_seconds)
    # Instance attributes shadow the methods: the service's calls are timed, DnsClient is not
    # touched.
    setattr(service.dns, "sts_txt", _timed(service.dns.sts_txt, dns_seconds, "txt"))  # noqa: B010
    setattr(service.dns, "dane", _timed(service.dns.dane, dns_seconds, "tlsa"))  # noqa: B010
    registry.register(CacheSize(service))


_POLICY, _NO_POLICY, _DANE = Kind.POLICY, Kind.NO_POLICY, Kind.DANE
_ENFORCE, _TESTING = Mode.ENFORCE, Mode.TESTING
ANSWERS = ("secure", "notfound", "dane", "temp")


class PolicyRequests(Collector):
    """The policy daemon's hot path (bench/metrics_bench.py): ``add`` runs for every request,
    in the daemon's one asyncio thread. It counts into a list of four ints per map name, with
    identity checks only (an Enum member hashes in Python code), no tuple, no lock; labels are
    made at scrape time. At most ``limit`` distinct map names (first seen first), then
    ``other``. Hits are the requests that were not misses."""

    def __init__(self, limit: int = 32) -> None:
        self._limit = min(limit, 32)
        self._maps: dict[str, list[int]] = {}
        self._misses = 0

    def add(self, map_name: str, answer: Answer, enforce_testing: bool, hit: bool) -> None:
        """Count one answer as ANSWERS[i]: ``secure`` (an enforced policy), ``notfound``,
        ``dane`` (left to the MTA's DANE) or ``temp``."""
        counts = self._maps.get(map_name)
        if counts is None:
            counts = self._new(map_name)
        kind = answer.kind
        if kind is _POLICY:
            policy = answer.policy
            enforced = policy is not None and (
                policy.mode is _ENFORCE or (enforce_testing and policy.mode is _TESTING)
            )
            counts[0 if enforced else 1] += 1
        elif kind is _NO_POLICY:
            counts[1] += 1
        else:
            counts[2 if kind is _DANE else 3] += 1
        if not hit:
            self._misses += 1

    def _new(self, map_name: str) -> list[int]:
        name = map_name[:MAX_LABEL_LENGTH] if len(self._maps) < self._limit else OTHER
        counts = self._maps.get(name)
        if counts is None:
            counts = self._maps[name] = [0] * len(ANSWERS)
        return counts

    def collect(self) -> Iterable[Metric]:
        totals = {
            (name, ANSWERS[code]): n
            for name, counts in list(self._maps.items())
            for code, n in enumerate(list(counts))
            if n
        }
        requests = CounterMetricFamily(
            "tlsrpt_policy_requests", "Policy lookups answered", labels=["map", "answer"]
        )
        for labels, n in sorted(totals.items()):
            requests.add_metric(list(labels), n)
        misses = self._misses
        hits = sum(totals.values()) - misses
        yield requests
        yield CounterMetricFamily(
            "tlsrpt_policy_cache_hits", "Lookups answered from memory, without I/O", value=hits
        )
        yield CounterMetricFamily(
            "tlsrpt_policy_cache_misses", "Lookups that needed DNS, HTTPS or the disk", value=misses
        )
