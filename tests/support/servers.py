"""Private PostgreSQL and Redis servers for the tests, on free loopback ports, with their data
in temporary directories, stopped at the end (also when a test fails).

PostgreSQL: ``initdb`` + ``pg_ctl`` of Debian's newest ``/usr/lib/postgresql/*/bin``, as the
unprivileged ``postgres`` user (initdb refuses root) through ``runuser`` when the suite runs as
root, as the current user otherwise; trust authentication, TCP on 127.0.0.1 only, the unix
socket in the temporary directory. Redis: ``redis-server`` in the foreground, no persistence.
Both skip the calling test, saying why, only when the binaries (or the Python clients) are
missing; scripts/install-postgres-redis-deps.sh installs them.

Fixtures (registered in tests/conftest.py): ``postgres_server`` and ``redis_server`` (one per
session), ``postgres_url`` (a fresh database per test, ``t_<uuid>``, dropped afterwards) and
``redis_url`` (the session's server, emptied before the test).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 60.0


def pg_bin() -> Path | None:
    """Debian's newest PostgreSQL server binaries, or None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _private_dir(prefix: str) -> Path:
    # Not under pytest's basetemp: that is mode 0700 and root's, and the postgres user must
    # traverse the path to its data directory.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


class PostgresServer:
    """One private PostgreSQL cluster. ``url`` is its ``postgres`` database as superuser.
    stop() then start() keeps its port and its data."""

    def __init__(self, **settings: str) -> None:
        binaries = pg_bin()
        if binaries is None:
            pytest.skip("PostgreSQL not installed (run scripts/install-postgres-redis-deps.sh)")
        self.bin = binaries
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and no 'postgres' user to run initdb as")
            self.user = "postgres"
        self.settings = {"fsync": "off", "full_page_writes": "off", "max_connections": "200"}
        self.settings.update(settings)
        self.dir = _private_dir("tlsrpt-pg-")
        self.data = self.dir / "data"
        self.sock = self.dir / "sock"
        self.log = self.dir / "pg.log"
        self.port = 0
        self.running = False

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *argv: str, timeout: float = START_TIMEOUT) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            detail = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {detail}\n{log}")

    def start(self) -> None:
        if not self.data.exists():
            self.sock.mkdir()
            if self.user is not None:
                for path in (self.dir, self.sock):
                    shutil.chown(path, self.user, self.user)
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        options = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        for attempt in range(3):  # another process may take the free port meanwhile
            if not self.port or attempt:  # a restart keeps its port (and so its URL)
                self.port = free_port()
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                    "-o", f"-h 127.0.0.1 -p {self.port} -k {self.sock} {options}", "start",
                )  # fmt: skip
            except RuntimeError:
                if attempt == 2:
                    raise
                continue
            self.running = True
            return

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self) -> str:
        """A fresh empty database ``t_<uuid>``; its URL."""
        psycopg = pytest.importorskip("psycopg", reason="psycopg not installed (test extra)")
        name = f"t_{uuid.uuid4().hex}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RedisServer:
    """One private redis-server, no persistence. stop() then start() keeps its port."""

    def __init__(self) -> None:
        binary = redis_binary()
        if binary is None:
            pytest.skip("redis-server not installed (run scripts/install-postgres-redis-deps.sh)")
        self.binary = binary
        self.dir = _private_dir("tlsrpt-redis-")
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for attempt in range(3):
            if not self.port or attempt:
                self.port = free_port()
            self.proc = subprocess.Popen(
                [
                    self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--dir", str(self.dir), "--save", "", "--appendonly", "no",
                    "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"redis-server did not start: {self._log()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if self.command(b"PING") == b"+PONG":
                return True
            time.sleep(0.05)
        return False

    def command(self, *words: bytes) -> bytes | None:
        """One command over a raw connection; its first reply line, None if unreachable."""
        request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(request)
                return s.recv(65536).split(b"\r\n", 1)[0]
        except OSError:
            return None

    def _log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def postgres_instance(**settings: str) -> Iterator[PostgresServer]:
    """A started private PostgreSQL, removed (stopped, files deleted) at the end."""
    server = PostgresServer(**settings)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextlib.contextmanager
def redis_instance() -> Iterator[RedisServer]:
    """A started private redis-server, removed (stopped, files deleted) at the end."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with postgres_instance() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with redis_instance() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database for this test alone."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    if redis_server.command(b"FLUSHALL") != b"+OK":
        redis_server.stop()
        redis_server.start()
    return redis_server.url
