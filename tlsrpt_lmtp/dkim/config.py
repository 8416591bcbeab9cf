"""The [dkim] table and the checker the pipeline holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tlsrpt_lmtp.config import ConfigError, read_table
from tlsrpt_lmtp.dkim.keys import DnsKeyLookup, KeyCache, make_resolver
from tlsrpt_lmtp.dkim.verify import (
    DkimPolicy,
    DkimResult,
    KeyLookup,
    MessageVerdict,
    SignatureCheck,
    verify_message,
)
from tlsrpt_lmtp.dnsutil import parse_nameserver

# --------------------------------------------------------------------------------------------
# configuration: the [dkim] table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DkimConfig:
    """``[dkim]``: policy, and where and how long to look for keys."""

    policy: DkimPolicy = DkimPolicy.VERIFY
    nameservers: tuple[str, ...] = ()  # empty: /etc/resolv.conf
    timeout: float = 5.0
    strict_service_type: bool = False  # true: only keys with s=tlsrpt count
    min_key_bits: int = 1024
    cache_size: int = 1000
    cache_max_ttl: float = 3600.0


_KINDS = {
    "policy": "str",
    "nameservers": "tuple[str, ...]",
    "timeout": "float",
    "strict_service_type": "bool",
    "min_key_bits": "int",
    "cache_size": "int",
    "cache_max_ttl": "float",
}


def load_dkim_config(path: Path | None, *, policy: str | None = None) -> DkimConfig:
    """The ``[dkim]`` table of the config file (defaults without a file or a table);
    ``policy`` (a command-line flag) wins over the file's."""
    values = read_table(path, "dkim", _KINDS)
    given = values.pop("policy", DkimPolicy.VERIFY.value)
    policy = str(policy if policy is not None else given).lower()
    if policy not in DkimPolicy.__members__.values():
        choices = ", ".join(repr(p.value) for p in DkimPolicy)
        raise ConfigError(f"[dkim] policy must be one of {choices}, not {policy!r}")
    config = DkimConfig(policy=DkimPolicy(policy), **values)
    if config.timeout <= 0 or config.min_key_bits <= 0:
        raise ConfigError("[dkim] timeout and min_key_bits must be positive")
    if config.cache_size < 0 or config.cache_max_ttl < 0:
        raise ConfigError("[dkim] cache_size and cache_max_ttl must not be negative")
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
    ) -> None:
        self.lookup = lookup
        self.policy = policy
        self.strict_service_type = strict_service_type
        self.min_key_bits = min_key_bits

    @property
    def enforcing(self) -> bool:
        return self.policy is DkimPolicy.ENFORCE

    def verify(self, raw: bytes) -> MessageVerdict:
        """Never raises: a bug here must not lose the report (it is a fail, never a pass)."""
        try:
            return verify_message(
                raw,
                self.lookup,
                strict_service_type=self.strict_service_type,
                min_key_bits=self.min_key_bits,
            )
        except Exception as exc:
            reason = f"verification error: {exc!r}"
            return MessageVerdict((SignatureCheck(None, None, DkimResult.FAIL, reason),))


def build_checker(config: DkimConfig) -> DkimChecker | None:
    """None when the policy is off (the pipeline then skips DKIM altogether)."""
    if config.policy is DkimPolicy.OFF:
        return None
    cache = KeyCache(config.cache_size, config.cache_max_ttl)
    lookup = DnsKeyLookup(make_resolver(config.nameservers, config.timeout), cache)
    return DkimChecker(
        lookup,
        policy=config.policy,
        strict_service_type=config.strict_service_type,
        min_key_bits=config.min_key_bits,
    )


def checker_from_file(path: Path | None, *, policy: str | None = None) -> DkimChecker | None:
    """The ``[dkim]`` table of ``path`` (or the defaults) → the pipeline's checker (None when
    the policy is off). Raises ConfigError for a bad table."""
    return build_checker(load_dkim_config(path, policy=policy))
