"""The checker the pipeline holds, built from the [dkim] table (ingest/dkimconfig.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import dns.resolver

from tlsrpt_lmtp.core.dkim import (
    DkimResult,
    KeyLookup,
    MessageVerdict,
    SignatureCheck,
)
from tlsrpt_lmtp.core.dkimpolicy import DkimPolicy
from tlsrpt_lmtp.ingest.dkim.batch import DEFAULT_BUDGETS, Budgets, Clock, verify_batch
from tlsrpt_lmtp.ingest.dkim.keys import DnsKeyLookup, KeyCache
from tlsrpt_lmtp.ingest.dkimconfig import DkimConfig, load_dkim_config
from tlsrpt_lmtp.net.dns import make_resolver

__all__ = ["DkimChecker", "DkimConfig", "build_checker", "checker_from_file", "load_dkim_config"]


class DkimChecker:
    """What the pipeline holds: the policy and a verifier with its key lookup."""

    def __init__(
        self,
        lookup: KeyLookup,
        *,
        policy: DkimPolicy = DkimPolicy.VERIFY,
        strict_service_type: bool = False,
        min_key_bits: int = 1024,
        budgets: Budgets = DEFAULT_BUDGETS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.policy = policy
        self.strict_service_type = strict_service_type
        self.min_key_bits = min_key_bits
        self.budgets = budgets
        self.clock = clock

    @property
    def enforcing(self) -> bool:
        return self.policy is DkimPolicy.ENFORCE

    def verify(self, raw: bytes) -> MessageVerdict:
        """Never raises: a bug here must not lose the report (it is a fail, never a pass)."""
        return self.verify_many([raw])[0]

    def verify_many(self, raws: Sequence[bytes]) -> list[MessageVerdict]:
        """One verdict per message, in order: the keys of the whole batch are fetched at once,
        within the budgets (see batch.py). Never raises; a bug while verifying the batch is
        retried message by message, so it costs only the message that causes it."""
        try:
            return self._verify(raws)
        except Exception as exc:
            if len(raws) == 1:
                return [_broken(exc)]
        verdicts = []
        for raw in raws:
            try:
                verdicts.extend(self._verify([raw]))
            except Exception as exc:
                verdicts.append(_broken(exc))
        return verdicts

    def _verify(self, raws: Sequence[bytes]) -> list[MessageVerdict]:
        return verify_batch(
            raws,
            self.lookup,
            strict_service_type=self.strict_service_type,
            min_key_bits=self.min_key_bits,
            budgets=self.budgets,
            clock=self.clock,
        )


def _broken(exc: Exception) -> MessageVerdict:
    reason = f"verification error: {exc!r}"
    return MessageVerdict((SignatureCheck(None, None, DkimResult.FAIL, reason),))


def build_checker(config: DkimConfig) -> DkimChecker | None:
    """None when the policy is off (the pipeline then skips DKIM altogether)."""
    if config.policy is DkimPolicy.OFF:
        return None
    cache = KeyCache(config.cache_size, config.cache_max_ttl)
    resolver = make_resolver(dns.resolver.Resolver, config.nameservers, config.timeout)
    lookup = DnsKeyLookup(resolver, cache, failure_ttl=config.failure_cache_ttl)
    return DkimChecker(
        lookup,
        policy=config.policy,
        strict_service_type=config.strict_service_type,
        min_key_bits=config.min_key_bits,
        budgets=Budgets(config.message_budget, config.batch_budget),
    )


def checker_from_file(path: Path | None, *, policy: str | None = None) -> DkimChecker | None:
    """The ``[dkim]`` table of ``path`` (or the defaults) → the pipeline's checker (None when
    the policy is off). Raises ConfigError for a bad table."""
    return build_checker(load_dkim_config(path, policy=policy))
