"""Settings: embedded defaults, overridden by a TOML file, overridden by command-line flags.

The file has one table per part of the program; unknown keys are an error (a typo must not
silently fall back to a default):

    [lmtp]
    listen = "unix:/var/spool/postfix/private/tlsrpt"
    recipients = ["tlsrpt@example.org"]
    max_message_size = 33554432

    [storage]
    data_dir = "/var/lib/tlsrpt-lmtp"
    max_decompressed = 67108864

    [log]
    format = "json"          # or "syslog"
    file = "-"               # json: "-" (stdout) or a path
    syslog_address = "/dev/log"   # or "udp:HOST:PORT", "tcp:HOST:PORT"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from tlsrpt_lmtp.decompress import DEFAULT_LIMIT


class ConfigError(ValueError):
    pass


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/tlsrpt-lmtp")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "tlsrpt-lmtp"


@dataclass(frozen=True, slots=True)
class Config:
    listen: str = "127.0.0.1:24240"
    recipients: tuple[str, ...] = ()
    max_message_size: int = 32 * 1024 * 1024
    data_dir: Path = Path()  # replaced by default_data_dir() in load()
    max_decompressed: int = DEFAULT_LIMIT
    log_format: str = "json"
    log_file: str = "-"
    syslog_address: str = "/dev/log"


# TOML table → (key in table → Config field)
_LAYOUT: dict[str, dict[str, str]] = {
    "lmtp": {
        "listen": "listen",
        "recipients": "recipients",
        "max_message_size": "max_message_size",
    },
    "storage": {"data_dir": "data_dir", "max_decompressed": "max_decompressed"},
    "log": {"format": "log_format", "file": "log_file", "syslog_address": "syslog_address"},
}
_TYPES = {f.name: f.type for f in fields(Config)}


def load(path: Path | None, overrides: dict[str, Any]) -> Config:
    """Defaults, then the file (if any), then the non-None overrides (the flags)."""
    values: dict[str, Any] = {"data_dir": default_data_dir()}
    if path is not None:
        values.update(_read_file(path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = replace(Config(), **{k: _coerce(k, v) for k, v in values.items()})
    _check(config)
    return config


def _read_file(path: Path) -> dict[str, Any]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for table, content in doc.items():
        layout = _LAYOUT.get(table)
        if layout is None or not isinstance(content, dict):
            if table in ("policy", "milter", "alerts", "dkim"):
                continue  # read by the other commands
            raise ConfigError(f"{path}: unknown section [{table}]")
        for key, value in content.items():
            if key not in layout:
                raise ConfigError(f"{path}: unknown key {key!r} in [{table}]")
            values[layout[key]] = value
    return values


def _coerce(name: str, value: Any) -> Any:
    kind = str(_TYPES[name])
    try:
        if kind == "Path":
            return Path(value).expanduser()
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind.startswith("tuple"):
            items = [value] if isinstance(value, str) else list(value)
            return tuple(str(v).strip().lower() for v in items)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: invalid value {value!r}") from None


def _check(config: Config) -> None:
    if config.log_format not in ("json", "syslog"):
        raise ConfigError(f"log format must be 'json' or 'syslog', not {config.log_format!r}")
    if config.max_message_size <= 0 or config.max_decompressed <= 0:
        raise ConfigError("size limits must be positive")
    parse_listen(config.listen)


def parse_listen(listen: str) -> tuple[str, str | int]:
    """'unix:/path' → ('unix', path); 'HOST:PORT' or '[v6]:PORT' → (host, port)."""
    if listen.startswith("unix:"):
        path = listen[5:]
        if not path:
            raise ConfigError("listen: unix: needs a socket path")
        return "unix", path
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"listen: expected HOST:PORT or unix:/path, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
