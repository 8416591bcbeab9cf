"""`tlsrpt-lmtp check DOMAIN`: check one's own domain's TLS-RPT and MTA-STS set-up.

Wiring (tlsrpt_lmtp/cli.py)::

    from tlsrpt_lmtp.check import cli as check_cli
    check_cli.add_parser(sub, flags.CONFIG)           # in _parser(), next to the other commands
    if args.command == "check":                # in main(), before the pipeline is opened
        return check_cli.run(args)

Exit status: 0 nothing wrong (warnings allowed), 1 something to fix, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlsrpt_lmtp.check import render
from tlsrpt_lmtp.check.findings import Report
from tlsrpt_lmtp.check.publish import DEFAULT_MAX_AGE, make_records
from tlsrpt_lmtp.config import ConfigError, load_policy
from tlsrpt_lmtp.core.textsafe import printable
from tlsrpt_lmtp.sts.domain import DomainError, to_a_label
from tlsrpt_lmtp.sts.policy import Mode

if TYPE_CHECKING:  # imported where used: dnspython is slow to import, `summary` needs none
    from tlsrpt_lmtp.check.gather import Network, Settings

USAGE_ERROR = 2


class UsageError(ValueError):
    pass


def add_parser(subparsers: Any, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The subcommand, with the flag groups it uses (cliflags.py) as ``parents``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        parents=list(parents),
        help="check a domain's TLS-RPT and MTA-STS set-up and say what to fix",
        description="Check the _smtp._tls record, the _mta-sts record, the MTA-STS policy"
        " (fetched like the policy daemon fetches it), that the policy covers every MX, and"
        " that every MX offers STARTTLS with a valid certificate. Exit status: 0 all ok"
        " (warnings allowed), 1 something to fix, 2 usage or configuration error.",
    )
    p.add_argument("domain", help="the mail domain (the part after @)")
    p.add_argument(
        "--nameserver",
        action="append",
        dest="nameservers",
        metavar="IP[:PORT]",
        help="DNS server to ask (repeat; default: /etc/resolv.conf)",
    )
    p.add_argument("--ca-file", help="trust store (PEM) for HTTPS and SMTP; default: system's")
    p.add_argument(
        "--allow-private-policy-hosts",
        action="store_true",
        default=None,
        help="fetch the policy from loopback/private/link-local addresses too (labs, tests)",
    )
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument(
        "--cert-warn-days",
        type=float,
        default=14.0,
        metavar="DAYS",
        help="warn when an MX certificate expires sooner (default 14)",
    )
    p.add_argument(
        "--smtp-timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="bound on each MX address's SMTP + TLS dialogue (default 15)",
    )
    p.add_argument("--helo", help="EHLO name for the probes (default: this host's name)")
    g = p.add_argument_group("print the records to publish instead of checking")
    g.add_argument(
        "--print-records", action="store_true", help="the DNS records and the policy file"
    )
    g.add_argument("--rua", action="append", metavar="URI", help="mailto:... or https://...")
    g.add_argument("--mx", action="append", metavar="HOST", help="default: the MX in DNS")
    g.add_argument("--mode", choices=[str(m) for m in Mode], default=None, help="default testing")
    g.add_argument("--max-age", type=int, metavar="SECONDS", help=f"default {DEFAULT_MAX_AGE}")
    return p


def run(args: argparse.Namespace, *, now: datetime | None = None) -> int:
    from tlsrpt_lmtp.check.checks import Limits, evaluate
    from tlsrpt_lmtp.check.gather import Network

    now = now or datetime.now(UTC)
    try:
        domain, settings = _setup(args)
        network = Network(settings)
    except (UsageError, ConfigError, OSError, ssl.SSLError) as exc:
        _complain(str(exc))
        return USAGE_ERROR
    if args.print_records:
        return _print_records(args, domain, network, now)
    observations = asyncio.run(network.observe(domain))
    findings = evaluate(observations, now, Limits(cert_warn_days=args.cert_warn_days))
    report = Report(domain, now, findings)
    sys.stdout.write(render.as_json(report) if args.json else render.text(report))
    return report.exit_code


def _setup(args: argparse.Namespace) -> tuple[str, Settings]:
    from tlsrpt_lmtp.check.gather import Settings

    try:
        domain = to_a_label(args.domain)
    except DomainError as exc:
        raise UsageError(f"invalid domain: {exc}") from None
    if not args.print_records:
        given = [f"--{n}" for n in ("rua", "mx", "mode", "max_age") if getattr(args, n)]
        if given:
            raise UsageError(f"{', '.join(given).replace('_', '-')} need --print-records")
    elif not args.rua:
        raise UsageError("--print-records needs --rua mailto:ADDRESS (or https://...)")
    if args.smtp_timeout <= 0 or args.cert_warn_days < 0:
        raise UsageError("--smtp-timeout must be positive, --cert-warn-days not negative")
    overrides = {
        "nameservers": tuple(args.nameservers) if args.nameservers else None,
        "ca_file": args.ca_file,
        "allow_private_policy_hosts": args.allow_private_policy_hosts,
    }
    config = load_policy(args.config, overrides)
    for nameserver in config.nameservers:
        _check_nameserver(nameserver)
    if config.ca_file and not Path(config.ca_file).is_file():
        raise UsageError(f"--ca-file {config.ca_file}: no such file")
    settings = Settings(
        nameservers=config.nameservers,
        ca_file=config.ca_file or None,
        dns_timeout=config.dns_timeout,
        fetch_timeout=config.fetch_timeout,
        allow_private_policy_hosts=config.allow_private_policy_hosts,
        smtp_timeout=args.smtp_timeout,
        helo=args.helo or _hostname(),
    )
    return domain, settings


def _check_nameserver(text: str) -> None:
    from tlsrpt_lmtp.net.dns import parse_nameserver

    try:
        parse_nameserver(text)
    except ValueError:
        raise UsageError(f"nameserver {text!r} is not IP, IP:PORT or [IPv6]:PORT") from None


def _hostname() -> str:
    name = socket.gethostname()
    return name if "." in name else "localhost"


def _print_records(args: argparse.Namespace, domain: str, net: Network, now: datetime) -> int:
    mx: list[str] = list(args.mx or [])
    if not mx:
        found = asyncio.run(net.mx_names(domain))
        if found.error or found.null_mx:
            why = found.error or f"{domain} has a null MX (it receives no mail)"
            _complain(f"{why}; give the MX hosts with --mx")
            return 1
        mx = [h.name for h in found.hosts]
    try:
        records = make_records(
            domain,
            args.rua,
            mx,
            Mode(args.mode or Mode.TESTING),
            DEFAULT_MAX_AGE if args.max_age is None else args.max_age,
            now,
        )
    except ValueError as exc:
        _complain(str(exc))
        return USAGE_ERROR
    if args.json:
        sys.stdout.write(json.dumps(records.as_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(printable(records.text(), newlines=True))
    return 0


def _complain(message: str) -> None:
    print(f"tlsrpt-lmtp check: {printable(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """The command on its own (``python -m tlsrpt_lmtp.check``), e.g. before it is wired."""
    from tlsrpt_lmtp.cliflags import CONFIG

    parser = argparse.ArgumentParser(prog="tlsrpt-lmtp")
    add_parser(parser.add_subparsers(dest="command", required=True), CONFIG)
    return run(parser.parse_args(["check", *(sys.argv[1:] if argv is None else argv)]))
