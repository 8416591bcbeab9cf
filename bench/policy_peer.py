"""The MTA-STS peer: postfix-mta-sts-resolver in its own venv (bench/.venv-sts-peer).

It is the peer being measured, never a project dependency. It reads its nameserver from
/etc/resolv.conf (aiodns / c-ares has no nameserver setting in its config), so the benchmark
starts it in a private mount namespace with the test internet's resolv.conf bind-mounted
(``NetSim.in_dns_namespace``). aiohttp verifies policy hosts against the default trust store,
which OpenSSL takes from ``SSL_CERT_FILE``: the benchmark points that at the test CA.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STS_PEER_PACKAGE = "postfix-mta-sts-resolver"
STS_PEER_DIST = "postfix_mta_sts_resolver"
STS_PEER_VERSION = "1.5.1"
STS_PEER_VENV = Path(__file__).resolve().parent / ".venv-sts-peer"

# Every hit of the cache-hit rows must be a pure cache hit for both daemons. Ours re-checks
# the TXT id in the background after 300 s; the peer re-resolves *in the request* once an
# entry is older than cache_grace (default 60 s), which a run of a few minutes would cross.
PEER_CACHE_GRACE = 3600


def _installed_version(python: Path) -> str:
    if not python.exists():
        return ""
    probe = f"import importlib.metadata as m; print(m.version({STS_PEER_DIST!r}))"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def ensure_sts_peer_venv(venv: Path = STS_PEER_VENV) -> Path:
    """Return the peer venv's ``mta-sts-daemon``, creating the venv with the pin if needed."""
    python = venv / "bin" / "python"
    daemon = venv / "bin" / "mta-sts-daemon"
    if _installed_version(python) == STS_PEER_VERSION and daemon.exists():
        return daemon
    print(f"creating {venv} with {STS_PEER_PACKAGE}=={STS_PEER_VERSION} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # No extras: the peer runs on the stock asyncio loop, as ours does (uvloop is optional).
    subprocess.run([*pip, f"{STS_PEER_PACKAGE}=={STS_PEER_VERSION}"], check=True)
    if _installed_version(python) != STS_PEER_VERSION or not daemon.exists():
        raise SystemExit(f"{STS_PEER_PACKAGE}=={STS_PEER_VERSION} did not install into {venv}")
    return daemon


def peer_config(host: str, port: int, timeout: float = 4.0) -> str:
    """The peer's YAML config (keys: its man page mta-sts-daemon.yml(5)); JSON is YAML."""
    return "\n".join(
        [
            f"host: {host}",
            f"port: {port}",
            # 1.5.1 cannot listen with reuse_port false (responder.py start(): `opts` unset).
            "reuse_port: true",
            f"cache_grace: {PEER_CACHE_GRACE}",
            "shutdown_timeout: 2",
            "cache:",
            "  type: internal",
            "  options:",
            "    cache_size: 10000",
            "proactive_policy_fetching:",
            "  enabled: false",
            "default_zone:",
            "  strict_testing: false",
            f"  timeout: {timeout:g}",
            "  require_sni: true",
            "  tlsrpt: false",
            "",
        ]
    )
