"""The HTML view: one self-contained file (inline CSS and SVG; no script, font or remote URL).

A Content-Security-Policy of default-src 'none' makes the browser refuse any load at all,
and every value from a report goes through ``e`` (html.escape, quotes included).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

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
from tlsrpt_lmtp.views.model import OrgSummary, ResultGroup, Summary
from tlsrpt_lmtp.views.svg import chart

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#263238;
margin:24px auto;max-width:1100px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #cfd8dc}
p.sub{color:#546e7a;margin:0 0 12px}
dl.totals{display:flex;flex-wrap:wrap;gap:8px 28px;margin:12px 0}
dl.totals div{min-width:90px}
dt{color:#607d8b;font-size:12px}dd{margin:0;font-size:20px;font-weight:600}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{padding:4px 8px;text-align:left;border-bottom:1px solid #eceff1;vertical-align:top}
th{background:#f5f7f8;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.group td,tr.org td{border-top:1px solid #b0bec5;font-weight:600}
tr.rtype td,tr.source td{color:#455a64}
tr.rtype td:first-child,tr.source td:first-child{padding-left:28px}
tr.note td{color:#78909c;font-style:italic}
.bad{color:#c62828}.warn{color:#ef6c00}.good{color:#2e7d32}
figure{margin:10px 0 18px}figcaption{font-weight:600;margin-bottom:2px}
svg.chart{max-width:100%;height:auto;background:#fbfcfc;border:1px solid #eceff1}
td.d{white-space:nowrap}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:0 18px}
footer{color:#78909c;font-size:12px;margin-top:28px}
"""


def e(text: str) -> str:
    return escape(text, quote=True)


def _rate_class(rate: float | None) -> str:
    if rate is None:
        return ""
    return "good" if rate >= 0.999 else "warn" if rate >= 0.95 else "bad"


def _n(key: str, value: str, extra: str = "") -> str:
    return f'<td class="n {extra}" data-k="{key}">{value}</td>'


def _by_result(groups: Sequence[ResultGroup]) -> list[str]:
    out = [
        '<section id="by-result"><h2>By result <small>(worst success rate first)</small></h2>',
        '<table class="by-result"><thead><tr><th>Policy domain</th><th>Policy</th>'
        '<th class="n">Reports</th><th class="n">Sessions</th><th class="n">Failed</th>'
        '<th class="n">Success</th></tr></thead><tbody>',
    ]
    for g in groups:
        keys = f'data-domain="{e(g.domain)}" data-policy="{e(g.policy)}"'
        out.append(
            f'<tr class="group" {keys}><td>{e(domain_label(g.domain))}</td><td>{e(g.policy)}</td>'
            + _n("reports", num(g.reports))
            + _n("sessions", num(g.sessions))
            + _n("failed", num(g.failed), "bad" if g.failed else "")
            + _n("success", pct(g.success_rate), _rate_class(g.success_rate))
            + "</tr>"
        )
        for c in g.result_types:
            out.append(
                f'<tr class="rtype" {keys} data-result-type="{e(c.result_type)}">'
                f'<td colspan="2">{e(c.result_type)}</td>'
                + _n("reports", num(c.reports))
                + "<td></td>"
                + _n("failed", num(c.sessions))
                + "<td></td></tr>"
            )
        if g.unattributed:
            out.append(
                f'<tr class="rtype note" {keys} data-result-type="{UNATTRIBUTED}">'
                f'<td colspan="2">{UNATTRIBUTED} (in the summary, no failure detail)</td>'
                f"<td></td><td></td>{_n('failed', num(g.unattributed))}<td></td></tr>"
            )
        if g.over_detailed:
            out.append(
                f'<tr class="rtype note" {keys} data-result-type="{OVER_DETAILED}">'
                f'<td colspan="2">{OVER_DETAILED} (details list more than the summary)</td>'
                f"<td></td><td></td>{_n('failed', '+' + num(g.over_detailed))}<td></td></tr>"
            )
    if not groups:
        out.append('<tr><td colspan="6">No reports in this period.</td></tr>')
    out.append("</tbody></table></section>")
    return out


def _org_rows(o: OrgSummary) -> list[str]:
    key = f'data-org="{e(o.organization)}"'
    out = [
        f'<tr class="org" {key}><td>{e(o.organization)}</td>'
        + _n("reports", num(o.reports))
        + _n("sessions", num(o.sessions))
        + _n("failed", num(o.failed), "bad" if o.failed else "")
        + _n("success", pct(o.success_rate), _rate_class(o.success_rate))
        + f'<td></td><td class="d">{covered(o.first, o.last)}</td></tr>'
    ]
    for s in o.sources:
        types = ", ".join(f"{e(c.result_type)} {num(c.sessions)}" for c in s.result_types)
        out.append(
            f'<tr class="source" {key} data-ip="{e(s.sending_ip)}" data-mx="{e(s.receiving_mx)}">'
            f"<td>{e(s.sending_ip or '(sending IP not given)')} → "
            f"{e(s.receiving_mx or '(MX not given)')}</td><td></td><td></td>"
            + _n("failed", num(s.failed))
            + f'<td></td><td>{types}</td><td class="d">{covered(s.first, s.last)}</td></tr>'
        )
    notes = []
    if o.unattributed:
        notes.append(
            f"{num(o.unattributed)} failed sessions with no failure detail ({UNATTRIBUTED})"
        )
    if o.over_detailed:
        notes.append(f"the details list {num(o.over_detailed)} more failures than the summaries")
    if notes:
        out.append(f'<tr class="source note" {key}><td colspan="7">{"; ".join(notes)}</td></tr>')
    return out


def _by_source(orgs: Sequence[OrgSummary]) -> list[str]:
    out = [
        '<section id="by-source"><h2>By sending source</h2>',
        '<table class="by-source"><thead><tr><th>Organisation / sending MTA IP → receiving MX</th>'
        '<th class="n">Reports</th><th class="n">Sessions</th><th class="n">Failed</th>'
        '<th class="n">Success</th><th>Result types</th><th>Covered (UTC)</th></tr></thead><tbody>',
    ]
    for o in orgs:
        out += _org_rows(o)
    if not orgs:
        out.append('<tr><td colspan="7">No reports in this period.</td></tr>')
    out.append("</tbody></table></section>")
    return out


def _charts(summary: Summary) -> list[str]:
    p = summary.period
    first = p.start.date() if p.start and p.end else None
    last = p.end.date() if p.start and p.end else None
    out = ['<section id="daily"><h2>Daily success rate per policy domain</h2>']
    out.append(
        '<p class="sub">Each point: the reports whose date range starts that day (UTC);'
        " red points had failures.</p>"
    )
    out.append('<div class="charts">')
    for series in summary.daily:
        out.append(
            f'<figure data-domain="{e(series.domain)}"><figcaption>'
            f"{e(domain_label(series.domain))}</figcaption>"
            f"{chart(series, first=first, last=last)}</figure>"
        )
    out.append("</div>")
    if not summary.daily:
        out.append("<p>No reports in this period.</p>")
    out.append("</section>")
    return out


def render(summary: Summary, *, views: Sequence[str] = ("result", "source")) -> str:
    t = summary.totals
    title = f"TLS reporting summary: {scope_label(summary)}"
    totals = [
        ("reports", "Reports", num(t.reports)),
        ("organizations", "Organisations", num(t.organizations)),
        ("domains", "Policy domains", num(t.domains)),
        ("sessions", "Sessions", num(t.sessions)),
        ("failed", "Failed", num(t.failed)),
        ("success", "Successful", pct(t.success_rate)),
    ]
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{e(title)}</h1>",
        f'<p class="sub">{e(period_label(summary).capitalize())}; covering'
        f" {covered(t.first, t.last)}.</p>",
        '<dl class="totals">',
        *(f'<div><dt>{label}</dt><dd data-k="{k}">{v}</dd></div>' for k, label, v in totals),
        "</dl></header>",
    ]
    if "result" in views:
        out += _by_result(summary.by_result)
    if "source" in views:
        out += _by_source(summary.by_source)
    out += _charts(summary)
    out.append(
        f"<footer>{e(headline(summary))}. Failed sessions are the senders' summary counts;"
        " failures by result type come from their failure details, which need not add up:"
        f" <em>{UNATTRIBUTED}</em> is what the summaries count beyond the details."
        f" Generated {summary.generated_at.strftime('%Y-%m-%d %H:%M')} UTC by tlsrpt-lmtp.</footer>"
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
