"""Issue 12's "done means" for the shared policy cache, with real processes: two
``tlsrpt-lmtp policy serve`` daemons (each its own data directory, so its own local cache)
sharing a real private Redis, and again a real private PostgreSQL, asked over the socketmap
protocol as Postfix asks, against the loopback test internet.

Daemon A fetches a policy; the policy host and the TXT record disappear; daemon B, which never
fetched it, answers ``secure`` from the shared cache; both restarted, still ``secure``.
Concurrent misses on two daemons make one HTTPS fetch; with the shared cache down a daemon
answers from its own cache and logs ``sts.shared_cache_unavailable``. (Rules that need the
clock moved, such as "a failure never downgrades the shared policy", are checked on
PolicyService nodes in test_sts_shared.py.)
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.servers import redis_instance

if TYPE_CHECKING:
    from tests.mta.policy_daemon import PolicyDaemon
    from tests.netsim.fixtures import NetSim

pytest_plugins = ["tests.netsim.fixtures"]


@pytest.fixture(params=["redis", "postgresql"])
def shared_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("redis_url" if request.param == "redis" else "postgres_url")
    return url


class Fleet:
    """Policy daemons on one shared cache; every one is stopped at the end."""

    def __init__(self, netsim: NetSim, folder: Path, url: str) -> None:
        self.netsim, self.folder, self.url = netsim, folder, url
        self.daemons: list[PolicyDaemon] = []

    def daemon(self, name: str) -> PolicyDaemon:
        from tests.mta.policy_daemon import PolicyDaemon

        daemon = PolicyDaemon(
            self.folder / name,
            nameserver=self.netsim.nameserver,
            ca_file=self.netsim.ca_file,
            extra_args=["--cache", self.url],
        )
        self.daemons.append(daemon)
        daemon.start()
        return daemon

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.kill()


@pytest.fixture
def fleet(netsim: NetSim, tmp_path: Path, shared_url: str) -> Iterator[Fleet]:
    made = Fleet(netsim, tmp_path, shared_url)
    try:
        yield made
    finally:
        made.close()


def secure(reply: str) -> bool:
    return reply.startswith("OK secure")


def test_daemon_b_answers_secure_with_the_policy_daemon_a_fetched(
    netsim: NetSim, fleet: Fleet, tmp_path: Path
) -> None:
    netsim.publish_sts("fleet.test", id="v1", mx=["mx1.fleet.test"])
    a, b = fleet.daemon("a"), fleet.daemon("b")
    assert secure(a.socketmap_query("fleet.test"))
    assert len(netsim.https.requests_for("fleet.test")) == 1
    netsim.unpublish_sts("fleet.test")  # the TXT record, the policy host's name and its site
    reply = b.socketmap_query("fleet.test")
    assert secure(reply) and "match=mx1.fleet.test" in reply
    assert len(netsim.https.requests_for("fleet.test")) == 1  # B did not fetch
    assert b.events("sts.policy_fetched") == [] and b.events("sts.fetch_error") == []
    a.restart()
    b.restart()
    assert secure(a.socketmap_query("fleet.test")) and secure(b.socketmap_query("fleet.test"))
    assert b.exim_query("fleet.test").startswith("mode=enforce")
    # `policy query` on a fresh node (no local cache at all) reads the shared one too
    query = subprocess.run(
        [
            sys.executable, "-m", "tlsrpt_lmtp", "policy", "query", "fleet.test",
            "--cache", fleet.url, "--data-dir", str(tmp_path / "fresh"),
            "--nameserver", netsim.nameserver, "--ca-file", str(netsim.ca_file),
            "--log-file", str(tmp_path / "query-events.jsonl"),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert query.returncode == 0, query.stderr
    assert "policy id:     v1" in query.stdout and "mode: enforce" in query.stdout
    assert "cache before:  no cached policy" in query.stdout
    assert "shared before: id v1, fetched " in query.stdout
    for daemon in (a, b):
        assert daemon.events("sts.shared_cache_unavailable") == []
        daemon.stop()


def test_concurrent_misses_on_two_daemons_make_one_fetch(netsim: NetSim, fleet: Fleet) -> None:
    netsim.publish_sts("busy.test", id="b1", delay=1.5)  # slow: the two misses overlap
    daemons = [fleet.daemon("a"), fleet.daemon("b")]
    with ThreadPoolExecutor(len(daemons)) as pool:
        replies = list(pool.map(lambda d: d.socketmap_query("busy.test", timeout=30), daemons))
    assert all(secure(r) for r in replies), replies
    assert len(netsim.https.requests_for("busy.test")) == 1
    assert sum(len(d.events("sts.policy_fetched")) for d in daemons) == 1
    for daemon in daemons:
        daemon.stop()


def test_with_the_shared_cache_down_a_daemon_answers_from_its_own(
    netsim: NetSim, tmp_path: Path
) -> None:
    netsim.publish_sts("held.test", id="h1")
    netsim.publish_sts("new.test", id="n1")
    with redis_instance() as redis:
        fleet = Fleet(netsim, tmp_path, redis.url)
        try:
            a = fleet.daemon("a")
            assert secure(a.socketmap_query("held.test"))
            redis.stop()
            a.restart()
            netsim.unpublish_sts("held.test")
            assert secure(a.socketmap_query("held.test"))  # its own cache (SQLite)
            assert secure(a.socketmap_query("new.test"))  # discovered and fetched alone
            [down] = a.events("sts.shared_cache_unavailable")
            assert down["backend"] == "redis" and down["server"] == f"127.0.0.1:{redis.port}"
            assert down["domain"] == "new.test"
            a.stop()
        finally:
            fleet.close()
