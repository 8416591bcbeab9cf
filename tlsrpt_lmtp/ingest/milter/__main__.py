"""``python -m tlsrpt_lmtp.ingest.milter [options]``: the same as ``tlsrpt-lmtp milter``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tlsrpt_lmtp.cliflags import INTAKE
from tlsrpt_lmtp.ingest.milter import cli


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tlsrpt_lmtp.ingest.milter")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub, *INTAKE)  # the flag groups `tlsrpt-lmtp milter` has
    return cli.run(parser.parse_args(["milter", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
