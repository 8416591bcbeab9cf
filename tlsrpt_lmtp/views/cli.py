"""`tlsrpt-lmtp summary`: the command-line front of the views.

Wiring (tlsrpt_lmtp/cli.py)::

    from tlsrpt_lmtp.views import cli as views_cli
    views_cli.add_parser(sub, *flags.STORE)           # in _parser(), next to the other commands
    if args.command == "summary":              # in main(), before the pipeline is opened
        return views_cli.run(args)
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlsrpt_lmtp import cliflags
from tlsrpt_lmtp.alerts import absence
from tlsrpt_lmtp.config import ConfigError, load
from tlsrpt_lmtp.store import Reader, open_reader, target_of
from tlsrpt_lmtp.store.base import StoreUnavailable
from tlsrpt_lmtp.views import html, jsonout, markdown, model, query, text
from tlsrpt_lmtp.views.period import Period, PeriodError, make_period, normalise_domain

RENDERERS: dict[str, Callable[..., str]] = {
    "text": text.render,
    "markdown": markdown.render,
    "json": jsonout.render,
    "html": html.render,
}
VIEWS = {"both": ("result", "source"), "result": ("result",), "source": ("source",)}


def add_parser(subparsers: Any, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The subcommand, with the flag groups it uses (cliflags.py) as ``parents``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "summary",
        parents=list(parents),
        help="summarise the stored reports by result and by sending source",
        description="Summarise the stored reports. The period selects reports by the start of"
        " their date range (UTC); default: every stored report.",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--since", metavar="DURATION", help="the last 90m, 24h, 7d, 2w ...")
    when.add_argument(
        "--from", dest="date_from", metavar="DATE", help="from this day (YYYY-MM-DD, UTC)"
    )
    p.add_argument("--to", dest="date_to", metavar="DATE", help="through this day (inclusive)")
    p.add_argument("--domain", help="one policy domain (default: all)")
    p.add_argument("--view", choices=tuple(VIEWS), default="both", help="default: both")
    p.add_argument("--format", choices=tuple(RENDERERS), default="text", dest="output_format")
    p.add_argument(
        "--top",
        type=_count,
        default=20,
        metavar="N",
        help="list the worst N domains, top N organisations and sources (default 20; 0: all)",
    )
    p.add_argument(
        "--output",
        type=Path,
        metavar="FILE|DIR",
        help="write here instead of stdout; with --format html, an existing directory gets"
        " index.html and one page per listed domain",
    )
    return p


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text[:40]!r}") from None
    if not 0 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError("expected 0 (all) to 1000000")
    return value


def summarise(
    db: Reader,
    period: Period,
    domain: str | None,
    *,
    now: datetime,
    top: int,
    findings: bool | Sequence[absence.Finding] = True,
) -> model.Summary:
    """The Summary of the store for ``period`` (and ``domain``), with the findings as of
    ``now`` (or those given, computed once for several summaries)."""
    rows = query.fetch(db, period, domain, top=top)
    if isinstance(findings, bool):
        found = absence.find(db, now, domain=domain) if findings else []
    else:
        found = list(findings)
    if domain is not None:
        found = [f for f in found if f.domain == domain]
    return model.build(rows, period=period, domain=domain, now=now, top=top, findings=found)


def run(args: argparse.Namespace, *, now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    try:
        config = load(args.config, cliflags.overrides(args))
        period = make_period(
            since=args.since, date_from=args.date_from, date_to=args.date_to, now=now
        )
        domain = normalise_domain(args.domain) if args.domain else None
        out_dir = _output_dir(args.output, args.output_format)
        db = open_reader(target_of(config.database, config.data_dir))
    except (ConfigError, PeriodError, OSError, sqlite3.Error) as exc:
        print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
        return 2
    views = VIEWS[args.view]
    try:
        summary = summarise(db, period, domain, now=now, top=args.top)
        pages: dict[str, str] = {}
        if out_dir is not None:
            for d in summary.shown(summary.domains):
                drill = summarise(
                    db, period, d.domain, now=now, top=args.top, findings=summary.findings
                )
                pages[html.page_name(d.domain)] = html.render(drill, views=views)
    except (sqlite3.Error, StoreUnavailable) as exc:
        print(f"tlsrpt-lmtp: cannot read the report store: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()
    try:
        if out_dir is not None:
            linked = {html.page_name(d.domain) for d in summary.shown(summary.domains)}

            def link(d: str) -> str | None:
                return html.page_name(d) if html.page_name(d) in linked else None

            for name, page in pages.items():
                write_output(out_dir / name, page)
            write_output(out_dir / "index.html", html.render(summary, views=views, link=link))
            return 0
        output = RENDERERS[args.output_format](summary, views=views)
        if args.output is None:
            sys.stdout.write(output)
            return 0
        write_output(args.output, output)
    except OSError as exc:
        print(
            f"tlsrpt-lmtp: cannot write {exc.filename or args.output}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0


def _output_dir(output: Path | None, fmt: str) -> Path | None:
    if output is None or not output.expanduser().is_dir():
        return None
    if fmt != "html":
        raise ConfigError(f"--output {output} is a directory: only --format html writes pages")
    return output.expanduser()


def write_output(path: Path, content: str) -> None:
    """A new or regular file is replaced atomically (a web server never serves half of it);
    anything else that exists (a device, a FIFO, a symlink such as /dev/stdout) is written
    into in place, never replaced."""
    path = path.expanduser()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path())
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(tmp, stat.S_IMODE(st.st_mode) if st is not None else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
