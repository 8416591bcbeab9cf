"""A policy cache shared by several policy daemons (Redis or PostgreSQL), behind each node's
in-process cache: one interface (base.Backend), one file per backend, the rules in tier.py."""

from __future__ import annotations

from collections.abc import Callable

from tlsrpt_lmtp.config import cache_backend
from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.sts.policy import StsPolicy
from tlsrpt_lmtp.sts.shared.base import Backend
from tlsrpt_lmtp.sts.shared.tier import SharedTier


def open_backend(url: str, timeout: float) -> Backend:
    """The backend for ``url`` (its client library is imported only when used)."""
    kind = cache_backend(url)
    try:
        if kind == "redis":
            from tlsrpt_lmtp.sts.shared.redis import RedisBackend

            return RedisBackend(url, timeout)
        if kind == "postgresql":
            from tlsrpt_lmtp.sts.shared.postgres import PostgresBackend

            return PostgresBackend(url)
    except ImportError as exc:
        extra = "redis" if kind == "redis" else "postgres"
        raise ValueError(
            f"the {kind} policy cache needs the Python package {exc.name}"
            f" (pip install 'tlsrpt-lmtp[{extra}]')"
        ) from None
    raise ValueError(f"policy cache URL {url.split('@')[-1]!r} is not redis:// or postgresql://")


def shared_tier(
    url: str, emit: Callable[[Event], None], parse: Callable[[bytes], StsPolicy], timeout: float
) -> SharedTier:
    """The tier for ``[policy] cache`` (an empty URL: no shared cache)."""
    backend = open_backend(url, timeout) if url else None
    return SharedTier(backend, emit, parse=parse, timeout=timeout)
