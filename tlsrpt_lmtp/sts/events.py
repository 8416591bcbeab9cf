"""The policy daemon's events (docs/events.md, ``tlsrpt-lmtp policy serve``), each one frozen
type (see core/eventbase.py). They carry no ``event_id``: they are a log of what the daemon
did, not records a SIEM must count exactly once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from tlsrpt_lmtp.core.events import Event


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyEvent(Event):
    """The fields every ``sts.*`` event starts with: the domain and its cached policy (null
    when there is none)."""

    domain: str
    mode: str | None
    mx: tuple[str, ...] | None
    policy_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyFetched(PolicyEvent):
    EVENT: ClassVar[str] = "sts.policy_fetched"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyChanged(PolicyEvent):
    EVENT: ClassVar[str] = "sts.policy_changed"

    changes: Mapping[str, tuple[object, object]]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchFailed(PolicyEvent):
    EVENT: ClassVar[str] = "sts.fetch_error"

    result_type: str
    reason: str
    cached_policy_applied: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedCacheUnavailable(Event):
    """The shared policy cache failed or did not answer (sts/shared/tier.py); it carries none
    of the policy fields."""

    EVENT: ClassVar[str] = "sts.shared_cache_unavailable"

    backend: str
    server: str
    domain: str
    reason: str
    retry_in_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedCacheRestored(Event):
    EVENT: ClassVar[str] = "sts.shared_cache_restored"

    backend: str
    server: str
    unavailable_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshFailed(PolicyEvent):
    EVENT: ClassVar[str] = "sts.refresh_failed"

    expires_at: float
    reason: str
