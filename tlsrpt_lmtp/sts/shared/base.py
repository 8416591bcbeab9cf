"""What a shared policy cache backend does, and the record it stores (sans-I/O parts).

A backend (redis.py, postgres.py) stores, per policy domain, the newest fetched policy (its
TXT id, the body as fetched, when it was fetched), a per-(domain, id) "fetch failed" marker
with an expiry, and a per-domain fetch lease. Backends move bytes and enforce "newer wins"
atomically; everything they return is untrusted: the tier (tier.py) re-parses and bounds it.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from tlsrpt_lmtp.sts.policy import MAX_POLICY_SIZE

POLICY_ID = re.compile(r"[A-Za-z0-9]{1,32}")  # RFC 8461 §3.1 sts-id
MAX_DOMAIN = 253
MAX_RECORD = MAX_POLICY_SIZE + 128  # header line + body: what a backend may hand back
MAX_SKEW = 300.0  # a record "fetched" further in the future than this is not believed


class BackendError(Exception):
    """The shared cache could not be reached or did not answer in time."""


@dataclass(frozen=True, slots=True)
class SharedPolicy:
    domain: str
    policy_id: str
    body: bytes
    fetched_at: float  # Unix time on the fetching node
    expires_at: float  # fetched_at + the policy's max_age


class Backend(ABC):
    """One shared store. Every method may raise BackendError (unreachable, timed out)."""

    kind: str  # "redis", "postgresql": for events
    server: str  # host:port or socket path, never credentials

    @abstractmethod
    async def get(self, domain: str) -> bytes | None:
        """The record (``encode``) stored for ``domain``, at most MAX_RECORD + 1 bytes."""

    @abstractmethod
    async def put(self, policy: SharedPolicy, record: bytes, now: float) -> bool:
        """Store ``record`` unless the stored one was fetched at or after ``policy.fetched_at``
        (atomically) and not implausibly later than ``now`` (MAX_SKEW: such a record, which
        no reader believes, must not block every write); keep it until ``policy.expires_at``.
        True if stored."""

    @abstractmethod
    async def failed(self, domain: str, policy_id: str) -> bool:
        """Is a "fetch failed" marker for (domain, id) still in force?"""

    @abstractmethod
    async def mark_failed(self, domain: str, policy_id: str, seconds: float) -> None:
        """Set the marker for ``seconds`` (never touches the stored policy)."""

    @abstractmethod
    async def claim(self, domain: str, token: str, seconds: float) -> bool:
        """Take the domain's fetch lease for at most ``seconds``, unless another holds it."""

    @abstractmethod
    async def release(self, domain: str, token: str) -> None:
        """Give the lease back if ``token`` still holds it."""

    @abstractmethod
    async def reset(self) -> None:
        """Drop the connection (after an error or a timeout): the next call reconnects."""

    @abstractmethod
    async def close(self) -> None: ...


def encode(policy: SharedPolicy) -> bytes:
    """``1 <fetched_at> <expires_at> <id>\\n`` then the policy body as fetched."""
    head = f"1 {policy.fetched_at!r} {policy.expires_at!r} {policy.policy_id}\n"
    return head.encode("ascii") + policy.body


def decode(domain: str, record: bytes) -> SharedPolicy | None:
    """The record back, or None if it is not one this version wrote (wrong shape, too large,
    a bad id or time). The body is not parsed here."""
    if len(record) > MAX_RECORD:
        return None
    head, newline, body = record.partition(b"\n")
    if not newline or len(body) > MAX_POLICY_SIZE:
        return None
    parts = head.split(b" ")
    if len(parts) != 4 or parts[0] != b"1":
        return None
    try:
        fetched_at, expires_at = float(parts[1]), float(parts[2])
        policy_id = parts[3].decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    if not (math.isfinite(fetched_at) and math.isfinite(expires_at)):
        return None
    if not 0 < fetched_at <= expires_at or not POLICY_ID.fullmatch(policy_id):
        return None
    return SharedPolicy(domain, policy_id, body, fetched_at, expires_at)
