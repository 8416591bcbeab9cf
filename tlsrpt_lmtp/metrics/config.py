"""``[metrics]``: where the Prometheus endpoint listens, and which labels it may carry.

    [metrics]
    listen = "127.0.0.1:9464"         # off when absent or ""; "PORT" alone binds 127.0.0.1
    domains = ["example.org"]         # policy domains (and their subdomains) that get a label
    max_label_values = 100            # cap on distinct values of a free-text label

Used by ``serve``, ``milter`` and ``policy serve``; ``--metrics-listen`` wins over the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tlsrpt_lmtp.config import ConfigError, parse_listen, read_table

_KINDS = {"listen": "str", "domains": "tuple[str, ...]", "max_label_values": "int"}


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = ""  # "" = no endpoint
    domains: tuple[str, ...] = ()
    max_label_values: int = 100

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the endpoint; loopback unless a host is given."""
        host, port = parse_listen(self.listen)
        if host == "unix":
            raise ConfigError("metrics listen: a unix socket is not supported, use HOST:PORT")
        return host, int(port)


def load_metrics_config(path: Path | None, listen: str | None = None) -> MetricsConfig:
    values = read_table(path, "metrics", _KINDS)
    if listen is not None:
        values["listen"] = listen
    text = str(values.get("listen", "")).strip()
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    config = MetricsConfig(
        listen=text,
        domains=tuple(d.rstrip(".") for d in values.get("domains", ())),
        max_label_values=int(values.get("max_label_values", 100)),
    )
    if config.max_label_values < 1:
        raise ConfigError("[metrics] max_label_values must be positive")
    if config.listen:
        _ = config.address
    return config
