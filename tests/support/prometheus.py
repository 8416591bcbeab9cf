"""A private Prometheus server (Debian's ``prometheus``) on a loopback port, for the metrics
tests: it scrapes the given targets every second and is asked through its HTTP API.

Installed by scripts/install-prometheus-deps.sh; tests that need it skip, saying why, when the
binary is missing. Every wait is bounded.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import free_port, stop_process

Vector = dict[tuple[tuple[str, str], ...], float]


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed (scripts/install-prometheus-deps.sh installs it)")
    return path


class Prometheus:
    def __init__(self, workdir: Path, targets: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        jobs = "".join(
            f"  - job_name: {name}\n    static_configs:\n      - targets: ['{target}']\n"
            for name, target in targets.items()
        )
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}"
        )
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            require("prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.wait(self._ready, "Prometheus ready", 60)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc)

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> Vector:
        """An instant vector: labels (sorted, without __name__) → value."""
        data = self.api("query", query=expr)
        out: Vector = {}
        for item in data["result"]:
            labels = tuple(sorted((k, v) for k, v in item["metric"].items() if k != "__name__"))
            out[labels] = float(item["value"][1])
        return out

    def scalar(self, expr: str) -> float | None:
        values = list(self.query(expr).values())
        return values[0] if len(values) == 1 else None

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def settle(self, expected: Callable[[], dict[str, Any]], timeout: float = 45.0) -> None:
        """Wait until every query in ``expected()`` (expr → value or Vector) gives that value:
        the daemons' counters are final, Prometheus needs a scrape or two to see them."""
        seen: dict[str, Any] = {}

        def equal() -> bool:
            want = expected()
            seen.clear()
            for expr, value in want.items():
                got = self.scalar(expr) if not isinstance(value, dict) else self.query(expr)
                seen[expr] = got
            return all(_close(seen[k], v) for k, v in want.items())

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if equal():
                return
            time.sleep(0.5)
        want = expected()
        diff = {k: (seen.get(k), v) for k, v in want.items() if not _close(seen.get(k), v)}
        raise AssertionError(f"Prometheus disagrees (got, expected): {diff}")

    @staticmethod
    def wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")


def _close(got: Any, want: Any) -> bool:
    """Equal, up to float rounding (Prometheus sums in float64; huge hostile counts)."""
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(math.isclose(got[k], want[k], rel_tol=1e-9) for k in want)
        )
    if got is None or want is None:
        return got is want
    return math.isclose(got, want, rel_tol=1e-9)


@contextmanager
def prometheus(
    workdir: Path, targets: Mapping[str, str], *, wait_up: bool = True
) -> Iterator[Prometheus]:
    workdir.mkdir(parents=True, exist_ok=True)
    server = Prometheus(workdir, targets)
    server.start()
    try:
        if wait_up:
            server.wait(server.targets_up, "every target scraped once", 30)
        yield server
    finally:
        server.stop()


def vector(pairs: Mapping[str, float], label: str) -> Vector:
    """{value of ``label``: number} → the Vector ``sum by (label)`` gives."""
    return {((label, k),): float(v) for k, v in pairs.items()}
