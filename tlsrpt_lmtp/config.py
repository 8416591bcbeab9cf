"""Settings: embedded defaults, overridden by a TOML file, overridden by command-line flags.

The file has one table per part of the program. Every command reads the whole file through the
same typed readers (configfields.py): an unknown table or key, or a value of the wrong type, is an
error naming the file, the table and the key (a typo must not silently fall back to a default).
This module reads [lmtp], [storage], [log] and [policy]; [dkim], [milter], [alerts] and
[metrics] are read by the modules that own them (and all of them by ``cli.check_config_file``
before any command runs):

    [lmtp]
    listen = "unix:/var/spool/postfix/private/tlsrpt"
    recipients = ["tlsrpt@example.org"]
    max_message_size = 33554432
    max_in_flight = 134217728     # mail held across connections; past it: 452, retry later
    max_connections = 100         # more are answered 421 and closed
    max_connections_per_peer = 50 # per local user (uid) or remote address
    idle_timeout = 120            # seconds without a command or mail data

    [storage]
    data_dir = "/var/lib/tlsrpt-lmtp"
    max_decompressed = 33554432
    max_failure_details = 10000
    database = ""             # "": the SQLite file in data_dir; sqlite:PATH or postgresql://…
    retention = ""            # raw mail: "" keeps it; "400d": deleted 400 days after arrival
    report_retention = ""     # normalised reports: "" keeps them; else at least "90d"

    [log]
    format = "json"          # or "ecs" (Elastic Common Schema, JSON lines), "syslog"
    file = "-"               # json, ecs: "-" (stdout) or a path
    syslog_address = "/dev/log"   # or "udp:HOST:PORT", "tcp:HOST:PORT"
    syslog_format = "auto"        # RFC 3164 on a unix socket, RFC 5424 on udp/tcp; or either
    syslog_framing = "octet-counting"   # on tcp; or "lf"
    syslog_max_size = 8096        # bytes per message; longer events are shortened
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tlsrpt_lmtp.configfields import (
    ConfigError,
    names,
    read,
    read_flags,
    read_toml,
    read_values,
    readers,
    table_of,
)
from tlsrpt_lmtp.core.aggregate import DEFAULT_MAX_FAILURE_DETAILS
from tlsrpt_lmtp.core.decompress import DEFAULT_LIMIT
from tlsrpt_lmtp.output.syslog import SyslogOptions, parse_target

__all__ = ["Config", "ConfigError", "PolicyConfig", "load", "load_policy", "read_toml"]


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/tlsrpt-lmtp")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "tlsrpt-lmtp"


@dataclass(frozen=True, slots=True)
class Config:
    """The [lmtp], [storage] and [log] tables: what serve, parse, reprocess, show, milter,
    summary and digest read."""

    listen: str = "127.0.0.1:24240"
    recipients: tuple[str, ...] = ()
    max_message_size: int = 32 * 1024 * 1024
    max_in_flight: int = 128 * 1024 * 1024
    max_connections: int = 100
    max_connections_per_peer: int = 50
    idle_timeout: float = 120.0
    data_dir: Path = Path()  # replaced by default_data_dir() in load()
    max_decompressed: int = DEFAULT_LIMIT
    max_failure_details: int = DEFAULT_MAX_FAILURE_DETAILS
    database: str = ""  # "": the SQLite file in data_dir; sqlite:PATH or postgresql://…
    retention: str = ""  # raw messages; "" keeps them (ingest/retention.py, docs/retention.md)
    report_retention: str = ""  # normalised reports; "" keeps them
    log_format: str = "json"
    log_file: str = "-"
    syslog_address: str = "/dev/log"
    syslog_format: str = "auto"
    syslog_framing: str = "octet-counting"
    syslog_max_size: int = 8096


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """`tlsrpt-lmtp policy serve|query`: the [policy] table, plus [storage] data_dir and [log]."""

    listen: str = "127.0.0.1:8461"
    exim_listen: str = "127.0.0.1:8462"  # "" turns the Exim line listener off
    # empty: /etc/resolv.conf
    nameservers: tuple[str, ...] = field(default=(), metadata=read(names(str.strip)))
    dane_resolver: str = ""  # a DNSSEC-validating resolver; empty: no DANE check
    ca_file: str = ""  # trust store for policy hosts; empty: the system's
    tlsrpt_maps: tuple[str, ...] = ("sts-tlsrpt",)
    tlsrpt_attributes: bool = False
    enforce_testing: bool = False
    cache_size: int = 10_000
    dns_timeout: float = 5.0
    fetch_timeout: float = 10.0
    # in-memory policies, estimated bytes: a typical one with what its cache hits keep
    # (sts.cache.entry_cost) is about 3 KiB, so cache_size of them fit
    cache_bytes: int = 32 * 1024 * 1024
    max_connections: int = 256  # per listener
    idle_timeout: float = 30.0  # socketmap connections without a request
    refresh_window: float = 0.0  # proactive refresh only if looked up this recently; 0: max_age
    allow_private_policy_hosts: bool = False  # fetch from loopback/private addresses (labs)
    cache: str = ""  # shared policy cache: redis://... or postgresql://...; "": none
    cache_timeout: float = 0.5  # bound on every shared-cache call, seconds
    data_dir: Path = Path()
    log_format: str = "json"
    log_file: str = "-"
    syslog_address: str = "/dev/log"
    syslog_format: str = "auto"
    syslog_framing: str = "octet-counting"
    syslog_max_size: int = 8096


_LOG_KEYS = {"format": "log_format", "file": "log_file"}
_LOG_KEYS |= {
    k: k for k in ("syslog_address", "syslog_format", "syslog_framing", "syslog_max_size")
}
# TOML table → (the section whose fields its keys are, key in table → field)
_TABLES: dict[str, tuple[type, dict[str, str]]] = {
    "lmtp": (
        Config,
        {
            k: k
            for k in (
                "listen",
                "recipients",
                "max_message_size",
                "max_in_flight",
                "max_connections",
                "max_connections_per_peer",
                "idle_timeout",
            )
        },
    ),
    "storage": (
        Config,
        {
            k: k
            for k in (
                "data_dir",
                "database",
                "max_decompressed",
                "max_failure_details",
                "retention",
                "report_retention",
            )
        },
    ),
    "log": (Config, _LOG_KEYS),
    "policy": (
        PolicyConfig,
        {
            f.name: f.name
            for f in fields(PolicyConfig)
            if f.name not in ("data_dir", *_LOG_KEYS.values())
        },
    ),
}
# The tables a command's settings come from (the others are checked, not used).
_USES: dict[type, tuple[str, ...]] = {
    Config: ("lmtp", "storage", "log"),
    PolicyConfig: ("policy", "storage", "log"),
}
T = TypeVar("T", Config, PolicyConfig)
# The tables other modules own: ingest.dkimconfig, ingest.milter.config, alerts.config,
# metrics.config; read with the same readers (configfields.py).
OTHER_TABLES = ("dkim", "milter", "alerts", "metrics")
LOG_FORMATS = ("json", "ecs", "syslog")  # ecs: JSON lines in Elastic Common Schema (ecs.py)


def load(path: Path | None, overrides: dict[str, Any]) -> Config:
    """Defaults, then the file (if any), then the non-None overrides (the flags)."""
    config = _load(Config(), path, overrides)
    _check(config)
    return config


# [policy] cache URL scheme -> the shared policy cache backend (sts/shared/)
POLICY_CACHE_SCHEMES = {
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "postgresql": "postgresql",
    "postgres": "postgresql",
}


def cache_backend(url: str) -> str | None:
    """The backend a [policy] cache URL names ("redis", "postgresql"), None if none (or if
    its host or port cannot be read)."""
    scheme, sep, _ = url.partition("://")
    try:
        if urlsplit(url).port == 0:  # raises for a bracket without its end, a port out of range
            return None
    except ValueError:
        return None
    return POLICY_CACHE_SCHEMES.get(scheme.lower()) if sep else None


def load_policy(path: Path | None, overrides: dict[str, Any]) -> PolicyConfig:
    config = _load(PolicyConfig(), path, overrides)
    _check_log(config)
    for address in (config.listen, config.exim_listen):
        if address:
            parse_listen(address)
    from tlsrpt_lmtp.net.dns import parse_nameserver  # dnspython: slow to import

    for ns in (*config.nameservers, *((config.dane_resolver,) if config.dane_resolver else ())):
        try:
            parse_nameserver(ns)
        except ValueError:
            raise ConfigError(f"nameserver {ns!r} is not IP, IP:PORT or [IPv6]:PORT") from None
    if min(config.cache_bytes, config.max_connections) <= 0 or config.idle_timeout <= 0:
        raise ConfigError("[policy] cache_bytes, max_connections and idle_timeout must be > 0")
    if config.refresh_window < 0:
        raise ConfigError("[policy] refresh_window must not be negative")
    if config.cache and cache_backend(config.cache) is None:
        where = config.cache.rpartition("@")[2]  # never echo a password
        raise ConfigError(f"[policy] cache {where!r} is not a redis:// or postgresql:// URL")
    if not 0 < config.cache_timeout <= 30:
        raise ConfigError("[policy] cache_timeout must be > 0 and <= 30 seconds")
    return config


def _load(defaults: T, path: Path | None, overrides: dict[str, Any]) -> T:
    values: dict[str, Any] = {"data_dir": default_data_dir()}
    if path is not None:
        values.update(_read_file(path, type(defaults)))
    values.update(read_flags(type(defaults), overrides))
    return replace(defaults, **values)


def check_tables(path: Path) -> None:
    """The keys and types of this module's tables; an unknown table is an error too."""
    _read_file(path, Config)


def _read_file(path: Path, section: type) -> dict[str, Any]:
    """The values of ``section``'s tables; the other tables of this module are checked too."""
    doc = read_toml(path)
    values: dict[str, Any] = {}
    for table in doc:
        if table in OTHER_TABLES:  # read and checked by its owner (and cli.check_config_file)
            continue
        if table not in _TABLES:
            raise ConfigError(f"{path}: unknown section [{table}]")
        owner, keys = _TABLES[table]
        known = {key: readers(owner)[name] for key, name in keys.items()}
        given = read_values(table_of(doc, path, table), known, path, table)
        if table in _USES[section]:
            names_ = {f.name for f in fields(section)}
            values.update({keys[k]: v for k, v in given.items() if keys[k] in names_})
    return values


def syslog_options(config: Config | PolicyConfig) -> SyslogOptions:
    """The [log] syslog_* settings, for ``sinks.open_emitter``."""
    return SyslogOptions(config.syslog_format, config.syslog_framing, config.syslog_max_size)


def _check_log(config: Config | PolicyConfig) -> None:
    if config.log_format not in LOG_FORMATS:
        raise ConfigError(f"log format must be one of {LOG_FORMATS}, not {config.log_format!r}")
    try:
        syslog_options(config).check()
        parse_target(config.syslog_address)
    except ValueError as exc:
        raise ConfigError(f"[log] {exc}") from None


def _check(config: Config) -> None:
    _check_log(config)
    if config.max_message_size <= 0 or config.max_decompressed <= 0:
        raise ConfigError("size limits must be positive")
    if not 1 <= config.max_failure_details <= 1_000_000:
        raise ConfigError("max_failure_details must be between 1 and 1000000")
    if min(config.max_connections, config.max_connections_per_peer, config.idle_timeout) <= 0:
        raise ConfigError("[lmtp] connection limits and idle_timeout must be positive")
    if config.max_in_flight < config.max_message_size:
        raise ConfigError("[lmtp] max_in_flight must be at least max_message_size")
    if "://" in config.database and not config.database.startswith(
        ("postgresql://", "postgres://")
    ):
        raise ConfigError("[storage] database: expected sqlite:PATH, a path or postgresql://…")
    from tlsrpt_lmtp.core.retention import Retention, RetentionError

    try:
        Retention.parse(config.retention, config.report_retention)
    except RetentionError as exc:
        raise ConfigError(f"[storage] {exc}") from None
    parse_listen(config.listen)


def parse_listen(listen: str) -> tuple[str, str | int]:
    """'unix:/path' → ('unix', path); 'HOST:PORT' or '[v6]:PORT' → (host, port)."""
    if listen.startswith("unix:"):
        path = listen[5:]
        if not path:
            raise ConfigError("listen: unix: needs a socket path")
        return "unix", path
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"listen: expected HOST:PORT or unix:/path, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
