"""The peer's own venv (bench/.venv-peer) with parsedmarc pinned; never a project dependency."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PEER_PACKAGE = "parsedmarc"
PEER_VERSION = "11.1.0"
PEER_VENV = Path(__file__).resolve().parent / ".venv-peer"


def _installed_version(python: Path) -> str:
    if not python.exists():
        return ""
    probe = f"import importlib.metadata as m; print(m.version({PEER_PACKAGE!r}))"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def ensure_peer_venv(venv: Path = PEER_VENV) -> Path:
    """Return the peer venv's python, creating the venv and installing the pin if needed."""
    python = venv / "bin" / "python"
    if _installed_version(python) == PEER_VERSION:
        return python
    print(f"creating {venv} with {PEER_PACKAGE}=={PEER_VERSION} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, f"{PEER_PACKAGE}=={PEER_VERSION}"], check=True)
    if _installed_version(python) != PEER_VERSION:
        raise SystemExit(f"{PEER_PACKAGE}=={PEER_VERSION} did not install into {venv}")
    return python
