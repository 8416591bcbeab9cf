"""``[milter]``: where libmilter listens, what to do with report mail, and for whom.

    [milter]
    listen = "inet:24241@127.0.0.1"   # or "unix:/run/tlsrpt/milter.sock", "127.0.0.1:24241"
    mode = "tap"                      # "tap", "discard" or "reject-invalid"
    add_header = true                 # X-TLSRPT-Report on the mail passed on (tap, reject-invalid)
    recipients = ["tlsrpt@example.org"]   # default: [lmtp] recipients
    max_message_size = 33554432       # default: [lmtp] max_message_size
    timeout = 330                     # a connection idle this long is closed, seconds
    max_connections = 256             # more are closed at once (the MTA tempfails or retries)
    max_connections_per_peer = 128    # per local user (uid) or remote address
    max_in_flight = 134217728         # report mail buffered across connections; beyond: 451

Checked as strictly as the rest of the file: an unknown key or a bad value is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from tlsrpt_lmtp.config import Config
from tlsrpt_lmtp.configfields import ConfigError, names, read, read_flags, read_table

DEFAULT_LISTEN = "inet:24241@127.0.0.1"


class Mode(StrEnum):
    TAP = "tap"  # ingest, then let the mail through (optionally with a header)
    DISCARD = "discard"  # ingest, then drop the report recipients (the whole mail if only they)
    REJECT_INVALID = "reject-invalid"  # like tap, but 550 for report mail without a report


def normalise_address(address: str) -> str:
    """``<Tlsrpt@Example.ORG>`` → ``tlsrpt@example.org`` (how recipients are compared)."""
    return address.strip().strip("<>").strip().lower()


@dataclass(frozen=True, slots=True)
class MilterConfig:
    listen: str = DEFAULT_LISTEN  # normalised to libmilter's connection spec
    mode: Mode = Mode.TAP
    add_header: bool = True
    recipients: tuple[str, ...] = field(default=(), metadata=read(names(normalise_address)))
    max_message_size: int = 32 * 1024 * 1024
    # libmilter's I/O timeout, i.e. the idle timeout: above Postfix's smtpd_timeout (300 s),
    # the longest an SMTP client (and so the MTA's side of the milter) may be silent.
    timeout: int = 330
    max_connections: int = 256
    max_connections_per_peer: int = 128
    max_in_flight: int = 128 * 1024 * 1024

    @property
    def socket_path(self) -> Path | None:
        """The unix socket's path, or None for TCP."""
        kind, _, rest = self.listen.partition(":")
        return Path(rest) if kind in ("unix", "local") else None


_INET = re.compile(r"^(inet6?):(\d+)@(\S+)$")


def load_milter_config(path: Path | None, overrides: dict[str, Any], base: Config) -> MilterConfig:
    """Defaults (recipients and size from ``base``, the [lmtp] settings), then the file's
    ``[milter]`` table, then the non-None overrides (the command-line flags)."""
    values: dict[str, Any] = {
        "recipients": tuple(normalise_address(r) for r in base.recipients),
        "max_message_size": base.max_message_size,
    }
    values.update(read_table(path, "milter", MilterConfig))
    values.update(read_flags(MilterConfig, overrides))
    values["listen"] = parse_milter_listen(values.get("listen", DEFAULT_LISTEN))
    config = MilterConfig(**values)
    if not config.recipients:
        raise ConfigError(
            "the milter needs the report address(es): set [milter] recipients or"
            " [lmtp] recipients, or pass --recipient (it must not ingest all mail)"
        )
    limits = (config.max_connections, config.max_connections_per_peer)
    if min(config.max_message_size, config.timeout, *limits) <= 0:
        raise ConfigError("[milter] sizes, timeout and connection limits must be positive")
    if config.max_in_flight < config.max_message_size:
        raise ConfigError("[milter] max_in_flight must be at least max_message_size")
    return config


def parse_milter_listen(text: str) -> str:
    """libmilter's spec (``inet:PORT@HOST``, ``inet6:PORT@HOST``, ``unix:/path``,
    ``local:/path``), or ``HOST:PORT`` / ``[v6]:PORT`` as elsewhere in the config; the result
    is always libmilter's spec."""
    text = text.strip()
    if text.startswith(("unix:", "local:")):
        if not text.partition(":")[2]:
            raise ConfigError("[milter] listen: unix: needs a socket path")
        return text
    if match := _INET.match(text):
        kind, port, host = match.groups()
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(
                f"[milter] listen: expected inet:PORT@HOST, unix:/path or HOST:PORT, got {text!r}"
            )
        kind = "inet6" if host.startswith("[") else "inet"
        host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"[milter] listen: invalid port in {text!r}")
    return f"{kind}:{int(port)}@{host}"
