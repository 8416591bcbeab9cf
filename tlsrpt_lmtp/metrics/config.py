"""``[metrics]``: where the Prometheus endpoint listens, and which labels it may carry.

    [metrics]
    listen = "127.0.0.1:9464"         # off when absent or ""; "PORT" alone binds 127.0.0.1
    domains = ["example.org"]         # policy domains (and their subdomains) that get a label
    max_label_values = 100            # cap on distinct values of a free-text label

Used by ``serve``, ``milter`` and ``policy serve``; ``--metrics-listen`` wins over the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tlsrpt_lmtp.config import parse_listen
from tlsrpt_lmtp.configfields import ConfigError, lowered, names, read, read_table, stripped


def _domain(name: str) -> str:
    return lowered(name).rstrip(".")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = field(default="", metadata=read(stripped))  # "" = no endpoint
    domains: tuple[str, ...] = field(default=(), metadata=read(names(_domain)))
    max_label_values: int = 100

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the endpoint; loopback unless a host is given."""
        host, port = parse_listen(self.listen)
        if host == "unix":
            raise ConfigError("metrics listen: a unix socket is not supported, use HOST:PORT")
        return host, int(port)


def load_metrics_config(path: Path | None, listen: str | None = None) -> MetricsConfig:
    values = read_table(path, "metrics", MetricsConfig)
    if listen is not None:
        values["listen"] = listen.strip()
    text = values.get("listen", "")
    if text.isdigit():
        values["listen"] = f"127.0.0.1:{text}"
    config = MetricsConfig(**values)
    if config.max_label_values < 1:
        raise ConfigError("[metrics] max_label_values must be positive")
    if config.listen:
        _ = config.address
    return config
