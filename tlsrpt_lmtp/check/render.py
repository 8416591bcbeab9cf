"""A check report for people (lines of at most 100 columns) and for scripts (JSON).

Findings quote what servers sent (SMTP replies, TXT records, policy files): every value is
passed through ``textsafe`` so that no control character reaches the terminal raw.
"""

from __future__ import annotations

import json
import textwrap

from tlsrpt_lmtp.check.findings import Finding, Report, Severity
from tlsrpt_lmtp.core.textsafe import json_escaped, printable

WIDTH = 100
_SEVERITY_COLUMN = 6
_CHECK_COLUMN = 15
_INDENT = " " * (_SEVERITY_COLUMN + _CHECK_COLUMN)


def text(report: Report, width: int = WIDTH) -> str:
    when = report.checked_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    out = [f"check of {printable(report.domain)} at {when}"]
    for finding in report.findings:
        out += _finding(finding, width)
    out.append(_summary(report))
    return "\n".join(out) + "\n"


def _finding(f: Finding, width: int) -> list[str]:
    head = f"{f.severity:<{_SEVERITY_COLUMN}}{f.check:<{_CHECK_COLUMN}}"
    body = f"{printable(f.subject)}: {printable(f.message)}"
    if f.result_type:
        body += f" [{printable(f.result_type)}]"
    lines = _wrap(body, head, width)
    if f.fix:
        lines += _wrap(f"fix: {printable(f.fix)}", _INDENT, width)
    return lines


def _wrap(body: str, first: str, width: int) -> list[str]:
    return textwrap.wrap(
        body,
        width=width,
        initial_indent=first,
        subsequent_indent=_INDENT,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _summary(report: Report) -> str:
    errors, warnings = report.count(Severity.ERROR), report.count(Severity.WARN)
    domain = printable(report.domain)
    counts = (
        f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)},"
        f" {report.count(Severity.OK)} ok"
    )
    if errors:
        return f"{counts}: {domain} needs fixing"
    if warnings:
        return f"{counts}: {domain} works; the warnings say what to improve"
    return f"{counts}: {domain} is set up correctly"


def as_json(report: Report) -> str:
    doc = {
        "domain": report.domain,
        "checked_at": report.checked_at.isoformat(timespec="seconds"),
        "exit_code": report.exit_code,
        "counts": {str(s): report.count(s) for s in Severity},
        "findings": [f.as_dict() for f in report.findings],
    }
    return json_escaped(json.dumps(doc, indent=2, ensure_ascii=False)) + "\n"
