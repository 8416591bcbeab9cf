"""DKIM key records through dnspython: configurable nameservers and a TTL'd key cache that
remembers failures (timeouts, SERVFAIL) for a short while too, so that an unresponsive key
domain costs one timeout per ``failure_ttl``, not one per message."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.rdatatype
import dns.resolver

from tlsrpt_lmtp.core.dkim import DnsTempError
from tlsrpt_lmtp.net.dns import why

# --------------------------------------------------------------------------------------------
# DNS: dnspython with configurable nameservers and a TTL'd key cache
# --------------------------------------------------------------------------------------------


NEGATIVE_TTL = 60  # seconds an absent key record is remembered
FAILURE_TTL = 60.0  # seconds a failed lookup (timeout, SERVFAIL, ...) is remembered


@dataclass(frozen=True, slots=True)
class KeyFailure:
    """A remembered lookup failure: asking again before it expires gives the same temperror."""

    reason: str


class KeyCache:
    """Lookup outcomes by name (a record, None for "no record", or a KeyFailure), each until its
    TTL (capped at ``max_ttl``) runs out; bounded (LRU); thread-safe."""

    def __init__(
        self,
        size: int = 1000,
        max_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.max_ttl = max_ttl
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes | KeyFailure | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> tuple[bool, bytes | KeyFailure | None]:
        """(found, outcome); found is False when the name is absent or expired."""
        with self._lock:
            item = self._items.get(name)
            if item is None:
                return False, None
            expires, record = item
            if expires <= self._clock():
                del self._items[name]
                return False, None
            self._items.move_to_end(name)
            return True, record

    def put(self, name: str, record: bytes | KeyFailure | None, ttl: float) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[name] = (self._clock() + min(max(ttl, 0.0), self.max_ttl), record)
            self._items.move_to_end(name)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class DnsKeyLookup:
    """The real KeyLookup: TXT queries through ``resolver``, answers kept in ``cache``."""

    def __init__(
        self,
        resolver: dns.resolver.Resolver,
        cache: KeyCache | None = None,
        *,
        failure_ttl: float = FAILURE_TTL,
    ) -> None:
        self._resolver = resolver
        self.cache = cache if cache is not None else KeyCache()
        self.failure_ttl = failure_ttl

    def __call__(self, name: str) -> bytes | None:
        key = query_name(name)
        found, record = self.cache.get(key)
        if found:
            if isinstance(record, KeyFailure):
                again = f"remembered: not asked again for {self.failure_ttl:g} s"
                raise DnsTempError(f"{record.reason} ({again})")
            return record
        try:
            answer = self._resolver.resolve(
                key, dns.rdatatype.TXT, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            self.cache.put(key, None, NEGATIVE_TTL)
            return None
        except dns.exception.DNSException as exc:
            reason = f"DNS lookup of {key.rstrip('.')} failed: {why(exc)}"
            self.cache.put(key, KeyFailure(reason), self.failure_ttl)
            raise DnsTempError(reason) from None
        if answer.rrset is None:  # the name exists, but has no TXT record
            self.cache.put(key, None, NEGATIVE_TTL)
            return None
        records = [b"".join(rr.strings) for rr in answer.rrset]
        record = next((r for r in records if b"p=" in r), records[0])
        self.cache.put(key, record, answer.rrset.ttl)
        return record


def query_name(name: str) -> str:
    """The cache key of a key record's name: lower case, one trailing dot."""
    return name.rstrip(".").lower() + "."
