"""The command line's flag groups: each subcommand takes exactly the groups it uses.

    CONFIG  --config                                    every command
    DATA    --data-dir                                  every command that keeps files
    DATABASE --database                                 every command that opens the store
    LOG     --log-format, --log-file, --syslog-address  every command that writes events
    INGEST  --max-decompressed, --dkim-policy           every command that reads report mail

A flag a command does not use is not in its ``--help`` and is refused (tests/test_cli_flags.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tlsrpt_lmtp.config import LOG_FORMATS


def _group() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


CONFIG = _group()
CONFIG.add_argument("--config", type=Path, help="TOML config file (flags win over it)")

DATA = _group()
DATA.add_argument("--data-dir", type=Path, help="archive and store directory")

DATABASE = _group()
DATABASE.add_argument(
    "--database",
    metavar="URL",
    help="the store: sqlite:PATH or postgresql://… (overrides [storage] database)",
)

LOG = _group()
LOG.add_argument("--log-format", choices=LOG_FORMATS)
LOG.add_argument("--log-file", help="json events: '-' for stdout (default) or a path")
LOG.add_argument("--syslog-address", help="syslog events: /dev/log, udp:HOST:PORT or tcp:HOST:PORT")

INGEST = _group()
INGEST.add_argument(
    "--max-decompressed", type=int, metavar="BYTES", help="cap on a decompressed report"
)
INGEST.add_argument(
    "--dkim-policy",
    choices=("off", "verify", "enforce"),
    help="RFC 8460 §3 DKIM check of reports (overrides [dkim] policy; default verify)",
)

# the config keys the shared groups set ([storage], [log]); --config and --dkim-policy are not keys
_KEYS = ("data_dir", "database", "log_format", "log_file", "syslog_address", "max_decompressed")


def overrides(args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    """The command's flags as config overrides (None: not given): the keys of the shared
    groups it has, and ``extra`` (its own flags named like their config keys)."""
    return {k: getattr(args, k) for k in (*_KEYS, *extra) if hasattr(args, k)}


STORE = (CONFIG, DATA, DATABASE)  # reads the store
EVENTS = (CONFIG, DATA, LOG)  # writes events (the policy daemon: no store)
STORE_EVENTS = (CONFIG, DATA, DATABASE, LOG)  # reads and writes the store, writes events
INTAKE = (CONFIG, DATA, DATABASE, LOG, INGEST)  # reads report mail, writes events
