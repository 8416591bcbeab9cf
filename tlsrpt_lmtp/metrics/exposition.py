"""Starting the metrics: the registry, the collectors, and the HTTP endpoint (``/metrics``).

``serve`` is two processes, the LMTP server and its stage 2 process, behind one endpoint:
prometheus_client's multiprocess mode. ``start_serve`` makes a private directory, names it
in the environment (inherited by the stage 2 process, also when it is restarted), and the
server's endpoint sums the files every process counts into. Chosen over deriving stage 2's
counters from the SQLite store because latencies, DKIM verdicts and the events written are
not in the store, and because a counter read from files survives a restarted stage 2
process (its dead files are still summed: counters never go back).

``milter`` and ``policy serve`` are one process each: an ordinary registry.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlsrpt_lmtp import metrics
from tlsrpt_lmtp.metrics.config import MetricsConfig, load_metrics_config
from tlsrpt_lmtp.store import open_reader

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from tlsrpt_lmtp.sts.service import PolicyService

ENV_DIR = "TLSRPT_LMTP_METRICS_DIR"  # set by serve for its stage 2 process
_LIB_ENV = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


@dataclass
class Endpoint:
    """A running endpoint; ``close`` stops it (and removes serve's directory)."""

    registry: CollectorRegistry
    address: tuple[str, int]
    _stop: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for stop in reversed(self._stop):
            stop()
        self._stop.clear()


def add_flag(parser: argparse.ArgumentParser) -> None:
    """``--metrics-listen`` on a daemon's subcommand (serve, milter, policy serve)."""
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="Prometheus endpoint (/metrics); PORT alone binds 127.0.0.1 (default: off)",
    )


def config_of(args: argparse.Namespace) -> MetricsConfig:
    """``[metrics]`` of ``--config``, with ``--metrics-listen`` over it."""
    return load_metrics_config(getattr(args, "config", None), getattr(args, "metrics_listen", None))


def start_single_from_args(
    args: argparse.Namespace, *, service: PolicyService | None = None
) -> Endpoint | None:
    """The endpoint of a one-process daemon if metrics are on (raises ConfigError, OSError)."""
    config = config_of(args)
    return start_single(config, service=service) if config.listen else None


def start_serve(config: MetricsConfig, db_path: str | Path) -> Endpoint:
    """The LMTP server's endpoint: multiprocess mode (call before anything imports
    prometheus_client, and before the stage 2 process starts)."""
    directory = tempfile.mkdtemp(prefix="tlsrpt-lmtp-metrics-")
    os.environ[ENV_DIR] = directory
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import CollectorRegistry, values
    from prometheus_client.multiprocess import MultiProcessCollector

    if values.ValueClass is values.MutexValue:  # imported before: choose the mode again
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    _process_collectors(registry)
    registry.register(Backlog(db_path))
    metrics.install(_recorder(config, None))
    try:
        endpoint = _listen(config, registry)
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    endpoint._stop.append(lambda: shutil.rmtree(directory, ignore_errors=True))
    return endpoint


def watch_stage2(endpoint: Endpoint, pid: Callable[[], int]) -> None:
    """CPU and memory of the stage 2 process, as ``tlsrpt_stage2_process_*``."""
    from prometheus_client import ProcessCollector

    ProcessCollector(namespace="tlsrpt_stage2", pid=pid, registry=endpoint.registry)


def join_serve(config: MetricsConfig) -> bool:
    """In the stage 2 process: count into serve's directory, if serve has metrics on."""
    directory = os.environ.get(ENV_DIR)
    if not directory or not os.path.isdir(directory):
        return False
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    metrics.install(_recorder(config, None))
    return True


def start_single(config: MetricsConfig, *, service: PolicyService | None = None) -> Endpoint:
    """The endpoint of a one-process daemon (milter, policy serve)."""
    for name in _LIB_ENV:  # an inherited setting must not turn multiprocess mode on
        os.environ.pop(name, None)
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    _process_collectors(registry)
    metrics.install(_recorder(config, registry, policy=service is not None))
    if service is not None:
        from tlsrpt_lmtp.metrics.policy import instrument

        instrument(service, registry)
    return _listen(config, registry)


def _recorder(
    config: MetricsConfig, registry: CollectorRegistry | None, *, policy: bool = False
) -> metrics.Recorder:
    from tlsrpt_lmtp.metrics.recorder import PromRecorder

    return PromRecorder(config, registry, policy=policy)


def _process_collectors(registry: CollectorRegistry) -> None:
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def _listen(config: MetricsConfig, registry: CollectorRegistry) -> Endpoint:
    from prometheus_client import start_http_server

    host, port = config.address
    with _signals_blocked():  # the endpoint's threads must never take a stop signal
        httpd, thread = start_http_server(port, host, registry=registry)
    bound = httpd.server_address

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)

    endpoint = Endpoint(registry, (str(bound[0]), int(bound[1])))
    endpoint._stop.append(stop)
    return endpoint


@contextmanager
def _signals_blocked() -> Iterator[None]:
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Backlog:
    """Stage 2's backlog, read from the archive at scrape time."""

    def __init__(self, store: str | Path) -> None:
        self._store = store  # a path or URL (store.open_reader)

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        pending = float("nan")
        try:
            db = open_reader(self._store)
            try:
                row: Any = db.execute(
                    "SELECT count(*) FROM messages WHERE status = 'pending'"
                ).fetchone()
                pending = float(row[0])
            finally:
                db.close()
        except Exception:
            pass  # (the database is busy, unreachable or not there yet)
        yield GaugeMetricFamily(
            "tlsrpt_stage2_backlog_messages",
            "Messages archived and not yet processed by stage 2 (status pending)",
            value=pending,
        )
