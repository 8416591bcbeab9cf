"""The Markdown view (GitHub-flavoured tables), every report value escaped (pure)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tlsrpt_lmtp.views.fmt import (
    OVER_DETAILED,
    UNATTRIBUTED,
    covered,
    domain_label,
    headline,
    num,
    pct,
    period_label,
    scope_label,
)
from tlsrpt_lmtp.views.model import Count, OrgSummary, ResultGroup, Summary

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPECIAL = re.compile(r"([\\`*_{}\[\]#+!|~^$])")


def esc(text: str) -> str:
    """Inline text that stays text: no markup, no HTML, no table cell break, one line."""
    text = _CONTROL.sub(" ", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\1", text).replace("://", "\\://")  # no autolink either


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    sep = ["---:" if i in right else "---" for i in range(len(header))]
    return [f"| {' | '.join(r)} |" for r in (header, sep, *rows)]


def _types(counts: Sequence[Count], unattributed: int, over: int) -> str:
    parts = [f"{esc(c.result_type)} {num(c.sessions)}" for c in counts]
    if unattributed:
        parts.append(f"*{UNATTRIBUTED}* {num(unattributed)}")
    if over:
        parts.append(f"*{OVER_DETAILED}* +{num(over)}")
    return ", ".join(parts) or "-"


def _by_result(groups: Sequence[ResultGroup]) -> list[str]:
    header = [
        "Policy domain",
        "Policy",
        "Reports",
        "Sessions",
        "Failed",
        "Success",
        "Failures by result type",
    ]
    rows = [
        [
            esc(domain_label(g.domain)),
            esc(g.policy),
            num(g.reports),
            num(g.sessions),
            num(g.failed),
            pct(g.success_rate),
            _types(g.result_types, g.unattributed, g.over_detailed),
        ]
        for g in groups
    ]
    return _table(header, rows, {2, 3, 4, 5})


def _org_table(orgs: Sequence[OrgSummary]) -> list[str]:
    header = ["Organisation", "Reports", "Sessions", "Failed", "Success", "Covered (UTC)"]
    rows = [
        [
            esc(o.organization),
            num(o.reports),
            num(o.sessions),
            num(o.failed),
            pct(o.success_rate),
            covered(o.first, o.last),
        ]
        for o in orgs
    ]
    return _table(header, rows, {1, 2, 3, 4})


def _sources(o: OrgSummary) -> list[str]:
    lines = [f"### {esc(o.organization)}", ""]
    rows = [
        [
            esc(s.sending_ip) or "*not given*",
            esc(s.receiving_mx) or "*not given*",
            num(s.failed),
            _types(s.result_types, 0, 0),
            covered(s.first, s.last),
        ]
        for s in o.sources
    ]
    header = ["Sending MTA IP", "Receiving MX", "Failed", "Result types", "Covered (UTC)"]
    lines += _table(header, rows, {2}) if rows else ["No failure details."]
    if o.unattributed:
        lines += [
            "",
            f"{num(o.unattributed)} failed sessions have no failure detail ({UNATTRIBUTED}).",
        ]
    if o.over_detailed:
        lines += [
            "",
            f"The failure details list {num(o.over_detailed)} more failed sessions"
            " than the summaries.",
        ]
    return [*lines, ""]


def render(summary: Summary, *, views: Sequence[str] = ("result", "source")) -> str:
    lines = [
        f"# TLS reporting summary: {esc(scope_label(summary))}",
        "",
        f"{esc(period_label(summary).capitalize())}. {esc(headline(summary))}.",
        "",
    ]
    if "result" in views:
        lines += ["## By result (worst success rate first)", ""]
        lines += _by_result(summary.by_result) if summary.by_result else ["No reports."]
        lines.append("")
    if "source" in views:
        lines += ["## By sending source", ""]
        lines += _org_table(summary.by_source) if summary.by_source else ["No reports."]
        lines.append("")
        for o in summary.by_source:
            if o.sources or o.unattributed or o.over_detailed:
                lines += _sources(o)
    return "\n".join(lines).rstrip("\n") + "\n"
