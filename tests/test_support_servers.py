"""The private PostgreSQL and Redis instances of tests/support/servers.py: they answer on
loopback, each test gets its own database, and nothing is left behind once they stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.servers import PostgresServer, RedisServer, postgres_instance, redis_instance


def test_postgres_databases_are_fresh_and_isolated(postgres_server: PostgresServer) -> None:
    psycopg = pytest.importorskip("psycopg")
    first, second = postgres_server.create_database(), postgres_server.create_database()
    try:
        assert first != second and first.startswith("postgresql://postgres@127.0.0.1:")
        with psycopg.connect(first, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (42)")
            assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
            address = conn.execute("SELECT inet_server_addr()::text").fetchone()
            assert address is not None and address[0].startswith("127.0.0.1")
        with psycopg.connect(second) as conn:
            row = conn.execute("SELECT to_regclass('public.t') IS NULL").fetchone()
            assert row == (True,)
    finally:
        postgres_server.drop_database(first)
        postgres_server.drop_database(second)
    with psycopg.connect(postgres_server.url) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert first.rsplit("/", 1)[1] not in names


def test_postgres_url_fixture_is_empty(postgres_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert row == (0,)


def test_redis_url_fixture_is_empty_and_works(redis_url: str) -> None:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        assert client.set("k", b"v", nx=True, px=10_000)
        assert not client.set("k", b"w", nx=True, px=10_000)
        assert client.get("k") == b"v"
    finally:
        client.close()


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie that init has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_instances_leave_nothing_behind_even_on_failure() -> None:
    with pytest.raises(RuntimeError, match="a test failed"), redis_instance() as redis:
        assert redis.proc is not None
        pid, folder = redis.proc.pid, redis.dir
        assert redis.command(b"PING") == b"+PONG"
        raise RuntimeError("a test failed")
    assert _gone(pid) and not folder.exists()
    with pytest.raises(RuntimeError, match="a test failed"), postgres_instance() as pg:
        pid_file = pg.data / "postmaster.pid"
        pg_pid, pg_dir = int(pid_file.read_text().split()[0]), pg.dir
        raise RuntimeError("a test failed")
    assert _gone(pg_pid) and not pg_dir.exists()


def test_redis_restart_keeps_its_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.stop()
    assert redis_server.command(b"PING") is None
    redis_server.start()
    assert redis_server.port == port and redis_server.command(b"PING") == b"+PONG"


def test_postgres_restart_keeps_its_port_and_data() -> None:
    psycopg = pytest.importorskip("psycopg")
    with postgres_instance() as pg:
        url = pg.create_database()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
        port = pg.port
        pg.stop()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2).close()
        pg.start()
        assert pg.port == port
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('public.kept') IS NOT NULL").fetchone() == (
                True,
            )
