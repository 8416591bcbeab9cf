"""`tlsrpt-lmtp prune [--older-than 400d] [--reports-older-than 730d] [--dry-run]`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlsrpt_lmtp import cliflags
from tlsrpt_lmtp.config import ConfigError, load, syslog_options
from tlsrpt_lmtp.core.retention import PruneResult, Retention, RetentionError, prune_event
from tlsrpt_lmtp.ingest.retention import BATCH, Pruner


def add_parser(sub: Any, *parents: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "prune",
        parents=list(parents),
        help="delete raw mail (and old reports) past their retention",
        description="Delete archived raw messages received before the cut-off (finished ones"
        " only: never pending), in short batches that do not block the server; normalised"
        " reports are kept unless --reports-older-than or [storage] report_retention is set.",
    )
    p.add_argument(
        "--older-than",
        metavar="DURATION",
        help="raw messages received longer ago than this (400d, 12h, 30m, 2w; 'off': none);"
        " default: [storage] retention",
    )
    p.add_argument(
        "--reports-older-than",
        metavar="DURATION",
        help="also reports whose date range ended longer ago (at least 90d);"
        " default: [storage] report_retention",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    p.add_argument(
        "--batch", type=int, default=BATCH, metavar="ROWS", help=f"rows per transaction ({BATCH})"
    )


def run(args: argparse.Namespace) -> int:
    from tlsrpt_lmtp.output.sinks import open_emitter
    from tlsrpt_lmtp.store import is_postgres, open_store, target_of
    from tlsrpt_lmtp.store.base import StoreUnavailable

    try:
        config = load(args.config, cliflags.overrides(args))
        retention = Retention.parse(
            config.retention if args.older_than is None else args.older_than,
            config.report_retention if args.reports_older_than is None else args.reports_older_than,
        )
        if not 1 <= args.batch <= 100_000:
            raise ConfigError("--batch must be between 1 and 100000")
    except (ConfigError, RetentionError) as exc:
        print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
        return 2
    if not retention.enabled:
        print(
            "tlsrpt-lmtp: nothing to prune: no --older-than and no [storage] retention",
            file=sys.stderr,
        )
        return 2
    where = target_of(config.database, config.data_dir)
    path = Path(str(where).removeprefix("sqlite:"))
    if not is_postgres(where) and not path.is_file():  # never create a store to prune it
        print(f"tlsrpt-lmtp: no store at {path}", file=sys.stderr)
        return 2
    try:
        target = config.syslog_address if config.log_format == "syslog" else config.log_file
        emitter = open_emitter(config.log_format, target, syslog=syslog_options(config))
    except OSError as exc:
        print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
        return 2
    try:
        store = open_store(where)
    except OSError as exc:  # StoreUnavailable too
        emitter.close()
        print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
        return 2
    try:
        result = Pruner(store, retention, batch=args.batch).run(dry_run=args.dry_run)
        emitter(prune_event(result, trigger="command", now=datetime.now(UTC)))
    except StoreUnavailable as exc:
        print(f"tlsrpt-lmtp: {exc}; run it again to go on", file=sys.stderr)
        return 1
    finally:
        store.close()
        emitter.close()
    print(f"tlsrpt-lmtp: {describe(result)}", file=sys.stderr)
    return 0


def describe(result: PruneResult) -> str:
    c, cut = result.counts, result.cutoffs
    verb = "would delete" if result.dry_run else "deleted"
    parts = []
    if cut.raw is not None:
        parts.append(
            f"{verb} {c.messages + c.quarantined} raw messages received before {cut.raw}"
            f" ({c.quarantined} of them quarantined, {c.raw_bytes} bytes);"
            f" kept {result.pending_kept} pending"
        )
    if cut.reports is not None:
        rows = c.rows - c.messages - c.quarantined
        parts.append(f"{verb} {c.reports} reports that ended before {cut.reports} ({rows} rows)")
    return "; ".join(parts)
