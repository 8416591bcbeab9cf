"""`tlsrpt-lmtp digest`: the overview of the last period, mailed (text + HTML) or printed.

It holds the totals, the findings (silence, readiness), the top problems (the worst domains
with failures, the failing sources) and what changed against the period of the same length
just before, which is what the previous digest covered when it runs on a schedule (cron or
the systemd timer in contrib/). The findings also go out as alerts through [alerts],
deduplicated like every alert (``--no-alerts``: not).

Wiring (tlsrpt_lmtp/cli.py)::

    views_digest.add_parser(sub, *flags.EVENTS)
    if args.command == "digest":
        return views_digest.run(args)
"""

from __future__ import annotations

import argparse
import email.policy
import email.utils
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from html import escape
from typing import Any

from tlsrpt_lmtp import cliflags
from tlsrpt_lmtp.alerts import absence
from tlsrpt_lmtp.alerts.advice import safe
from tlsrpt_lmtp.alerts.config import load_alerts
from tlsrpt_lmtp.alerts.hook import build_hook
from tlsrpt_lmtp.alerts.mail import default_sender
from tlsrpt_lmtp.config import ConfigError, load, syslog_options
from tlsrpt_lmtp.output.sinks import Emitter, open_emitter
from tlsrpt_lmtp.store import Store, open_reader, open_store, target_of
from tlsrpt_lmtp.views import text
from tlsrpt_lmtp.views.cli import summarise
from tlsrpt_lmtp.views.fmt import (
    clean,
    domain_label,
    findings_rest,
    headline,
    num,
    pct,
    rest_line,
)
from tlsrpt_lmtp.views.html import CSP
from tlsrpt_lmtp.views.model import DomainSummary, Summary
from tlsrpt_lmtp.views.period import Period, PeriodError, parse_duration


@dataclass(frozen=True, slots=True)
class Change:
    domain: str
    kind: str  # 'new-failures', 'worse', 'recovered', 'better', 'silent', 'new'
    before: float | None  # success rate
    after: float | None
    failed_before: int
    failed_after: int


@dataclass(frozen=True, slots=True)
class Digest:
    summary: Summary
    previous: Summary
    changes: tuple[Change, ...]


_KIND_ORDER = ("new-failures", "worse", "silent", "new", "recovered", "better")


def compare(
    now: Sequence[DomainSummary], before: Sequence[DomainSummary], *, points: float = 0.01
) -> tuple[Change, ...]:
    """Per domain, what changed between two periods (pure): failures that appeared or went
    away, success rates that moved by more than ``points``, domains that fell silent or
    appeared. Worst news first."""
    old = {d.domain: d for d in before}
    new = {d.domain: d for d in now}
    out = []
    for name in old.keys() | new.keys():
        a, b = old.get(name), new.get(name)
        kind = None
        if a is None and b is not None:
            kind = "new"
        elif b is None and a is not None:
            kind = "silent"
        elif a is not None and b is not None:
            ra, rb = a.success_rate, b.success_rate
            if b.failed and not a.failed:
                kind = "new-failures"
            elif a.failed and not b.failed:
                kind = "recovered"
            elif ra is not None and rb is not None and rb < ra - points:
                kind = "worse"
            elif ra is not None and rb is not None and rb > ra + points:
                kind = "better"
        if kind is not None:
            out.append(
                Change(
                    name,
                    kind,
                    a.success_rate if a else None,
                    b.success_rate if b else None,
                    a.failed if a else 0,
                    b.failed if b else 0,
                )
            )
    out.sort(key=lambda c: (_KIND_ORDER.index(c.kind), -c.failed_after, -c.failed_before, c.domain))
    return tuple(out)


def _change_line(c: Change) -> str:
    what = {
        "new-failures": "now fails",
        "worse": "worse",
        "recovered": "no failures any more",
        "better": "better",
        "silent": "no reports this period",
        "new": "first reports",
    }[c.kind]
    return (
        f"{domain_label(c.domain)}: {what} ({pct(c.before)} → {pct(c.after)};"
        f" failed {num(c.failed_before)} → {num(c.failed_after)})"
    )


def _problems(s: Summary) -> list[DomainSummary]:
    return [d for d in s.shown(s.domains) if d.failed]


def render_text(d: Digest) -> str:
    s, p, top = d.summary, d.previous, d.summary.top
    lines = [
        f"TLS reporting digest: {_span(s)}",
        *text._wrap(headline(s), ""),
        *text._wrap(
            f"Before ({_span(p)}): {num(p.totals.sessions)} sessions,"
            f" {num(p.totals.failed)} failed ({pct(p.totals.success_rate)} successful).",
            "",
        ),
    ]
    if s.findings:
        lines += ["", *text.findings(s.shown(s.findings), findings_rest(s))]
    lines += ["", "TOP PROBLEMS (worst policy domains with failed sessions)"]
    problems = _problems(s)
    for x in problems:
        lines.append(
            text.fit(
                f"  {domain_label(x.domain)}: {num(x.failed)} of {num(x.sessions)} sessions"
                f" failed ({pct(x.success_rate)}), {num(x.reports)} reports",
                text.WIDTH,
            )
        )
        if x.result_types:
            lines += text._wrap(text._types(x.result_types), "      ")
    if not problems:
        lines.append("  (no failed sessions)")
    lines += ["", "FAILING SOURCES"]
    for src in s.sources:
        lines.append(
            text.fit(
                f"  {src.organization}: {src.sending_ip or '?'} → {src.receiving_mx or '?'}:"
                f" {num(src.failed)} failed",
                text.WIDTH,
            )
        )
    if not s.sources:
        lines.append("  (no failure details)")
    if line := rest_line(s.sources_rest, "sources"):
        lines.append(text.fit("  " + line, text.WIDTH))
    shown = d.changes if top <= 0 else d.changes[:top]
    lines += ["", "CHANGES SINCE THE PREVIOUS PERIOD"]
    lines += [text.fit("  " + _change_line(c), text.WIDTH) for c in shown] or ["  (none)"]
    if len(shown) < len(d.changes):
        lines.append(f"  … {num(len(d.changes) - len(shown))} more changes (--top 0: all)")
    lines += ["", "Details: tlsrpt-lmtp summary --since ... [--domain DOMAIN]"]
    return "\n".join(lines) + "\n"


def _e(value: str) -> str:
    return escape(clean(value), quote=True)


def render_html(d: Digest) -> str:
    s, top = d.summary, d.summary.top
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<title>TLS reporting digest</title></head><body style="font-family:sans-serif">',
        f"<h1>TLS reporting digest</h1><p>{_e(_span(s))}. {_e(headline(s))}.</p>",
    ]
    if s.findings:
        out.append("<h2>Findings</h2><ul>")
        out += [f"<li><b>{_e(f.kind)}</b> {_e(f.message)}</li>" for f in s.shown(s.findings)]
        out.append("</ul>")
    out.append('<h2>Top problems</h2><table border="1" cellpadding="4">')
    out.append(
        "<tr><th>Policy domain</th><th>Failed</th><th>Sessions</th><th>Success</th>"
        "<th>Result types</th></tr>"
    )
    for x in _problems(s):
        types = ", ".join(f"{_e(c.result_type)} {num(c.sessions)}" for c in x.result_types)
        out.append(
            f"<tr><td>{_e(domain_label(x.domain))}</td><td>{num(x.failed)}</td>"
            f"<td>{num(x.sessions)}</td><td>{pct(x.success_rate)}</td><td>{types}</td></tr>"
        )
    out.append("</table><h2>Changes since the previous period</h2><ul>")
    shown = d.changes if top <= 0 else d.changes[:top]
    out += [f"<li>{_e(_change_line(c))}</li>" for c in shown] or ["<li>none</li>"]
    out.append("</ul></body></html>")
    return "\n".join(out) + "\n"


def _span(s: Summary) -> str:
    start, end = s.period.start, s.period.end
    fmt = "%Y-%m-%d %H:%M"
    return f"{start.strftime(fmt) if start else '…'} to {end.strftime(fmt) if end else '…'} UTC"


def message(d: Digest, *, to: Sequence[str], sender: str) -> bytes:
    """multipart/alternative: the text, then the HTML; every header one cleaned line."""
    s = d.summary
    msg = EmailMessage(policy=email.policy.default)
    problems = sum(1 for x in s.domains if x.failed)
    msg["Subject"] = safe(
        f"[tlsrpt] digest: {num(s.totals.failed)} failed sessions in {num(problems)} domains,"
        f" {num(len(s.findings))} findings",
        150,
    )
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid("tlsrpt-digest")
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(render_text(d))
    msg.add_alternative(render_html(d), subtype="html")
    return msg.as_bytes()


def build(db: Any, now: datetime, *, since: str, top: int) -> Digest:
    length = parse_duration(since)
    period = Period(now - length, now)
    before = Period(now - 2 * length, now - length)
    current = summarise(db, period, None, now=now, top=top)
    previous = summarise(db, before, None, now=now, top=top, findings=False)
    return Digest(current, previous, compare(current.domains, previous.domains))


def add_parser(subparsers: Any, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The subcommand, with the flag groups it uses (cliflags.py) as ``parents``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "digest",
        parents=list(parents),
        help="mail (or print) the overview of the last period and what changed",
        description="The digest of the last period: totals, findings, top problems and the"
        " changes against the period before. Run it from cron or a systemd timer.",
    )
    p.add_argument("--since", default="1d", metavar="DURATION", help="the period (default 1d)")
    p.add_argument("--top", type=int, default=10, metavar="N", help="list lengths (default 10)")
    p.add_argument(
        "--mail-to",
        action="append",
        default=[],
        metavar="ADDR",
        help="send to this address (repeat); without: print the text to stdout",
    )
    p.add_argument(
        "--no-alerts",
        action="store_true",
        help="do not send the findings as alerts through [alerts]",
    )
    return p


def run(args: argparse.Namespace, *, now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    try:
        config = load(args.config, cliflags.overrides(args))
        alerts = load_alerts(args.config)
        parse_duration(args.since)
        if args.top < 0:
            raise PeriodError("--top: expected 0 (all) or more")
        db = open_reader(target_of(config.database, config.data_dir))
    except (ConfigError, PeriodError, OSError) as exc:
        print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
        return 2
    try:
        digest = build(db, now, since=args.since, top=args.top)
    except (PeriodError, OverflowError) as exc:
        print(f"tlsrpt-lmtp: --since out of range: {exc}", file=sys.stderr)
        return 2
    finally:
        db.close()
    status = 0
    if not args.no_alerts and alerts.enabled and digest.summary.findings:
        status = _alerts(args, config, digest, now)
    if not args.mail_to:
        sys.stdout.write(render_text(digest))
        return status
    data = message(digest, to=args.mail_to, sender=alerts.mail_from or default_sender())
    try:
        done = subprocess.run(
            [alerts.sendmail, "-t", "-i"],
            input=data,
            capture_output=True,
            timeout=alerts.mail_timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"tlsrpt-lmtp: cannot run {alerts.sendmail}: {exc}", file=sys.stderr)
        return 1
    if done.returncode != 0:
        err = safe(done.stderr.decode("utf-8", "replace"), 300)
        print(
            f"tlsrpt-lmtp: {alerts.sendmail} exited with {done.returncode}: {err}", file=sys.stderr
        )
        return 1
    return status


class _Stderr:
    """The events' writer when the digest itself goes to stdout."""

    def write_line(self, line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        """Not ours to close."""


def _alerts(args: argparse.Namespace, config: Any, digest: Digest, now: datetime) -> int:
    target = config.syslog_address if config.log_format == "syslog" else config.log_file
    if config.log_format != "syslog" and target in ("-", "stdout") and not args.mail_to:
        emitter = Emitter(_Stderr())  # stdout has the digest
    else:
        emitter = open_emitter(config.log_format, target, syslog=syslog_options(config))
    store: Store | None = None
    try:
        store = open_store(target_of(config.database, config.data_dir))
        hook = build_hook(args.config, store, emitter, clock=lambda: now, source="digest")
    except (ConfigError, OSError) as exc:
        print(f"tlsrpt-lmtp: findings not sent as alerts: {exc}", file=sys.stderr)
        emitter.close()
        if store is not None:
            store.close()
        return 1
    try:
        for event in absence.raise_alerts(hook, digest.summary.findings, source="digest"):
            emitter(event)
        hook.join(30)
    finally:
        hook.close()
        store.close()
        emitter.close()
    return 0
