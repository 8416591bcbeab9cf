"""Make values from a mail or a report safe to store and emit (sans-I/O).

Every string the core hands on (header values, every string of a report, error messages
quoting them) passes ``clean_text``; every count passes ``clamp_count``. After that no value
can make ``str.encode("utf-8")``, ``orjson.dumps``, SQLite or a SIEM fail:

- a lone surrogate (``=?utf-7?q?+2AA-?=`` decodes to one; ``json.loads`` accepts ``"\\ud800"``)
  and NUL become U+FFFD; a surrogate pair left as two code points becomes the character it
  encodes. Other control characters are kept: JSON escapes them and SQLite stores them.
- text longer than ``MAX_TEXT`` characters is cut there (a report-id is repeated in every
  event of its report, so its size multiplies).
- counts are integers in ``[0, MAX_COUNT]``: 2**53 - 1 is the largest integer an IEEE double
  holds exactly, hence the largest every SIEM, JavaScript and JSON reader keeps exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_COUNT = 2**53 - 1
MAX_TEXT = 1024

TEXT_REPLACED = "text-replaced"
TEXT_TRUNCATED = "text-truncated"
COUNT_CLAMPED = "count-clamped"

_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str, limit: int = MAX_TEXT) -> tuple[str, tuple[str, ...]]:
    """``text`` made safe, and the warning codes for what had to change (usually none)."""
    codes: tuple[str, ...] = ()
    if len(text) > limit:
        text = text[:limit]
        codes = (TEXT_TRUNCATED,)
    if text.isascii():  # O(1) in CPython: the common case costs one NUL search
        if "\x00" not in text:
            return text, codes
    elif not _UNSAFE.search(text):
        return text, codes
    # Pairs written as two code points become the real character; lone ones become U+FFFD.
    fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return fixed.replace("\x00", "\ufffd"), (*codes, TEXT_REPLACED)


def safe_text(text: str, limit: int = MAX_TEXT) -> str:
    """``clean_text`` when nobody needs to be told (error messages, reasons)."""
    return clean_text(text, limit)[0]


def clamp_count(value: int) -> tuple[int, bool]:
    """``value`` within ``[0, MAX_COUNT]``, and whether it had to move."""
    if 0 <= value <= MAX_COUNT:
        return value, False
    return (0 if value < 0 else MAX_COUNT), True


def clamped_sum(values: Iterable[int]) -> int:
    """The sum of counts, never above MAX_COUNT (the sum of clamped counts can exceed it)."""
    total = 0
    for v in values:
        total += v
        if total >= MAX_COUNT:
            return MAX_COUNT
    return max(total, 0)
