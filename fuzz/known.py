"""Bugs already filed, which a fuzz run counts instead of stopping on.

libFuzzer stops at the first crash; a shallow bug that every run hits within seconds would
hide everything behind it. Each entry names the regression test that pins the bug (an
``xfail(strict=True)`` test in tests/). When the fix is merged that test starts passing, its
strict xfail fails the suite, and the mark and the entry here are removed together.
"""

from __future__ import annotations

import traceback
from typing import NamedTuple


class Known(NamedTuple):
    name: str
    kind: type[BaseException]
    text: str  # a substring of str(exception)
    test: str  # the regression test that pins it
    where: str = ""  # a substring of the file name of the innermost frame


KNOWN: tuple[Known, ...] = ()  # none open: the last two were fixed (names.py, decompress.py)


def match(exc: BaseException) -> str | None:
    frames = traceback.extract_tb(exc.__traceback__)
    innermost = frames[-1].filename if frames else ""
    for k in KNOWN:
        if isinstance(exc, k.kind) and k.text in str(exc) and k.where in innermost:
            return k.name
    return None
