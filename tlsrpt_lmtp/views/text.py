"""The terminal view: plain-text tables that fit in 100 columns (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from tlsrpt_lmtp.alerts.absence import Finding
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
from tlsrpt_lmtp.views.model import Count, DomainSummary, Summary

WIDTH = 100


def fit(text: str, width: int) -> str:
    text = clean(text)
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _row(first: str, cells: Sequence[str], widths: Sequence[int], *, left: int = -1) -> str:
    """First column left-aligned and cut to fit; the others right-aligned, but cell ``left``."""
    first_width = WIDTH - sum(widths) - 2 * len(widths)
    parts = [fit(first, first_width).ljust(first_width)]
    parts += [
        fit(c, w).ljust(w) if i == left else fit(c, w).rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(parts).rstrip()


def _wrap(text: str, indent: str, width: int = WIDTH) -> list[str]:
    lines, line = [], indent
    for word in clean(text).split(" "):
        if len(line) + len(word) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += fit(word, width - len(indent)) + " "
    if line.strip():
        lines.append(line.rstrip())
    return lines


def _types(counts: Sequence[Count]) -> str:
    return ", ".join(f"{c.result_type} {num(c.sessions)}" for c in counts)


def _rest(line: str | None) -> list[str]:
    return [fit(line, WIDTH)] if line else []


_D_WIDTHS = (18, 7, 11, 9, 8)


def _domain(d: DomainSummary) -> list[str]:
    cells = [",".join(d.policies), num(d.reports), num(d.sessions), num(d.failed)]
    lines = [_row(domain_label(d.domain), [*cells, pct(d.success_rate)], _D_WIDTHS, left=0)]
    if d.result_types:
        lines += _wrap(_types(d.result_types), "    ")
    if d.unattributed:
        lines.append(f"    {UNATTRIBUTED}: {num(d.unattributed)} failed sessions with no detail")
    if d.over_detailed:
        lines.append(f"    {OVER_DETAILED}: details list {num(d.over_detailed)} more failures")
    return lines


def _domains(s: Summary) -> list[str]:
    shown = s.shown(s.domains)
    lines = [
        f"POLICY DOMAINS ({num(len(shown))} of {num(len(s.domains))}, worst success rate first;"
        " failures by result type)",
        _row(
            "Policy domain",
            ["Policies", "Reports", "Sessions", "Failed", "Success"],
            _D_WIDTHS,
            left=0,
        ),
    ]
    for d in shown:
        lines += _domain(d)
    if not s.domains:
        lines.append("(no reports in this period)")
    return lines + _rest(rest_line(s.rest(s.domains), "domains"))


_P_WIDTHS = (7, 11, 9, 8)


def _policies(s: Summary) -> list[str]:
    lines = [
        "POLICIES (each policy's own numbers: a session reported under two policies is in both)",
        _row("Policy", ["Reports", "Sessions", "Failed", "Success"], _P_WIDTHS),
    ]
    for g in s.groups:
        cells = [num(g.reports), num(g.sessions), num(g.failed), pct(g.success_rate)]
        lines.append(_row(g.policy, cells, _P_WIDTHS))
    return lines


_O_WIDTHS = (7, 7, 11, 9, 8, 22)


def _orgs(s: Summary) -> list[str]:
    shown = s.shown(s.orgs)
    lines = [
        f"REPORTING ORGANISATIONS ({num(len(shown))} of {num(len(s.orgs))}, most failures first)",
        _row(
            "Organisation",
            ["Domains", "Reports", "Sessions", "Failed", "Success", "Covered (UTC)"],
            _O_WIDTHS,
            left=5,
        ),
    ]
    for o in shown:
        cells = [num(o.domains), num(o.reports), num(o.sessions), num(o.failed)]
        lines.append(
            _row(
                o.organization,
                [*cells, pct(o.success_rate), covered(o.first, o.last)],
                _O_WIDTHS,
                left=5,
            )
        )
        if o.unattributed:
            lines.append(f"    {UNATTRIBUTED}: {num(o.unattributed)} failed sessions, no detail")
    if not s.orgs:
        lines.append("(no reports in this period)")
    return lines + _rest(rest_line(s.rest(s.orgs), "organisations"))


def _sources(s: Summary) -> list[str]:
    lines = [
        "FAILING SOURCES (organisation: sending MTA IP → receiving MX, most failed sessions first)"
    ]
    for x in s.sources:
        right = f"{num(x.failed):>11} failed  {covered(x.first, x.last):<22}".rstrip()
        room = WIDTH - 2 - len(f"{'':>11} failed  {'':<22}")
        left = (
            f"{x.organization}: {x.sending_ip or '(sending IP not given)'} →"
            f" {domain_label(x.receiving_mx) if x.receiving_mx else '(MX not given)'}"
        )
        lines.append(fit(left, room).ljust(room) + "  " + right)
        lines += _wrap(_types(x.result_types), "    ")
    if not s.sources:
        lines.append("(no failure details in this period)")
    return lines + _rest(rest_line(s.sources_rest, "sources"))


def _daily(s: Summary) -> list[str]:
    widths = (7, 11, 9, 8)
    lines = ["DAILY (reports whose date range starts that day, UTC)"]
    lines.append(_row("Day", ["Reports", "Sessions", "Failed", "Success"], widths))
    for series in s.daily:
        for p in series.points:
            cells = [num(p.reports), num(p.successful + p.failed), num(p.failed)]
            lines.append(_row(p.day.isoformat(), [*cells, pct(p.success_rate)], widths))
    return lines


def _reports(s: Summary) -> list[str]:
    lines = ["REPORTS (failing first, then newest; archive id for `tlsrpt-lmtp reprocess`)"]
    for r in s.reports:
        lines.append(
            fit(
                f"{r.start.date().isoformat()}  {r.organization}  {r.report_id}:"
                f" {num(r.sessions)} sessions, {num(r.failed)} failed",
                WIDTH,
            )
        )
        lines.append(f"    archive {fit(r.archive_id, WIDTH - 12)}")
    return lines + _rest(rest_line(s.reports_rest, "reports"))


def findings(found: Sequence[Finding], rest: str | None = None) -> list[str]:
    if not found:
        return []
    lines = ["FINDINGS (silence and policy readiness; most severe first)"]
    for f in found:
        lines += _wrap(f"{f.severity.upper()} {f.kind}: {f.message}", "  ")
    return lines + _rest(rest)


def render(summary: Summary, *, views: Sequence[str] = ("result", "source")) -> str:
    s = summary
    lines = [
        fit(f"TLS reporting summary: {scope_label(s)}, {period_label(s)}", WIDTH),
        *_wrap(headline(s), ""),
        *_wrap(COUNTING, ""),
    ]
    if s.findings:
        lines += ["", *findings(s.shown(s.findings), findings_rest(s))]
    if "result" in views:
        lines += ["", *_domains(s)]
        if s.domain is not None and s.groups:
            lines += ["", *_policies(s)]
    if "source" in views:
        lines += ["", *_orgs(s), "", *_sources(s)]
    if s.domain is not None:
        lines += ["", *_daily(s), "", *_reports(s)]
    return "\n".join(lines) + "\n"
