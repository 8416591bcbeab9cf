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
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tlsrpt_lmtp.config import ConfigError, read_toml
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


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    enabled: bool = True
    rules: tuple[str, ...] = RULES
    repeat_window: timedelta = timedelta(hours=24)
    failure_rate: float = 0.05
    failure_rate_min_sessions: int = 10
    result_types: tuple[str, ...] = ACTIONABLE
    ignore_domains: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()  # the operator's policy domains; () alerts for any domain
    require_dkim_aligned: bool = False
    max_alerts_per_report: int = 10
    max_alerts_per_period: int = 30  # per alert_period, for DKIM-aligned reports and the rest
    alert_period: timedelta = timedelta(hours=1)
    queue_size: int = 100
    webhook_url: str = ""
    webhook_headers: tuple[tuple[str, str], ...] = ()
    webhook_timeout: float = 10.0
    webhook_retries: int = 3
    webhook_backoff: float = 1.0
    webhook_min_severity: str = "warning"
    mail_to: tuple[str, ...] = ()
    mail_from: str = ""
    sendmail: str = "/usr/sbin/sendmail"
    mail_timeout: float = 30.0
    mail_min_severity: str = "warning"


_KEYS = {f.name for f in fields(AlertsConfig)}
_LABEL = r"[^\s*/@:.\\]+"
_DOMAIN_PATTERN = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


def load_alerts(path: Path | None) -> AlertsConfig:
    """Defaults, overridden by the [alerts] table of ``path`` (other tables are not read here)."""
    if path is None:
        return AlertsConfig()
    doc = read_toml(path)
    table = doc.get("alerts", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [alerts] must be a table")
    return parse_alerts(table, where=f"{path}: [alerts]")


def parse_alerts(table: dict[str, Any], *, where: str = "[alerts]") -> AlertsConfig:
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}")
        try:
            values[key] = _coerce(key, value)
        except (TypeError, ValueError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise ConfigError(f"{where}: invalid value for {key}: {value!r}{detail}") from None
    config = replace(AlertsConfig(), **values)
    _check(config, where)
    return config


def _coerce(key: str, value: Any) -> Any:
    kind = type(getattr(AlertsConfig(), key))
    if key in ("repeat_window", "alert_period"):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return timedelta(seconds=value)
        if isinstance(value, str):
            return parse_duration(value)
        raise ValueError("seconds, or a duration such as 24h")
    if key == "webhook_headers":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError("a table of strings")
        if any(c in "\r\n" for item in value.items() for part in item for c in part):
            raise ValueError("line breaks are not allowed in headers")
        return tuple((str(k), v) for k, v in value.items())
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError
        if kind is int and value != int(value):
            raise ValueError("an integer")
        return kind(value)
    if kind is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ValueError("a list of strings")
        if key in ("ignore_domains", "domains"):  # compared with policy domains: same form
            return tuple(canonical(v) for v in items)
        lower = key != "mail_to"
        return tuple(v.strip().lower().rstrip(".") if lower else v.strip() for v in items)
    if not isinstance(value, str):
        raise TypeError
    return value.strip().lower() if key.endswith("_severity") else value.strip()


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
