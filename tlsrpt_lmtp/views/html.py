"""The HTML view: self-contained pages (inline CSS and SVG; no script, font or remote URL).

A Content-Security-Policy of default-src 'none' makes the browser refuse any load at all,
and every value from a report goes through ``e`` (control characters out, then html.escape,
quotes included). The overview stays small at any scale: totals, findings, one chart of all
domains together, the worst N domains with their charts, an index of every domain (one short
row each), the top organisations and failing sources. A drill-down is a section of the page
(for the worst N) or a page of its own (``render_domain``, for ``--output DIR``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from html import escape

from tlsrpt_lmtp.views.fmt import (
    COUNTING,
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
from tlsrpt_lmtp.views.model import DomainSeries, DomainSummary, Summary
from tlsrpt_lmtp.views.svg import chart

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#263238;
margin:24px auto;max-width:1100px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #cfd8dc}
h3{font-size:15px;margin:18px 0 4px}
p.sub{color:#546e7a;margin:0 0 12px}
dl.totals{display:flex;flex-wrap:wrap;gap:8px 28px;margin:12px 0}
dl.totals div{min-width:90px}
dt{color:#607d8b;font-size:12px}dd{margin:0;font-size:20px;font-weight:600}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{padding:3px 8px;text-align:left;border-bottom:1px solid #eceff1;vertical-align:top}
th{background:#f5f7f8;font-weight:600}td.n,th.n,#index td+td+td{text-align:right;
font-variant-numeric:tabular-nums}
tr.rest td{color:#78909c;font-style:italic}
.bad{color:#c62828}.warn{color:#ef6c00}.good{color:#2e7d32}
figure{margin:10px 0 18px}figcaption{font-weight:600;margin-bottom:2px}
svg.chart{max-width:100%;height:auto;background:#fbfcfc;border:1px solid #eceff1}
td.d{white-space:nowrap}td.id{font-family:monospace;font-size:12px;word-break:break-all}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:0 18px}
section.domain{border-top:2px solid #b0bec5;margin-top:24px}
footer{color:#78909c;font-size:12px;margin-top:28px}
"""

Link = Callable[[str], str | None]  # domain -> href of its drill-down, or None


def e(text: str) -> str:
    return escape(clean(text), quote=True)


def anchor(domain: str) -> str:
    return "d-" + hashlib.sha256(domain.encode()).hexdigest()[:12]


_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,200}$")


def page_name(domain: str) -> str:
    """The file of a domain's page under --output DIR: its A-label when that is a plain
    name, else a hash (a report's domain never becomes a path)."""
    if _SAFE_NAME.match(domain) and ".." not in domain:
        return f"domain-{domain}.html"
    return f"domain-{anchor(domain)}.html"


def _rc(rate: float | None) -> str:
    if rate is None:
        return ""
    return "good" if rate >= 0.999 else "warn" if rate >= 0.95 else "bad"


def _n(key: str, value: str, extra: str = "") -> str:
    return f'<td class="n {extra}" data-k="{key}">{value}</td>'


def _rest(line: str | None, cols: int) -> list[str]:
    return [f'<tr class="rest"><td colspan="{cols}">{e(line)}</td></tr>'] if line else []


def _name(domain: str, link: Link) -> str:
    href = link(domain)
    label = e(domain_label(domain))
    return f'<a href="{e(href)}">{label}</a>' if href else label


def _worst(s: Summary, link: Link) -> list[str]:
    shown = s.shown(s.domains)
    out = [
        f'<section id="worst"><h2>Worst {num(len(shown))} of {num(len(s.domains))} policy'
        " domains</h2>",
        '<table class="by-result"><thead><tr><th>Policy domain</th><th>Policies</th>'
        '<th class="n">Reports</th><th class="n">Sessions</th><th class="n">Failed</th>'
        '<th class="n">Success</th><th>Failures by result type</th></tr></thead><tbody>',
    ]
    for d in shown:
        types = ", ".join(f"{e(c.result_type)} {num(c.sessions)}" for c in d.result_types)
        if d.unattributed:
            types += f"{', ' if types else ''}<em>{UNATTRIBUTED}</em> {num(d.unattributed)}"
        out.append(
            f'<tr class="group" data-domain="{e(d.domain)}"><td>{_name(d.domain, link)}</td>'
            f"<td>{e(', '.join(d.policies))}</td>"
            + _n("reports", num(d.reports))
            + _n("sessions", num(d.sessions))
            + _n("failed", num(d.failed), "bad" if d.failed else "")
            + _n("success", pct(d.success_rate), _rc(d.success_rate))
            + f"<td>{types}</td></tr>"
        )
    if not s.domains:
        out.append('<tr><td colspan="7">No reports in this period.</td></tr>')
    out += _rest(rest_line(s.rest(s.domains), "domains"), 7)
    out.append("</tbody></table></section>")
    return out


def _index(s: Summary, link: Link) -> list[str]:
    out = [
        f'<section id="index"><h2>Every policy domain ({num(len(s.domains))})</h2>',
        '<p class="sub">Worst success rate first. Reports, sessions, failed, success.</p>',
        "<table><thead><tr><th>Policy domain</th><th>Policies</th><th>Reports</th>"
        "<th>Sessions</th><th>Failed</th><th>Success</th></tr></thead><tbody>",
    ]
    for d in s.domains:  # one short row each: this table is most of a 5,000-domain page
        out.append(
            f"<tr><td>{_name(d.domain, link)}</td><td>{e(','.join(d.policies))}</td>"
            f"<td>{num(d.reports)}</td><td>{num(d.sessions)}</td><td>{num(d.failed)}</td>"
            f"<td>{pct(d.success_rate)}</td></tr>"
        )
    out.append("</tbody></table></section>")
    return out


def _orgs(s: Summary) -> list[str]:
    shown = s.shown(s.orgs)
    out = [
        f'<section id="by-source"><h2>Reporting organisations ({num(len(shown))} of'
        f" {num(len(s.orgs))})</h2>",
        '<table class="by-source"><thead><tr><th>Organisation</th><th class="n">Domains</th>'
        '<th class="n">Reports</th><th class="n">Sessions</th><th class="n">Failed</th>'
        '<th class="n">Success</th><th>Covered (UTC)</th></tr></thead><tbody>',
    ]
    for o in shown:
        out.append(
            f'<tr class="org" data-org="{e(o.organization)}"><td>{e(o.organization)}</td>'
            + _n("domains", num(o.domains))
            + _n("reports", num(o.reports))
            + _n("sessions", num(o.sessions))
            + _n("failed", num(o.failed), "bad" if o.failed else "")
            + _n("success", pct(o.success_rate), _rc(o.success_rate))
            + f'<td class="d">{covered(o.first, o.last)}</td></tr>'
        )
    out += _rest(rest_line(s.rest(s.orgs), "organisations"), 7)
    out.append("</tbody></table></section>")
    return out


def _sources(s: Summary) -> list[str]:
    out = [
        '<section id="sources"><h2>Failing sources</h2>',
        '<table class="sources"><thead><tr><th>Organisation</th><th>Sending MTA IP</th>'
        '<th>Receiving MX</th><th class="n">Failed</th><th>Result types</th>'
        "<th>Covered (UTC)</th></tr></thead><tbody>",
    ]
    for x in s.sources:
        types = ", ".join(f"{e(c.result_type)} {num(c.sessions)}" for c in x.result_types)
        mx = domain_label(x.receiving_mx) if x.receiving_mx else "(not given)"
        out.append(
            f'<tr class="source" data-org="{e(x.organization)}" data-ip="{e(x.sending_ip)}"'
            f' data-mx="{e(x.receiving_mx)}"><td>{e(x.organization)}</td>'
            f"<td>{e(x.sending_ip or '(not given)')}</td><td>{e(mx)}</td>"
            + _n("failed", num(x.failed))
            + f'<td>{types}</td><td class="d">{covered(x.first, x.last)}</td></tr>'
        )
    if not s.sources:
        out.append('<tr><td colspan="6">No failure details in this period.</td></tr>')
    out += _rest(rest_line(s.sources_rest, "sources"), 6)
    out.append("</tbody></table></section>")
    return out


def _figure(s: Summary, series: DomainSeries, label: str) -> str:
    p = s.period
    first = p.start.date() if p.start and p.end else None
    last = p.end.date() if p.start and p.end else None
    return (
        f'<figure data-domain="{e(series.domain)}"><figcaption>{e(label)}</figcaption>'
        f"{chart(series, first=first, last=last)}</figure>"
    )


def _domain_section(s: Summary, d: DomainSummary) -> list[str]:
    """The drill-down of one domain that the summary holds details for."""
    out = [
        f'<section class="domain" id="{anchor(d.domain)}" data-domain="{e(d.domain)}">',
        f"<h3>{e(domain_label(d.domain))}</h3>",
        f'<p class="sub">{num(d.reports)} reports from {num(d.organizations)} organisations;'
        f" {num(d.sessions)} sessions, {num(d.failed)} failed ({pct(d.success_rate)});"
        f" covering {covered(d.first, d.last)}.</p>",
        '<table class="policies"><thead><tr><th>Policy</th><th class="n">Reports</th>'
        '<th class="n">Sessions</th><th class="n">Failed</th><th class="n">Success</th></tr>'
        "</thead><tbody>",
    ]
    for g in s.groups:
        if g.domain == d.domain:
            out.append(
                f'<tr data-policy="{e(g.policy)}"><td>{e(g.policy)}</td>'
                + _n("reports", num(g.reports))
                + _n("sessions", num(g.sessions))
                + _n("failed", num(g.failed))
                + _n("success", pct(g.success_rate), _rc(g.success_rate))
                + "</tr>"
            )
    out.append("</tbody></table>")
    series = next((x for x in s.daily if x.domain == d.domain), None)
    if series is not None:
        out.append(_figure(s, series, f"Daily success rate: {domain_label(d.domain)}"))
    out.append("</section>")
    return out


def _reports(s: Summary) -> list[str]:
    out = [
        '<section id="reports"><h2>Reports</h2><table class="reports"><thead><tr>'
        "<th>Start (UTC)</th><th>Organisation</th><th>Report ID</th>"
        '<th class="n">Sessions</th><th class="n">Failed</th><th>Archive ID</th></tr></thead>'
        "<tbody>"
    ]
    for r in s.reports:
        out.append(
            f'<tr class="report"><td class="d">{r.start.strftime("%Y-%m-%d %H:%M")}</td>'
            f"<td>{e(r.organization)}</td><td>{e(r.report_id)}</td>"
            + _n("sessions", num(r.sessions))
            + _n("failed", num(r.failed))
            + f'<td class="id" data-k="archive">{e(r.archive_id)}</td></tr>'
        )
    out += _rest(rest_line(s.reports_rest, "reports"), 6)
    out.append("</tbody></table></section>")
    return out


def _head(title: str) -> list[str]:
    return [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
    ]


def _top(s: Summary, title: str) -> list[str]:
    t = s.totals
    totals = [
        ("reports", "Reports", num(t.reports)),
        ("organizations", "Organisations", num(t.organizations)),
        ("domains", "Policy domains", num(t.domains)),
        ("sessions", "Sessions", num(t.sessions)),
        ("failed", "Failed sessions", num(t.failed)),
        ("success", "Successful", pct(t.success_rate)),
    ]
    out = [
        f"<header><h1>{e(title)}</h1>",
        f'<p class="sub">{e(period_label(s).capitalize())}; covering'
        f" {covered(t.first, t.last)}. {e(COUNTING)}</p>",
        '<dl class="totals">',
        *(f'<div><dt>{label}</dt><dd data-k="{k}">{v}</dd></div>' for k, label, v in totals),
        "</dl></header>",
    ]
    if s.findings:
        out.append('<section id="findings"><h2>Findings</h2><ul>')
        out += [
            f'<li class="{e(f.severity)}" data-kind="{e(f.kind)}"><strong>{e(f.kind)}</strong>'
            f" {e(f.message)}</li>"
            for f in s.shown(s.findings)
        ]
        rest = findings_rest(s)
        out.append("</ul>" + (f'<p class="sub">{e(rest)}</p>' if rest else "") + "</section>")
    return out


def _foot(s: Summary) -> str:
    return (
        f"<footer>{e(headline(s))}. Failed sessions are the senders' summary counts;"
        " failures by result type come from their failure details, which need not add up:"
        f" <em>{UNATTRIBUTED}</em> is what the summaries count beyond the details."
        f" Generated {s.generated_at.strftime('%Y-%m-%d %H:%M')} UTC by tlsrpt-lmtp.</footer>"
        "</body></html>\n"
    )


def render(
    summary: Summary, *, views: Sequence[str] = ("result", "source"), link: Link | None = None
) -> str:
    """The overview (or, with a domain, its drill-down page). ``link`` gives each domain's
    drill-down href; by default the in-page section of the worst N."""
    s = summary
    detailed = {x.domain for x in s.daily}
    if link is None:
        link = lambda d: f"#{anchor(d)}" if d in detailed else None  # noqa: E731
    title = f"TLS reporting summary: {scope_label(s)}"
    out = [*_head(title), *_top(s, title)]
    if s.overall.points and s.domain is None:
        out.append('<section id="daily"><h2>Daily success rate, all domains</h2>')
        out.append(_figure(s, s.overall, "All policy domains"))
        out.append("</section>")
    if "result" in views:
        out += _worst(s, link)
    if "source" in views:
        out += _orgs(s) + _sources(s)
    if "result" in views:
        out.append('<section id="details"><h2>Drill-down</h2>')
        for d in s.domains:
            if d.domain in detailed:
                out += _domain_section(s, d)
        out.append("</section>")
        if s.domain is None:
            out += _index(s, link)
    if s.domain is not None:
        out += _reports(s)
    out.append(_foot(s))
    return "\n".join(out)
