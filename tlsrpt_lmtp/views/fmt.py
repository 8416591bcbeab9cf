"""Formatting shared by the renderers: counts, rates, days, labels (pure, format-neutral)."""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta

from tlsrpt_lmtp.core.names import to_unicode
from tlsrpt_lmtp.views.model import Rest, Summary

# C0, DEL, C1, and the Unicode line/paragraph separators and bidi/format controls
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")

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


def clean(text: str) -> str:
    """Untrusted text without control characters (terminal escapes, NUL, bidi overrides):
    each becomes '?'. Every renderer passes every report value through this."""
    return _CONTROL.sub("?", text)


def u_label(domain: str) -> str:
    """A domain as people write it: U-labels (tlsrpt_lmtp.core.names, UTS 46), or as stored when
    it does not decode. Views show this; JSON and events keep the stored A-labels."""
    return to_unicode(domain) if "xn--" in domain.lower() else domain


def domain_label(domain: str) -> str:
    return u_label(domain) if domain else NO_DOMAIN


def rest_line(rest: Rest, what: str) -> str | None:
    """The one line for what a top-N list leaves out, or None when it leaves nothing out."""
    if rest.count <= 0:
        return None
    parts = []
    if rest.reports:
        parts.append(f"{num(rest.reports)} reports")
    if rest.sessions:
        parts.append(f"{num(rest.sessions)} sessions")
    parts.append(f"{num(rest.failed)} failed")
    return f"… {num(rest.count)} more {what}: {', '.join(parts)} (--top 0: all)"


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
    return f"domain {domain_label(summary.domain)}" if summary.domain else "all policy domains"


def findings_rest(summary: Summary) -> str | None:
    """The one line for the findings a top-N list leaves out, by kind."""
    left = summary.findings[summary.top :] if summary.top > 0 else ()
    if not left:
        return None
    kinds: dict[str, int] = {}
    for f in left:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    parts = ", ".join(f"{num(n)} {kind}" for kind, n in sorted(kinds.items()))
    return f"… {num(len(left))} more findings: {parts} (--top 0: all)"


COUNTING = (
    "Sessions are the senders' session counts, never reports or rows; a domain reported under"
    " several policy types in one report counts the maximum of them, not the sum."
)


def headline(summary: Summary) -> str:
    t = summary.totals
    return (
        f"{num(t.reports)} reports from {num(t.organizations)} organisations about"
        f" {num(t.domains)} policy domains; {num(t.sessions)} sessions, {num(t.failed)} failed"
        f" ({pct(t.success_rate)} successful); covering {covered(t.first, t.last)}"
    )
