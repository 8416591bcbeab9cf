"""`tlsrpt-lmtp summary`: the command-line front of the views.

Wiring (tlsrpt_lmtp/cli.py)::

    from tlsrpt_lmtp.views import cli as views_cli
    views_cli.add_parser(sub, common)          # in _parser(), next to the other commands
    if args.command == "summary":              # in main(), before the pipeline is opened
        return views_cli.run(args)
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlsrpt_lmtp.config import ConfigError, load
from tlsrpt_lmtp.views import html, jsonout, markdown, model, query, text
from tlsrpt_lmtp.views.period import PeriodError, make_period, normalise_domain

RENDERERS: dict[str, Callable[..., str]] = {
    "text": text.render,
    "markdown": markdown.render,
    "json": jsonout.render,
    "html": html.render,
}
VIEWS = {"both": ("result", "source"), "result": ("result",), "source": ("source",)}


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "summary",
        parents=[common],
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
    p.add_argument("--output", type=Path, metavar="FILE", help="write here instead of stdout")
    return p


def run(args: argparse.Namespace, *, now: datetime | None = None) -> int:
    try:
        config = load(args.config, {"data_dir": args.data_dir})
        period = make_period(
            since=args.since,
            date_from=args.date_from,
            date_to=args.date_to,
            now=now or datetime.now(UTC),
        )
        domain = normalise_domain(args.domain) if args.domain else None
        db = query.open_readonly(config.data_dir / "tlsrpt.sqlite3")
    except (ConfigError, PeriodError, OSError, sqlite3.Error) as exc:
        print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
        return 2
    try:
        rows = query.fetch(db, period, domain)
    except sqlite3.Error as exc:
        print(f"tlsrpt-lmtp: cannot read the report store: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()
    summary = model.build(rows, period=period, domain=domain, now=now or datetime.now(UTC))
    output = RENDERERS[args.output_format](summary, views=VIEWS[args.view])
    if args.output is None:
        sys.stdout.write(output)
        return 0
    try:
        write_atomically(args.output, output)
    except OSError as exc:
        print(f"tlsrpt-lmtp: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def write_atomically(path: Path, content: str) -> None:
    """A reader (a web server, a mail job) never sees half a file."""
    path = path.expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path())
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
