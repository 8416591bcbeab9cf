"""Durations as people write them in flags and config files ('90m', '24h', '400d', '2w')."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> timedelta:
    """'90m', '24h', '7d', '2w' → a timedelta."""
    match = _DURATION.match(text)
    if not match or len(match[1]) > 12:
        raise DurationError(f"expected a duration such as 24h, 7d or 2w, not {text[:40]!r}")
    try:
        return timedelta(seconds=int(match[1]) * _UNITS[match[2].lower()])
    except OverflowError:
        raise DurationError(f"duration out of range: {text[:40]!r}") from None
