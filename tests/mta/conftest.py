"""Fixtures for the real-MTA tests: they skip, with the reason, where the machine cannot run them.

Set TLSRPT_MTA_KEEP=1 to keep each test's work directory (configs, MTA logs, events) in /tmp.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import (
    SAMPLES_DIR,
    EximInstance,
    LmtpEndpoint,
    LmtpServer,
    PostfixInstance,
    Sample,
    require_exim,
    require_postfix,
)


def _require_samples() -> None:
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"sample reports not found at {SAMPLES_DIR} (the shared/ directory)")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A fresh directory every MTA user (postfix, Debian-exim) can traverse."""
    path = Path(tempfile.mkdtemp(prefix="tlsrpt-mta-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        if os.environ.get("TLSRPT_MTA_KEEP"):
            print(f"\nkept MTA work directory: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def load_sample() -> Callable[[str], Sample]:
    """Load a real report email from ../shared/samples/real, or skip if it is not there."""

    def load(name: str) -> Sample:
        _require_samples()
        if not (SAMPLES_DIR / name).is_file():
            pytest.skip(f"sample {name} not found in {SAMPLES_DIR}")
        return Sample.load(name)

    return load


@pytest.fixture
def tcp_endpoint() -> LmtpEndpoint:
    return LmtpEndpoint.tcp()


@pytest.fixture
def unix_endpoint(workdir: Path) -> LmtpEndpoint:
    sockdir = workdir / "run"
    sockdir.mkdir(mode=0o755)
    return LmtpEndpoint.unix(sockdir / "lmtp.sock")


def _server(workdir: Path, endpoint: LmtpEndpoint) -> Iterator[LmtpServer]:
    server = LmtpServer(workdir, endpoint)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def server(workdir: Path, tcp_endpoint: LmtpEndpoint) -> Iterator[LmtpServer]:
    """Our LMTP server on TCP, *not yet started*."""
    yield from _server(workdir, tcp_endpoint)


@pytest.fixture
def unix_server(workdir: Path, unix_endpoint: LmtpEndpoint) -> Iterator[LmtpServer]:
    """Our LMTP server on a unix socket, *not yet started*."""
    yield from _server(workdir, unix_endpoint)


def _postfix(workdir: Path, endpoint: LmtpEndpoint) -> Iterator[PostfixInstance]:
    require_postfix()
    with PostfixInstance(workdir, endpoint) as instance:
        yield instance


@pytest.fixture
def postfix(workdir: Path, tcp_endpoint: LmtpEndpoint) -> Iterator[PostfixInstance]:
    """A running Postfix delivering reports.example.test by LMTP over TCP to ``server``."""
    yield from _postfix(workdir, tcp_endpoint)


@pytest.fixture
def postfix_unix(workdir: Path, unix_endpoint: LmtpEndpoint) -> Iterator[PostfixInstance]:
    """A running Postfix delivering reports.example.test by LMTP to ``unix_server``'s socket."""
    yield from _postfix(workdir, unix_endpoint)


@pytest.fixture
def exim(workdir: Path, tcp_endpoint: LmtpEndpoint) -> Iterator[EximInstance]:
    """A running (extracted) Exim delivering reports.example.test by LMTP over TCP."""
    require_exim()
    with EximInstance(workdir, tcp_endpoint) as instance:
        yield instance
