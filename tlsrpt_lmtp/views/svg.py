"""Daily success-rate chart of one policy domain as inline SVG (pure; no script, no font file).

x: one slot per day (UTC) from the first to the last day shown; y: share of successful
sessions, from a floor chosen so that 99.9% and 100% do not look the same. Days without
sessions have no point, and the line breaks over them. Only days with failures get a marker
(with the day's numbers as its tooltip), so a year-long chart stays a few kilobytes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from html import escape

from tlsrpt_lmtp.views.fmt import clean, num, pct, u_label
from tlsrpt_lmtp.views.model import DayPoint, DomainSeries

W, H = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 44, 14, 34
_FLOORS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
OK, BAD, LINE, GRID, INK = "#2e7d32", "#c62828", "#546e7a", "#d5dbe0", "#37474f"


def _floor(points: list[DayPoint]) -> float:
    lowest = min((p.success_rate for p in points if p.success_rate is not None), default=1.0)
    return max(f for f in _FLOORS if f <= lowest - 0.002 or f == 0.0)


def _label(value: float) -> str:
    text = f"{value * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def chart(series: DomainSeries, *, first: date | None = None, last: date | None = None) -> str:
    points = [p for p in series.points if p.success_rate is not None]
    days = [p.day for p in series.points]
    start = first or min(days, default=date.today())
    stop = max(last or max(days, default=start), start)
    span = (stop - start).days
    floor = _floor(points)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(day: date) -> float:
        return LEFT + plot_w / 2 if span == 0 else LEFT + plot_w * (day - start).days / span

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - floor) / (1 - floor))

    name = escape(clean(u_label(series.domain) or "(no policy domain)"), quote=True)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {H}"'
        f' width="{W}" height="{H}" role="img" data-domain="{name}"'
        f' aria-label="Daily success rate of {name}">',
        f"<title>Daily share of successful sessions: {name}</title>",
    ]
    for value in (floor, (floor + 1) / 2, 1.0):
        out.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}"'
            f' stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="11"'
            f' fill="{INK}">{_label(value)}</text>'
        )
    ticks = {start, stop, start + timedelta(days=span // 2)} if span else {start}
    for day in sorted(ticks):
        out.append(
            f'<text x="{x(day):.1f}" y="{H - 12}" text-anchor="middle" font-size="11"'
            f' fill="{INK}">{day.isoformat()}</text>'
        )
    out += _line([(p.day, p.success_rate or 0.0) for p in points], x, y)
    for p in points:
        if not p.failed:
            continue
        rate = p.success_rate if p.success_rate is not None else 0.0
        tip = (
            f"{p.day.isoformat()}: {pct(rate)} of {num(p.successful + p.failed)} sessions"
            f" successful, {num(p.failed)} failed ({num(p.reports)} reports)"
        )
        out.append(
            f'<circle class="day" cx="{x(p.day):.1f}" cy="{y(rate):.1f}" r="4"'
            f' fill="{BAD}" data-day="{p.day.isoformat()}"'
            f' data-successful="{p.successful}" data-failed="{p.failed}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    if not points:
        out.append(
            f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" font-size="13"'
            f' fill="{INK}">no sessions reported</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _line(
    points: list[tuple[date, float]], x: Callable[[date], float], y: Callable[[float], float]
) -> list[str]:
    """Polylines through points on consecutive days; a day without data breaks the line."""
    runs: list[list[tuple[date, float]]] = []
    for day, rate in points:
        if runs and (day - runs[-1][-1][0]).days == 1:
            runs[-1].append((day, rate))
        else:
            runs.append([(day, rate)])
    return [
        f'<polyline fill="none" stroke="{LINE}" stroke-width="1.5" points="'
        + " ".join(f"{x(day):.1f},{y(rate):.1f}" for day, rate in run)
        + '"/>'
        if len(run) > 1
        else f'<circle cx="{x(run[0][0]):.1f}" cy="{y(run[0][1]):.1f}" r="2.5" fill="{OK}"/>'
        for run in runs
    ]
