"""``[dkim]``: the policy, and where and how long to look for keys.

Apart from the checker (ingest/dkim/, which needs dkimpy and dnspython), so that every command
can check this table of the config file without loading the verifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tlsrpt_lmtp.configfields import ConfigError, choice, names, read, read_table, read_value
from tlsrpt_lmtp.core.dkimpolicy import DkimPolicy


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
    from tlsrpt_lmtp.net.dns import parse_nameserver  # dnspython: slow to import

    for ns in config.nameservers:
        try:
            parse_nameserver(ns)
        except ValueError:
            raise ConfigError(f"[dkim] nameservers: invalid address {ns!r}") from None
    return config
