"""Command line: `tlsrpt-lmtp serve | parse | reprocess`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlsrpt_lmtp import __version__
from tlsrpt_lmtp import cliflags as flags
from tlsrpt_lmtp.check import cli as check_cli
from tlsrpt_lmtp.config import Config, ConfigError, load, load_policy, syslog_options
from tlsrpt_lmtp.core.events import iso
from tlsrpt_lmtp.ingest import retention_cli
from tlsrpt_lmtp.ingest.delivery import Delivery, SinkError
from tlsrpt_lmtp.ingest.milter import cli as milter_cli
from tlsrpt_lmtp.metrics import exposition
from tlsrpt_lmtp.store import migrate_cli
from tlsrpt_lmtp.store.base import ArchiveError, Status
from tlsrpt_lmtp.views import cli as views_cli
from tlsrpt_lmtp.views import digest as views_digest

if TYPE_CHECKING:  # imported where used: `summary` and `check` need none of the ingest side
    from tlsrpt_lmtp.ingest.pipeline import IngestResult, Pipeline
    from tlsrpt_lmtp.ingest.stage2 import Stage2Config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tlsrpt-lmtp", description="Receive SMTP TLS reports (RFC 8460) as events."
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", parents=flags.INTAKE, help="run the LMTP server")
    s.add_argument("--listen", help="HOST:PORT or unix:/path (default 127.0.0.1:24240)")
    s.add_argument(
        "--recipient",
        action="append",
        dest="recipients",
        metavar="ADDR",
        help="accepted recipient (repeat; default: any)",
    )
    s.add_argument("--max-message-size", type=int, metavar="BYTES")
    exposition.add_flag(s)

    pa = sub.add_parser(
        "parse", parents=flags.INTAKE, help="run files through the pipeline, print events"
    )
    pa.add_argument("paths", nargs="+", type=Path, metavar="FILE|DIR")

    _policy_parsers(sub)

    views_cli.add_parser(sub, *flags.STORE)
    views_digest.add_parser(sub, *flags.STORE_EVENTS)
    check_cli.add_parser(sub, flags.CONFIG)
    milter_cli.add_parser(sub, *flags.INTAKE)
    retention_cli.add_parser(sub, *flags.STORE_EVENTS)
    migrate_cli.add_parser(sub)

    sh = sub.add_parser("show", parents=flags.STORE, help="print an archived raw message")
    sh.add_argument("archive_id", help="the archive_id of an event")

    r = sub.add_parser("reprocess", parents=flags.INTAKE, help="re-run archived messages")
    r.add_argument(
        "--quarantine", action="store_true", help="re-run the quarantine instead of the archive"
    )
    return p


def _policy_parsers(sub: Any) -> None:
    pol = argparse.ArgumentParser(add_help=False, parents=flags.EVENTS)
    pol.add_argument("--nameserver", action="append", dest="nameservers", metavar="IP[:PORT]")
    pol.add_argument("--dane-resolver", metavar="IP[:PORT]", help="DNSSEC-validating resolver")
    pol.add_argument("--ca-file", help="trust store for policy hosts (default: the system's)")
    pol.add_argument(
        "--enforce-testing", action="store_true", default=None, help="treat mode testing as enforce"
    )
    pol.add_argument(
        "--tlsrpt-attributes",
        action="store_true",
        default=None,
        help="send Postfix 3.10 TLSRPT attributes on every map name (Postfix < 3.10 defers mail!)",
    )
    pol.add_argument(
        "--allow-private-policy-hosts",
        action="store_true",
        default=None,
        help="fetch policies from loopback/private/link-local addresses too (labs, tests)",
    )
    pol.add_argument(
        "--cache",
        metavar="URL",
        help="policy cache shared with other nodes: redis://... or postgresql://...",
    )
    p = sub.add_parser("policy", help="MTA-STS policy daemon for Postfix and Exim")
    psub = p.add_subparsers(dest="policy_command", required=True)
    s = psub.add_parser("serve", parents=[pol], help="answer Postfix socketmap and Exim lookups")
    s.add_argument("--listen", help="socketmap HOST:PORT or unix:/path (default 127.0.0.1:8461)")
    s.add_argument("--exim-listen", help="Exim line protocol (default 127.0.0.1:8462; '' = off)")
    exposition.add_flag(s)
    q = psub.add_parser("query", parents=[pol], help="resolve one domain and show the answers")
    q.add_argument("domain")


def _policy_main(args: argparse.Namespace) -> int:
    import asyncio

    from tlsrpt_lmtp.net import fairloop
    from tlsrpt_lmtp.output.sinks import open_emitter
    from tlsrpt_lmtp.sts import daemon

    names = (
        "listen",
        "exim_listen",
        "nameservers",
        "dane_resolver",
        "ca_file",
        "enforce_testing",
        "tlsrpt_attributes",
        "allow_private_policy_hosts",
        "cache",
    )
    try:
        config = load_policy(args.config, flags.overrides(args, *names))
        target = config.syslog_address if config.log_format == "syslog" else config.log_file
        if args.policy_command == "query":
            target = "-" if args.log_file is None else target
        emitter = open_emitter(config.log_format, target, syslog=syslog_options(config))
        service = daemon.build_service(config, emitter)
        endpoint = (
            exposition.start_single_from_args(args, service=service)
            if args.policy_command == "serve"
            else None
        )
    except (ConfigError, OSError) as exc:
        print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
        return 2
    try:
        if args.policy_command == "query":
            print(asyncio.run(daemon.query(config, service, args.domain)))
            return 0
        fairloop.run(daemon.serve(config, service))
    except OSError as exc:
        print(f"tlsrpt-lmtp: cannot listen: {exc.strerror}", file=sys.stderr)
        return 2
    finally:
        if endpoint is not None:
            endpoint.close()
        emitter.close()
    return 0


def _config(args: argparse.Namespace) -> Config:
    overrides = flags.overrides(args, "listen", "recipients", "max_message_size")
    if args.command == "parse" and args.log_format is None and args.log_file is None:
        overrides["log_format"], overrides["log_file"] = "json", "-"
    return load(args.config, overrides)


def _open_pipeline(config: Config, args: argparse.Namespace) -> Pipeline:
    from tlsrpt_lmtp.ingest.dkim import checker_from_file
    from tlsrpt_lmtp.ingest.pipeline import Pipeline
    from tlsrpt_lmtp.output.sinks import open_emitter

    dkim = checker_from_file(args.config, policy=getattr(args, "dkim_policy", None))
    target = config.syslog_address if config.log_format == "syslog" else config.log_file
    emitter = open_emitter(config.log_format, target, syslog=syslog_options(config))
    # The one-shot commands stop at a failing sink and say so (stage 2 waits: stage2.py).
    delivery = Delivery(emitter, retry=False)
    return Pipeline.open(
        config.data_dir,
        emitter,
        max_decompressed=config.max_decompressed,
        dkim=dkim,
        delivery=delivery,
        max_failure_details=config.max_failure_details,
        database=config.database or None,
    )


def check_config_file(path: Path) -> None:
    """Every table of the file, keys and types, whichever command runs: a typo anywhere in the
    file is an error for every command (ConfigError naming the file, the table and the key)."""
    from tlsrpt_lmtp.alerts.config import AlertsConfig
    from tlsrpt_lmtp.config import OTHER_TABLES, check_tables
    from tlsrpt_lmtp.configfields import read_table
    from tlsrpt_lmtp.ingest.dkimconfig import DkimConfig
    from tlsrpt_lmtp.ingest.milter.config import MilterConfig
    from tlsrpt_lmtp.metrics.config import MetricsConfig

    check_tables(path)  # [lmtp], [storage], [log], [policy]; an unknown table
    owners = {"dkim": DkimConfig, "milter": MilterConfig, "alerts": AlertsConfig}
    owners["metrics"] = MetricsConfig
    assert set(owners) == set(OTHER_TABLES)
    for table, section in owners.items():
        read_table(path, table, section)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "config", None) is not None:
        try:
            check_config_file(args.config)
        except ConfigError as exc:
            print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
            return 2
    if args.command == "policy":
        return _policy_main(args)
    if args.command == "check":
        return check_cli.run(args)
    if args.command == "milter":
        return milter_cli.run(args)
    if args.command == "summary":  # reads the store; never opens it for writing
        return views_cli.run(args)
    if args.command == "digest":  # reads the store; writes only the alert state
        return views_digest.run(args)
    if args.command == "prune":
        return retention_cli.run(args)
    if args.command == "db":
        return migrate_cli.run(args)
    if args.command == "serve":  # stage 1 here, stage 2 in a process of its own
        return _serve(args)
    try:
        config = _config(args)
        pipeline = _open_pipeline(config, args)
    except (ConfigError, OSError) as exc:
        print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "parse":
            return _parse(pipeline, args.paths)
        if args.command == "show":
            return _show(pipeline, args.archive_id)
        return _reprocess(pipeline, Status.INVALID if args.quarantine else Status.REPORT)
    except SinkError as exc:
        print(
            f"tlsrpt-lmtp: {exc.strerror}; the message stays pending:"
            " `tlsrpt-lmtp reprocess` writes its events once the sink works",
            file=sys.stderr,
        )
        return 1
    finally:
        pipeline.close()


def stage2_config(args: argparse.Namespace) -> Stage2Config:
    """``serve``'s settings for its stage 2 process: the file, then the flags, resolved once
    here (and checked, so that a bad table stops serve instead of a stage 2 crash loop)."""
    from tlsrpt_lmtp.alerts.config import load_alerts
    from tlsrpt_lmtp.alerts.hook import check_sendmail
    from tlsrpt_lmtp.ingest.dkimconfig import load_dkim_config
    from tlsrpt_lmtp.ingest.stage2 import Stage2Config

    alerts = load_alerts(args.config)
    check_sendmail(alerts)
    return Stage2Config(
        ingest=_config(args),
        dkim=load_dkim_config(args.config, policy=args.dkim_policy),
        alerts=alerts,
        metrics=exposition.config_of(args),
        # Messages archived before this server started were left behind by an earlier run.
        server_started=iso(datetime.now(UTC)),
    )


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from tlsrpt_lmtp.ingest.archiver import Archiver
    from tlsrpt_lmtp.ingest.lmtp import serve
    from tlsrpt_lmtp.ingest.stage2 import spawn
    from tlsrpt_lmtp.output.sinks import open_emitter

    try:
        handover = stage2_config(args)
        config = handover.ingest
        target = config.syslog_address if config.log_format == "syslog" else config.log_file
        # Stage 2 writes the events; that it can is checked here, before mail is taken.
        open_emitter(config.log_format, target, syslog=syslog_options(config)).close()
        archiver = Archiver.open(config.data_dir, config.database or None)
    except (ConfigError, OSError) as exc:
        print(f"tlsrpt-lmtp: {exc}", file=sys.stderr)
        return 2

    def ready(_: object) -> None:
        print(
            f"tlsrpt-lmtp: LMTP on {config.listen}, data in {config.data_dir}",
            file=sys.stderr,
            flush=True,
        )

    try:  # before the stage 2 process starts: it inherits the metrics directory
        watching = handover.metrics
        endpoint = exposition.start_serve(watching, archiver.url) if watching.listen else None
    except (ConfigError, OSError) as exc:
        archiver.close()
        print(f"tlsrpt-lmtp: metrics: {exc}", file=sys.stderr)
        return 2
    stage2 = spawn(handover)
    if endpoint is not None:
        exposition.watch_stage2(endpoint, lambda: stage2.pid)
    try:
        asyncio.run(serve(config, archiver, stage2, ready=ready))
    except OSError as exc:
        stage2.stop()
        print(f"tlsrpt-lmtp: cannot listen on {config.listen}: {exc.strerror}", file=sys.stderr)
        return 2
    finally:
        if endpoint is not None:
            endpoint.close()
        archiver.close()
    return 0


def _parse(pipeline: Pipeline, paths: list[Path]) -> int:
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"tlsrpt-lmtp: no such file: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    results: list[IngestResult] = []
    from tlsrpt_lmtp.ingest.sources import iter_messages

    for _label, raw in iter_messages(paths):
        try:
            results.append(pipeline.ingest(raw, source="file"))
        except ArchiveError as exc:
            print(f"tlsrpt-lmtp: {exc.strerror}", file=sys.stderr)
            return 1
    _summary(results)
    return 0


def _reprocess(pipeline: Pipeline, status: Status) -> int:
    results = pipeline.process_pending()
    results += [
        pipeline.process(raw, key, source="reprocess") for key, raw in pipeline.store.scan(status)
    ]
    _summary(results)
    return 0


def _show(pipeline: Pipeline, archive_id: str) -> int:
    raw = pipeline.store.get(archive_id.lower())
    if raw is None:
        print(f"tlsrpt-lmtp: no archived message {archive_id}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(raw)
    return 0


def _summary(results: Iterable[IngestResult]) -> None:
    rs = list(results)
    reports = sum(r.reports for r in rs)
    dups = sum(r.duplicates for r in rs)
    invalid = sum(1 for r in rs if not r.valid)
    print(
        f"tlsrpt-lmtp: {len(rs)} messages, {reports} reports ({dups} duplicates),"
        f" {invalid} without a usable report",
        file=sys.stderr,
    )
