"""The terminal view: plain-text tables that fit in 100 columns (pure)."""

from __future__ import annotations

import unicodedata
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

WIDTH = 100


def clean(text: str) -> str:
    """Untrusted text made safe for a terminal: control characters (escapes!) become '?'."""
    return "".join(
        "?" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text
    )


def fit(text: str, width: int) -> str:
    text = clean(text)
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _row(
    first: str, cells: Sequence[str], widths: Sequence[int], first_width: int, *, left: int = -1
) -> str:
    """First column left-aligned and cut to fit; the others right-aligned, but cell ``left``."""
    parts = [fit(first, first_width).ljust(first_width)]
    parts += [
        fit(c, w).ljust(w) if i == left else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(parts).rstrip()


# By result: Policy domain | Policy | Reports | Sessions | Failed | Success
_R_WIDTHS = (7, 11, 11, 8)
_R_POLICY = 16
_R_FIRST = WIDTH - _R_POLICY - sum(_R_WIDTHS) - 2 * (len(_R_WIDTHS) + 1)


def _by_result(groups: Sequence[ResultGroup]) -> list[str]:
    lines = [
        "BY RESULT (worst success rate first; failures by result type from the failure details)",
        _row(
            "Policy domain",
            ["Policy", "Reports", "Sessions", "Failed", "Success"],
            (_R_POLICY, *_R_WIDTHS),
            _R_FIRST,
            left=0,
        ),
    ]
    for g in groups:
        cells = [num(g.reports), num(g.sessions), num(g.failed), pct(g.success_rate)]
        lines.append(
            _row(
                domain_label(g.domain),
                [g.policy, *cells],
                (_R_POLICY, *_R_WIDTHS),
                _R_FIRST,
                left=0,
            )
        )
        sub = [(f"  {c.result_type}", num(c.reports), num(c.sessions)) for c in g.result_types]
        if g.unattributed:
            sub.append((f"  {UNATTRIBUTED} (no detail given)", "", num(g.unattributed)))
        if g.over_detailed:
            sub.append((f"  {OVER_DETAILED}", "", f"+{num(g.over_detailed)}"))
        for name, reports, failed in sub:
            cells = ["", reports, "", failed, ""]
            lines.append(_row(name, cells, (_R_POLICY, *_R_WIDTHS), _R_FIRST))
    if not groups:
        lines.append("(no reports in this period)")
    return lines


# By source: Organisation | Reports | Sessions | Failed | Success | Covered
_S_WIDTHS = (7, 11, 11, 8, 22)
_S_FIRST = WIDTH - sum(_S_WIDTHS) - 2 * len(_S_WIDTHS)


def _types(counts: Sequence[Count]) -> str:
    return ", ".join(f"{c.result_type} {num(c.sessions)}" for c in counts)


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


def _org(o: OrgSummary) -> list[str]:
    cells = [
        num(o.reports),
        num(o.sessions),
        num(o.failed),
        pct(o.success_rate),
        covered(o.first, o.last),
    ]
    lines = [_row(o.organization, cells, _S_WIDTHS, _S_FIRST, left=4)]
    for s in o.sources:
        right = f"{num(s.failed):>11} failed  {covered(s.first, s.last):<22}".rstrip()
        room = WIDTH - 2 - len(f"{'':>11} failed  {'':<22}")
        left = (
            f"  {s.sending_ip or '(sending IP not given)'} → {s.receiving_mx or '(MX not given)'}"
        )
        lines.append(fit(left, room).ljust(room) + "  " + right)
        lines += _wrap(_types(s.result_types), "      ")
    if o.unattributed:
        lines.append(f"  {UNATTRIBUTED}: {num(o.unattributed)} failed sessions with no detail")
    if o.over_detailed:
        lines.append(f"  {OVER_DETAILED}: details list {num(o.over_detailed)} more failures")
    return lines


def _by_source(orgs: Sequence[OrgSummary]) -> list[str]:
    lines = [
        "BY SENDING SOURCE (reporting organisation; failures per sending MTA IP → receiving MX)",
        _row(
            "Organisation",
            ["Reports", "Sessions", "Failed", "Success", "Covered (UTC)"],
            _S_WIDTHS,
            _S_FIRST,
            left=4,
        ),
    ]
    for o in orgs:
        lines += _org(o)
    if not orgs:
        lines.append("(no reports in this period)")
    return lines


def render(summary: Summary, *, views: Sequence[str] = ("result", "source")) -> str:
    lines = [
        fit(f"TLS reporting summary: {scope_label(summary)}, {period_label(summary)}", WIDTH),
        *_wrap(headline(summary), ""),
    ]
    if "result" in views:
        lines += ["", *_by_result(summary.by_result)]
    if "source" in views:
        lines += ["", *_by_source(summary.by_source)]
    return "\n".join(lines) + "\n"
