"""``python -m tlsrpt_lmtp.ingest.milter [options]``: the same as ``tlsrpt-lmtp milter``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tlsrpt_lmtp.ingest.milter import cli


def main(argv: Sequence[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path)
    common.add_argument("--data-dir", type=Path)
    common.add_argument("--log-format", choices=("json", "ecs", "syslog"))
    common.add_argument("--log-file")
    common.add_argument("--syslog-address")
    common.add_argument("--max-decompressed", type=int)
    parser = argparse.ArgumentParser(prog="python -m tlsrpt_lmtp.ingest.milter")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub, common)
    return cli.run(parser.parse_args(["milter", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
