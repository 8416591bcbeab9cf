"""Where the shared test data lives: ``../shared`` beside the project root, never copied in."""

from __future__ import annotations

from pathlib import Path

import pytest


def shared_dir() -> Path:
    """The ``shared`` directory next to the project's root directory."""
    return Path(__file__).resolve().parents[2].parent / "shared"


def real_sample(name: str) -> Path:
    """Path of one file in ``shared/samples/real``; skips the calling test if it is absent."""
    path = shared_dir() / "samples" / "real" / name
    if not path.is_file():
        pytest.skip(f"real sample {name} not found under {path.parent}")
    return path
