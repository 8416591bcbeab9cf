"""`tlsrpt-lmtp db migrate --from sqlite:PATH --to postgresql://…` (transfer.py), with a
progress bar on stderr.

The bar is a few lines written here rather than a dependency (tqdm): it only has to redraw
one line per table, at most ten times a second, on a terminal; elsewhere (a log, a pipe) it
writes a line per tenth of each table, so a long run still shows it is moving."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from tlsrpt_lmtp.store.transfer import BATCH_BYTES, BATCH_ROWS, Copied, migrate

WIDTH = 30
REDRAW_SECONDS = 0.1


def add_parser(sub: Any) -> None:
    db = sub.add_parser("db", help="the report store: copy it to another database")
    dsub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    m = dsub.add_parser(
        "migrate",
        help="copy a store into another (SQLite → PostgreSQL): idempotent, resumable",
        description="Copy the archive (pending messages too), the quarantine, the reports and"
        " the alert state into another store. Run it again after an interruption: what was"
        " copied is skipped, by its unique keys.",
    )
    m.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="STORE",
        help="sqlite:PATH (or a path) or postgresql://…",
    )
    m.add_argument(
        "--to", dest="dest", required=True, metavar="STORE", help="postgresql://… (or sqlite:PATH)"
    )
    m.add_argument(
        "--batch",
        type=int,
        default=BATCH_ROWS,
        metavar="ROWS",
        help=f"rows per transaction ({BATCH_ROWS})",
    )
    m.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


class Bar:
    """One line per table: `messages  [#######.......]  4,200/10,000  42%`."""

    def __init__(self, out: TextIO, *, live: bool) -> None:
        self.out = out
        self.live = live
        self._table = ""
        self._drawn = 0.0
        self._tenth = -1

    def __call__(self, table: str, done: int, total: int) -> None:
        if table != self._table:
            if self._table and self.live:
                self.out.write("\n")
            self._table, self._drawn, self._tenth = table, 0.0, -1
        now = time.monotonic()
        finished = done >= total
        if self.live:
            if finished or now - self._drawn >= REDRAW_SECONDS:
                self.out.write("\r" + self.line(table, done, total))
                self._drawn = now
        else:
            tenth = 10 * done // total if total else 10
            if tenth != self._tenth:
                self.out.write(self.line(table, done, total) + "\n")
                self._tenth = tenth
        self.out.flush()

    @staticmethod
    def line(table: str, done: int, total: int) -> str:
        share = done / total if total else 1.0
        filled = int(WIDTH * share)
        return (
            f"{table:<13}[{'#' * filled}{'.' * (WIDTH - filled)}]"
            f" {done:,}/{total:,} {int(100 * share):3d}%"
        )

    def close(self) -> None:
        """End the bar's line (once)."""
        if self._table and self.live:
            self.out.write("\n")
            self.out.flush()
        self._table = ""


def run(args: argparse.Namespace) -> int:
    from tlsrpt_lmtp.store import open_store

    if not 1 <= args.batch <= 100_000:
        print("tlsrpt-lmtp: --batch must be between 1 and 100000", file=sys.stderr)
        return 2
    if args.source == args.dest:
        print("tlsrpt-lmtp: --from and --to are the same store", file=sys.stderr)
        return 2
    try:
        source = open_store(args.source)
    except Exception as exc:  # a driver error, a missing file: say it, never a traceback
        print(f"tlsrpt-lmtp: cannot open --from {_safe(args.source)}: {exc}", file=sys.stderr)
        return 2
    try:
        dest = open_store(args.dest)
    except Exception as exc:
        source.close()
        print(f"tlsrpt-lmtp: cannot open --to {_safe(args.dest)}: {exc}", file=sys.stderr)
        return 2
    bar = Bar(sys.stderr, live=sys.stderr.isatty()) if not args.no_progress else None
    try:
        results = migrate(
            source, dest, batch_rows=args.batch, batch_bytes=BATCH_BYTES, progress=bar
        )
    except OSError as exc:  # StoreUnavailable: a lost connection, a timeout; a full disk
        if bar is not None:
            bar.close()
        print(
            f"tlsrpt-lmtp: migration stopped: {exc}; run the same command again to go on",
            file=sys.stderr,
        )
        return 1
    finally:
        if bar is not None:
            bar.close()
        source.close()
        dest.close()
    print(f"tlsrpt-lmtp: {describe(results)}", file=sys.stderr)
    return 0


def describe(results: list[Copied]) -> str:
    return "; ".join(f"{r.table}: {r.copied} copied, {r.skipped} already there" for r in results)


def _safe(target: str) -> str:
    """A store URL without its password."""
    scheme, sep, rest = target.partition("://")
    if sep and "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else target
    return target
