"""Each subcommand offers (in --help) and accepts exactly the flags it uses."""

from __future__ import annotations

import argparse
import re

import pytest

from tlsrpt_lmtp.cli import _parser

CONFIG = {"--config"}
LOG = {"--log-format", "--log-file", "--syslog-address"}
STORE = CONFIG | {"--data-dir", "--database"}
EVENTS = CONFIG | {"--data-dir"} | LOG
STORE_EVENTS = STORE | LOG
INTAKE = STORE_EVENTS | {"--max-decompressed", "--dkim-policy"}
POLICY = EVENTS | {
    "--nameserver",
    "--dane-resolver",
    "--ca-file",
    "--enforce-testing",
    "--tlsrpt-attributes",
    "--allow-private-policy-hosts",
    "--cache",
}
METRICS = {"--metrics-listen"}

# command → (the flags it takes, the positional arguments it needs)
EXPECTED: dict[tuple[str, ...], tuple[set[str], tuple[str, ...]]] = {
    ("serve",): (
        INTAKE | METRICS | {"--listen", "--recipient", "--max-message-size"},
        (),
    ),
    ("parse",): (INTAKE, ("mail.eml",)),
    ("reprocess",): (INTAKE | {"--quarantine"}, ()),
    ("show",): (STORE, ("0" * 64,)),
    ("milter",): (
        INTAKE
        | METRICS
        | {
            "--listen",
            "--mode",
            "--recipient",
            "--add-header",
            "--no-add-header",
            "--max-message-size",
        },
        (),
    ),
    ("summary",): (
        STORE
        | {"--since", "--from", "--to", "--domain", "--view", "--format", "--top"}
        | {"--output"},
        (),
    ),
    ("digest",): (STORE_EVENTS | {"--since", "--top", "--mail-to", "--no-alerts"}, ()),
    ("prune",): (
        STORE_EVENTS | {"--older-than", "--reports-older-than", "--dry-run", "--batch"},
        (),
    ),
    ("db", "migrate"): (
        {"--from", "--to", "--batch", "--no-progress"},
        ("--from", "sqlite:a", "--to", "sqlite:b"),
    ),
    ("check",): (
        CONFIG
        | {"--nameserver", "--ca-file", "--allow-private-policy-hosts", "--json"}
        | {"--cert-warn-days", "--smtp-timeout", "--helo", "--print-records", "--rua", "--mx"}
        | {"--mode", "--max-age"},
        ("example.org",),
    ),
    ("policy", "serve"): (POLICY | METRICS | {"--listen", "--exim-listen"}, ()),
    ("policy", "query"): (POLICY, ("example.org",)),
}
EVERY_FLAG = set().union(*(flags for flags, _ in EXPECTED.values()))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _command(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = _parser()
    for name in path:
        parser = _subparsers(parser)[name]
    return parser


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}


def test_every_subcommand_is_listed_here() -> None:
    top = {(name,) for name in _subparsers(_parser()) if not name.startswith("_")}
    for group in ("policy", "db"):
        top -= {(group,)}
        top |= {(group, name) for name in _subparsers(_command((group,)))}
    assert top == set(EXPECTED)


@pytest.mark.parametrize("path", sorted(EXPECTED), ids=" ".join)
def test_help_lists_exactly_the_flags_the_command_uses(path: tuple[str, ...]) -> None:
    parser = _command(path)
    wanted, _ = EXPECTED[path]
    assert _options(parser) == wanted
    shown = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", parser.format_help()))
    assert shown & EVERY_FLAG == wanted


@pytest.mark.parametrize("path", sorted(EXPECTED), ids=" ".join)
def test_a_flag_not_meant_for_the_command_is_refused(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    wanted, positionals = EXPECTED[path]
    # argparse takes a prefix of a flag for the flag (digest --to = --top): not foreign
    foreign = sorted(f for f in EVERY_FLAG - wanted if not any(w.startswith(f) for w in wanted))
    assert foreign  # every command lacks some flag of another
    for flag in foreign:
        with pytest.raises(SystemExit) as exc:
            _parser().parse_args([*path, *positionals, flag, "x"])
        assert exc.value.code == 2
        assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        (["policy", "serve"], ("--dkim-policy", "--max-decompressed")),
        (["summary"], ("--dkim-policy", "--max-decompressed", "--log-format")),
        (["check", "example.org"], ("--dkim-policy", "--data-dir", "--log-file")),
        (["show", "0" * 64], ("--dkim-policy", "--log-format")),
    ],
)
def test_the_flags_the_issue_named(argv: list[str], absent: tuple[str, ...]) -> None:
    args = _parser().parse_args(argv)
    for flag in absent:
        assert not hasattr(args, flag.lstrip("-").replace("-", "_"))


def test_the_command_s_own_flags_still_parse() -> None:
    args = _parser().parse_args(
        ["serve", "--dkim-policy", "off", "--max-decompressed", "9", "--metrics-listen", "1"]
    )
    assert (args.dkim_policy, args.max_decompressed, args.metrics_listen) == ("off", 9, "1")
    args = _parser().parse_args(["digest", "--log-format", "ecs", "--data-dir", "/srv"])
    assert args.log_format == "ecs"
