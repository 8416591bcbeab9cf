"""The [dkim] table and the checker the pipeline holds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tlsrpt_lmtp.configfields import ConfigError, choice, names, read, read_table, read_value
from tlsrpt_lmtp.core.dkim import (
    DkimPolicy,
    DkimResult,
    KeyLookup,
    MessageVerdict,
    SignatureCheck,
)
from tlsrpt_lmtp.ingest.dkim.batch import DEFAULT_BUDGETS, Budgets, Clock, verify_batch
from tlsrpt_lmtp.ingest.dkim.keys import DnsKeyLookup, KeyCache, make_resolver
from tlsrpt_lmtp.net.dns import parse_nameserver

# --------------------------------------------------------------------------------------------
# configuration: the [dkim] table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DkimConfig:
    """``[dkim]``: policy, and where and how long to look for keys."""

    policy: DkimPolicy = DkimPolicy.VERIFY
    # empty: /etc/resolv.conf
    nameservers: tuple[str, ...] = field(default=(), metadata=read(names(str.strip)))
    timeout: float = 5.0
    strict_service_type: bool = False  # true: only keys with s=tlsrpt count
    min_key_bits: int = 1024
    cache_size: int = 1000
    cache_max_ttl: float = 3600.0
    failure_cache_ttl: float = 60.0  # a failed lookup (timeout, SERVFAIL) is remembered this long
    message_budget: float = 10.0  # seconds of DKIM work per message, then temperror
    batch_budget: float = 30.0  # the same for a whole stage 2 batch


def load_dkim_config(path: Path | None, *, policy: str | None = None) -> DkimConfig:
    """The ``[dkim]`` table of the config file (defaults without a file or a table);
    ``policy`` (a command-line flag) wins over the file's."""
    values = read_table(path, "dkim", DkimConfig)
    if policy is not None:
        values["policy"] = read_value(choice(DkimPolicy), policy, "--dkim-policy")
    config = DkimConfig(**values)
    positive = ("timeout", "min_key_bits", "message_budget", "batch_budget")
    if any(not getattr(config, key) > 0 for key in positive):  # "not >": NaN is refused too
        raise ConfigError(f"[dkim] {', '.join(positive)} must be positive")
    if any(not v >= 0 for v in (config.cache_size, config.cache_max_ttl, config.failure_cache_ttl)):
        raise ConfigError(
            "[dkim] cache_size, cache_max_ttl and failure_cache_ttl must not be negative"
        )
    if config.message_budget > config.batch_budget:
        raise ConfigError("[dkim] message_budget must not exceed batch_budget")
    for ns in config.nameservers:
        try:
            parse_nameserver(ns)
        except ValueError:
            raise ConfigError(f"[dkim] nameservers: invalid address {ns!r}") from None
    return config


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
    resolver = make_resolver(config.nameservers, config.timeout)
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
