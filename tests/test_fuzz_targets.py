"""Every fuzz target passes its own seed corpus: a target that rots (say, after the event
types changed) fails here, in pytest, instead of only in the fuzz run."""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
TARGETS = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ.glob("fuzz_*.py"))


def _target(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    """Run fuzz/fuzz_NAME.py as a script with the engine replaced: what it would fuzz."""
    monkeypatch.syspath_prepend(str(FUZZ))
    import harness

    captured: list[tuple[Any, ...]] = []
    monkeypatch.setattr(harness, "main", lambda *args: captured.append(args))
    monkeypatch.setattr(sys, "argv", [str(FUZZ / f"fuzz_{name}.py")])
    runpy.run_path(str(FUZZ / f"fuzz_{name}.py"), run_name="__main__")
    [args] = captured
    return args


def test_every_target_is_found() -> None:
    assert {"report", "mime", "decompress", "sts", "milter", "names", "dkim"} <= set(TARGETS)


@pytest.mark.parametrize("name", TARGETS)
def test_target_passes_its_seeds(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target, check, documented, seeds, *_ = _target(name, monkeypatch)
    import harness

    assert target == name
    corpus: Iterable[bytes] = seeds()
    one_input: Callable[[bytes], None] = harness.guarded(check, documented)
    n = 0
    for data in corpus:
        one_input(data)  # raises on anything but a documented error or a filed bug
        n += 1
    assert n > 0
