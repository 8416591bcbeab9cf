"""The Markdown view (GitHub-flavoured tables), every report value escaped (pure).

"Escaped" means, checked against cmark-gfm (GitHub's renderer) in the tests: no markup, no
HTML, no extra table cell, and no link, autolinks included. Backslash escapes stop most of
them; an ``@`` cannot be escaped that way (the extended e-mail autolink runs over the text
after escapes are resolved), so a value holding one is written as a code span.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tlsrpt_lmtp.views.fmt import (
    COUNTING,
    OVER_DETAILED,
    UNATTRIBUTED,
    clean,
    covered,
    domain_label,
    findings_rest,
    headline,
    num,
    pct,
    period_label,
    rest_line,
    scope_label,
)
from tlsrpt_lmtp.views.model import Count, Summary

_SPECIAL = re.compile(r"([\\`*_{}\[\]#+!|~^$<>&:])")
_WWW = re.compile(r"(www)\.", re.IGNORECASE)
_BACKTICKS = re.compile(r"`+")


def _code(text: str) -> str:
    """A code span: no autolink inside; ``|`` still needs its escape inside a table."""
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text.replace('|', chr(92) + '|')} {fence}"


def esc(text: str) -> str:
    """Inline text that stays text: no markup, no HTML, no table cell break, one line."""
    text = " ".join(clean(text).split())
    if "@" in text:
        return _code(text)
    # no emphasis, entity or HTML; 'http\\://' and 'www\\.' make no autolink
    return _WWW.sub(r"\1\\.", _SPECIAL.sub(r"\\\1", text))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    sep = ["---:" if i in right else "---" for i in range(len(header))]
    return [f"| {' | '.join(r)} |" for r in (header, sep, *rows)]


def _types(counts: Sequence[Count], unattributed: int = 0, over: int = 0) -> str:
    parts = [f"{esc(c.result_type)} {num(c.sessions)}" for c in counts]
    if unattributed:
        parts.append(f"*{UNATTRIBUTED}* {num(unattributed)}")
    if over:
        parts.append(f"*{OVER_DETAILED}* +{num(over)}")
    return ", ".join(parts) or "-"


def _rest(line: str | None) -> list[str]:
    return ["", esc(line)] if line else []


def _domains(s: Summary) -> list[str]:
    shown = s.shown(s.domains)
    head = ["Policy domain", "Policies", "Reports", "Sessions", "Failed", "Success", "Failures"]
    rows = [
        [
            esc(domain_label(d.domain)),
            esc(", ".join(d.policies)),
            num(d.reports),
            num(d.sessions),
            num(d.failed),
            pct(d.success_rate),
            _types(d.result_types, d.unattributed, d.over_detailed),
        ]
        for d in shown
    ]
    title = f"## Policy domains ({num(len(shown))} of {num(len(s.domains))}, worst first)"
    body = _table(head, rows, {2, 3, 4, 5}) if rows else ["No reports."]
    return [title, "", *body, *_rest(rest_line(s.rest(s.domains), "domains")), ""]


def _policies(s: Summary) -> list[str]:
    head = ["Policy", "Reports", "Sessions", "Failed", "Success"]
    rows = [
        [esc(g.policy), num(g.reports), num(g.sessions), num(g.failed), pct(g.success_rate)]
        for g in s.groups
    ]
    return [
        "## Policies (each policy's own numbers)",
        "",
        *_table(head, rows, {1, 2, 3, 4}),
        "",
    ]


def _orgs(s: Summary) -> list[str]:
    shown = s.shown(s.orgs)
    head = ["Organisation", "Domains", "Reports", "Sessions", "Failed", "Success", "Covered (UTC)"]
    rows = [
        [
            esc(o.organization),
            num(o.domains),
            num(o.reports),
            num(o.sessions),
            num(o.failed),
            pct(o.success_rate),
            covered(o.first, o.last),
        ]
        for o in shown
    ]
    title = f"## Reporting organisations ({num(len(shown))} of {num(len(s.orgs))})"
    body = _table(head, rows, {1, 2, 3, 4, 5}) if rows else ["No reports."]
    return [title, "", *body, *_rest(rest_line(s.rest(s.orgs), "organisations")), ""]


def _sources(s: Summary) -> list[str]:
    head = ["Organisation", "Sending MTA IP", "Receiving MX", "Failed", "Result types", "Covered"]
    rows = [
        [
            esc(x.organization),
            esc(x.sending_ip) or "*not given*",
            esc(domain_label(x.receiving_mx)) if x.receiving_mx else "*not given*",
            num(x.failed),
            _types(x.result_types),
            covered(x.first, x.last),
        ]
        for x in s.sources
    ]
    body = _table(head, rows, {3}) if rows else ["No failure details."]
    return ["## Failing sources", "", *body, *_rest(rest_line(s.sources_rest, "sources")), ""]


def _drill(s: Summary) -> list[str]:
    head = ["Day", "Reports", "Sessions", "Failed", "Success"]
    rows = [
        [p.day.isoformat(), num(p.reports), num(p.sessions), num(p.failed), pct(p.success_rate)]
        for series in s.daily
        for p in series.points
    ]
    out = ["## Daily", "", *_table(head, rows, {1, 2, 3, 4}), ""]
    head = ["Start (UTC)", "Organisation", "Report ID", "Sessions", "Failed", "Archive ID"]
    rows = [
        [
            r.start.strftime("%Y-%m-%d %H:%M"),
            esc(r.organization),
            esc(r.report_id),
            num(r.sessions),
            num(r.failed),
            esc(r.archive_id),
        ]
        for r in s.reports
    ]
    out += ["## Reports (failing first, then newest)", "", *_table(head, rows, {3, 4})]
    return [*out, *_rest(rest_line(s.reports_rest, "reports")), ""]


def render(summary: Summary, *, views: Sequence[str] = ("result", "source")) -> str:
    s = summary
    lines = [
        f"# TLS reporting summary: {esc(scope_label(s))}",
        "",
        f"{esc(period_label(s).capitalize())}. {esc(headline(s))}.",
        "",
        esc(COUNTING),
        "",
    ]
    if s.findings:
        lines += ["## Findings", ""]
        lines += [f"- **{esc(f.kind)}** {esc(f.message)}" for f in s.shown(s.findings)]
        lines += _rest(findings_rest(s))
        lines.append("")
    if "result" in views:
        lines += _domains(s)
        if s.domain is not None and s.groups:
            lines += _policies(s)
    if "source" in views:
        lines += _orgs(s) + _sources(s)
    if s.domain is not None:
        lines += _drill(s)
    return "\n".join(lines).rstrip("\n") + "\n"
