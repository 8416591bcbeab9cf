"""Formatting shared by the renderers: counts, rates, days, labels (pure, format-neutral)."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

from tlsrpt_lmtp.views.model import Summary

NO_DOMAIN = "(no policy domain)"
UNATTRIBUTED = "unattributed"
OVER_DETAILED = "details beyond summary"


def num(n: int) -> str:
    return f"{n:,}"


def pct(rate: float | None) -> str:
    """Rounded down, so 100.00% means no failure at all, and '<0.01%' is not shown as 0."""
    if rate is None:
        return "-"
    if 0 < rate < 0.0001:
        return "<0.01%"
    return f"{math.floor(rate * 10000) / 100:.2f}%"


def last_day(start: datetime, end: datetime) -> date:
    """The last day a date range covers: an end at 00:00:00 (exclusive) is the day before."""
    if end > start and end.time() == datetime.min.time():
        return (end - timedelta(microseconds=1)).date()
    return end.date()


def covered(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    first, last = start.date(), last_day(start, end)
    return first.isoformat() if last <= first else f"{first.isoformat()}..{last.isoformat()}"


def domain_label(domain: str) -> str:
    return domain or NO_DOMAIN


def period_label(summary: Summary) -> str:
    p = summary.period
    if p.start is None and p.end is None:
        return "all stored reports"
    start = p.start.strftime("%Y-%m-%d %H:%M") if p.start else "the first report"
    if p.end is None:
        return f"reports starting from {start} UTC"
    end = p.end.strftime("%Y-%m-%d %H:%M")
    return f"reports starting from {start} to before {end} UTC"


def scope_label(summary: Summary) -> str:
    return f"domain {summary.domain}" if summary.domain else "all policy domains"


def headline(summary: Summary) -> str:
    t = summary.totals
    return (
        f"{num(t.reports)} reports from {num(t.organizations)} organisations about"
        f" {num(t.domains)} policy domains; {num(t.sessions)} sessions, {num(t.failed)} failed"
        f" ({pct(t.success_rate)} successful); covering {covered(t.first, t.last)}"
    )
