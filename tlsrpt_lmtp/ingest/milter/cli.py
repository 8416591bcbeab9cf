"""``tlsrpt-lmtp milter``: the subcommand (wired into ``tlsrpt_lmtp.cli`` by two calls).

    milter_cli.add_parser(sub, *flags.INTAKE)          # in cli._parser()
    if args.command == "milter":                # in cli.main(), before the shared set-up
        return milter_cli.run(args)

pymilter is imported only when the milter runs, so the rest of the CLI works without it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tlsrpt_lmtp import cliflags
from tlsrpt_lmtp.config import ConfigError, load, syslog_options
from tlsrpt_lmtp.ingest.milter.config import Mode, load_milter_config
from tlsrpt_lmtp.metrics import exposition


def add_parser(subparsers: Any, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The subcommand, with the flag groups it uses (cliflags.py) as ``parents``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "milter", parents=list(parents), help="run as a milter in Postfix or Sendmail (pymilter)"
    )
    p.add_argument(
        "--listen",
        help="inet:PORT@HOST, unix:/path or HOST:PORT (default inet:24241@127.0.0.1)",
    )
    p.add_argument("--mode", choices=[m.value for m in Mode], help="default tap")
    p.add_argument(
        "--recipient",
        action="append",
        dest="recipients",
        metavar="ADDR",
        help="report address (repeat; default: [milter] or [lmtp] recipients)",
    )
    p.add_argument(
        "--add-header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add X-TLSRPT-Report to the mail passed on (default yes)",
    )
    p.add_argument("--max-message-size", type=int, metavar="BYTES")
    exposition.add_flag(p)
    return p


def run(args: argparse.Namespace) -> int:
    # The ingest side is imported here, not at the top: the CLI builds every subcommand's
    # parser, and `summary` or `check` should not pay for it.
    from tlsrpt_lmtp.alerts.hook import build_hook
    from tlsrpt_lmtp.ingest.dkim import checker_from_file
    from tlsrpt_lmtp.ingest.pipeline import Pipeline
    from tlsrpt_lmtp.output.sinks import open_emitter

    try:
        import milter
    except ImportError:
        print(
            "tlsrpt-lmtp: the milter needs pymilter: pip install 'tlsrpt-lmtp[milter]'"
            " (building it needs Debian's libmilter-dev)",
            file=sys.stderr,
        )
        return 2
    from tlsrpt_lmtp.ingest.milter import adapter

    adapter.block_stop_signals()  # before the alert hook may start its delivery threads
    try:
        endpoint = exposition.start_single_from_args(args)  # docs/metrics.md
        base = load(args.config, cliflags.overrides(args))
        config = load_milter_config(
            args.config,
            {
                "listen": args.listen,
                "mode": args.mode,
                "recipients": args.recipients,
                "add_header": args.add_header,
                "max_message_size": args.max_message_size,
            },
            base,
        )
        dkim = checker_from_file(args.config, policy=getattr(args, "dkim_policy", None))
        target = base.syslog_address if base.log_format == "syslog" else base.log_file
        emitter = open_emitter(base.log_format, target, syslog=syslog_options(base))
    except (ConfigError, OSError) as exc:
        print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
        return 2
    try:
        pipeline = Pipeline.open(
            base.data_dir,
            emitter,
            max_decompressed=base.max_decompressed,
            max_failure_details=base.max_failure_details,
            dkim=dkim,
            database=base.database or None,
        )
    except OSError as exc:
        emitter.close()
        print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
        return 2
    try:  # alerts are for what arrives, as with serve
        hook = build_hook(args.config, pipeline.store, pipeline.emit, source="milter")
    except (ConfigError, OSError) as exc:
        pipeline.close()
        emitter.close()
        print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
        return 2
    pipeline.hooks.append(hook)

    def ready() -> None:
        print(
            f"tlsrpt-lmtp: milter on {config.listen} ({config.mode.value}),"
            f" data in {base.data_dir}",
            file=sys.stderr,
            flush=True,
        )

    try:
        adapter.serve(config, pipeline, ready=ready)
    except milter.error as exc:
        print(f"tlsrpt-lmtp: milter cannot listen on {config.listen}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the unix socket path is unsafe (unixsock.prepare_unix_listen)
        print(
            f"tlsrpt-lmtp: milter cannot listen on {config.listen}: {exc.strerror}", file=sys.stderr
        )
        return 2
    finally:
        hook.close()
        pipeline.close()
        emitter.close()
        if endpoint is not None:
            endpoint.close()
    return 0
