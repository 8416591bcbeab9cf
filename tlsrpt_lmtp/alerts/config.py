"""The [alerts] table of the config file, read as strictly as the rest (unknown key: error).

[alerts]
enabled = true
rules = ["enforce-failure", "failure-rate", "new-result-type", "result-type"]
repeat_window = "24h"
failure_rate = 0.05
failure_rate_min_sessions = 10
result_types = ["sts-policy-fetch-error", "sts-webpki-invalid", ...]
ignore_domains = []
domains = []                     # e.g. ["example.org", "*.example.org"]; [] = every domain
require_dkim_aligned = false
max_alerts_per_report = 10
max_alerts_per_period = 30
alert_period = "1h"
queue_size = 100
webhook_url = ""
webhook_headers = {}
webhook_timeout = 10.0
webhook_retries = 3
webhook_backoff = 1.0
webhook_min_severity = "warning"
mail_to = []
mail_from = ""
sendmail = "/usr/sbin/sendmail"
mail_timeout = 30.0
mail_min_severity = "warning"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tlsrpt_lmtp.configfields import (
    ConfigError,
    lowered,
    names,
    read,
    read_table,
    read_values,
    readers,
    stripped,
)
from tlsrpt_lmtp.core.durations import parse_duration
from tlsrpt_lmtp.core.names import canonical

RULES: tuple[str, ...] = ("enforce-failure", "failure-rate", "new-result-type", "result-type")
RULES += ("reporter-silent", "domain-silent", "ready-for-enforce", "mode-none")  # absence.py
SEVERITIES = ("info", "warning", "critical")
ACTIONABLE = (
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
    "certificate-expired",
    "certificate-host-mismatch",
    "certificate-not-trusted",
    "starttls-not-supported",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
)


def _duration(value: Any) -> timedelta:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError("seconds, or a duration such as 24h")


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError("a table of strings")
    if any(c in "\r\n" for item in value.items() for part in item for c in part):
        raise ValueError("a table of strings without line breaks")
    return tuple((str(k), v) for k, v in value.items())


def _token(item: str) -> str:
    return lowered(item).rstrip(".")


def _severity(value: Any) -> str:
    return stripped(value).lower()


_DURATION = read(_duration)
_TOKENS = read(names(_token))
_DOMAINS = read(names(canonical))  # compared with policy domains: the same form
_TEXT = read(stripped)
_SEVERITY = read(_severity)


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    enabled: bool = True
    rules: tuple[str, ...] = field(default=RULES, metadata=_TOKENS)
    repeat_window: timedelta = field(default=timedelta(hours=24), metadata=_DURATION)
    failure_rate: float = 0.05
    failure_rate_min_sessions: int = 10
    result_types: tuple[str, ...] = field(default=ACTIONABLE, metadata=_TOKENS)
    ignore_domains: tuple[str, ...] = field(default=(), metadata=_DOMAINS)
    # the operator's policy domains; () alerts for any domain
    domains: tuple[str, ...] = field(default=(), metadata=_DOMAINS)
    require_dkim_aligned: bool = False
    max_alerts_per_report: int = 10
    max_alerts_per_period: int = 30  # per alert_period, for DKIM-aligned reports and the rest
    alert_period: timedelta = field(default=timedelta(hours=1), metadata=_DURATION)
    queue_size: int = 100
    webhook_url: str = field(default="", metadata=_TEXT)
    webhook_headers: tuple[tuple[str, str], ...] = field(default=(), metadata=read(_headers))
    webhook_timeout: float = 10.0
    webhook_retries: int = 3
    webhook_backoff: float = 1.0
    webhook_min_severity: str = field(default="warning", metadata=_SEVERITY)
    mail_to: tuple[str, ...] = field(default=(), metadata=read(names(str.strip)))
    mail_from: str = field(default="", metadata=_TEXT)
    sendmail: str = field(default="/usr/sbin/sendmail", metadata=_TEXT)
    mail_timeout: float = 30.0
    mail_min_severity: str = field(default="warning", metadata=_SEVERITY)


_LABEL = r"[^\s*/@:.\\]+"
_DOMAIN_PATTERN = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


def load_alerts(path: Path | None) -> AlertsConfig:
    """Defaults, overridden by the [alerts] table of ``path`` (other tables are not read here)."""
    config = AlertsConfig(**read_table(path, "alerts", AlertsConfig))
    _check(config, f"{path}: [alerts]" if path is not None else "[alerts]")
    return config


def parse_alerts(table: dict[str, Any], *, where: str = "[alerts]") -> AlertsConfig:
    """An [alerts] table given as a dict (tests, and tables built in code)."""
    config = AlertsConfig(**read_values(table, readers(AlertsConfig), None, "alerts"))
    _check(config, where)
    return config


def _check(c: AlertsConfig, where: str) -> None:
    unknown = [r for r in c.rules if r not in RULES]
    if unknown:
        raise ConfigError(f"{where}: unknown rule {unknown[0]!r} (rules are {', '.join(RULES)})")
    for name in ("webhook_min_severity", "mail_min_severity"):
        if getattr(c, name) not in SEVERITIES:
            raise ConfigError(f"{where}: {name} must be one of {', '.join(SEVERITIES)}")
    if not 0 <= c.failure_rate <= 1:
        raise ConfigError(f"{where}: failure_rate is a share between 0 and 1, e.g. 0.05")
    if c.failure_rate_min_sessions < 0 or c.webhook_retries < 0:
        raise ConfigError(f"{where}: counts must not be negative")
    if c.max_alerts_per_report < 1 or c.max_alerts_per_period < 1:
        raise ConfigError(f"{where}: max_alerts_per_report and max_alerts_per_period must be >= 1")
    if c.alert_period <= timedelta(0):
        raise ConfigError(f"{where}: alert_period must be positive, e.g. 1h")
    bad_domains = [d for d in c.domains if not _DOMAIN_PATTERN.fullmatch(d)]
    if bad_domains:
        raise ConfigError(
            f"{where}: domains takes names and *.suffix patterns"
            f" (e.g. example.org, *.example.org), not {bad_domains[0]!r}"
        )
    if c.queue_size < 1 or c.webhook_timeout <= 0 or c.mail_timeout <= 0 or c.webhook_backoff < 0:
        raise ConfigError(f"{where}: queue_size and timeouts must be positive")
    if c.webhook_url:
        _check_url(c.webhook_url, where)
    bad = [a for a in c.mail_to if "@" not in a or any(ch in a for ch in "\r\n,<> ")]
    if bad:
        raise ConfigError(f"{where}: mail_to needs plain addresses, not {bad[0]!r}")
    if any(ch in c.mail_from for ch in "\r\n"):
        raise ConfigError(f"{where}: mail_from must be one line")


def _check_url(url: str, where: str) -> None:
    """Only http:// and https:// URLs with a host: urllib would also open file:, ftp: and
    data: URLs, and a host-less URL would fail only at the first alert."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port out of range raises ValueError
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(
            f"{where}: webhook_url must be an http:// or https:// URL with a host, not {url!r}"
        )
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ConfigError(f"{where}: webhook_url must not contain spaces or control characters")
