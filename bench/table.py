"""Formatting for the one results table: cells, ratios, PASS/MISS."""

from __future__ import annotations

from collections.abc import Sequence

COLUMNS = (
    "measurement",
    "ours",
    "parsedmarc 11.1.0",
    "floor (stdlib)",
    "bare aiosmtpd",
    "ratio",
    "target",
    "verdict",
)
MISSING = "-"


def rate(value: float | None, unit: str = "/s") -> str:
    return MISSING if value is None else f"{value:,.1f}{unit}"


def mib(kib: int | None) -> str:
    return MISSING if kib is None else f"{kib / 1024:,.1f} MiB"


def ratio(num: float | None, den: float | None, *, percent: bool = False) -> str:
    if num is None or not den:
        return MISSING
    return f"{100 * num / den:.0f}%" if percent else f"{num / den:.2f}x"


def verdict(passed: bool | None) -> str:
    """PASS or MISS; n/a when our side could not be measured at all."""
    if passed is None:
        return "n/a"
    return "PASS" if passed else "MISS"


def render(rows: Sequence[Sequence[str]]) -> str:
    table = [list(COLUMNS), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return " | ".join((first, *rest))

    rule = "-+-".join("-" * width for width in widths)
    return "\n".join([line(table[0]), rule, *(line(row) for row in table[1:])])
