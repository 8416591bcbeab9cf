"""The milter's bound on report mail buffered across connections (sans-I/O)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tlsrpt_lmtp.config import Config, ConfigError
from tlsrpt_lmtp.ingest.milter.config import MilterConfig, load_milter_config
from tlsrpt_lmtp.ingest.milter.core import Action, Budget, MessageFilter
from tlsrpt_lmtp.ingest.pipeline import IngestResult

RCPT = "tlsrpt@example.org"
CONFIG = MilterConfig(recipients=(RCPT,), max_message_size=1000)


def never(raw: bytes) -> IngestResult:
    raise AssertionError("must not be ingested")


def started(budget: Budget, body: bytes, config: MilterConfig = CONFIG) -> MessageFilter:
    message = MessageFilter(config, never, budget)
    message.recipient(f"<{RCPT}>")
    message.header(b"Subject", b" report", leading_space=True)
    message.end_of_headers()
    message.body(body)
    return message


def test_a_message_beyond_the_budget_is_451_and_the_budget_comes_back() -> None:
    budget = Budget(1000)
    first = started(budget, b"a" * 700)
    held = budget.held
    assert held > 700
    second = started(budget, b"b" * 400)
    assert budget.held == held  # the second took nothing
    reply = second.end_of_message()
    assert (reply.action, reply.code, reply.xcode) == (Action.TEMPFAIL, "451", "4.3.1")
    first.release()  # the MTA aborted the first message
    assert budget.held == 0
    third = started(budget, b"c" * 400)
    assert budget.held > 400
    third.release()
    assert budget.held == 0


def test_an_oversize_message_gives_its_share_back() -> None:
    budget = Budget(5000)
    message = started(budget, b"x" * 600)
    message.body(b"x" * 600)  # over max_message_size (1000): dropped
    assert budget.held == 0
    assert message.end_of_message().action is Action.CONTINUE  # tap mode lets it through
    assert budget.held == 0


def test_mail_for_others_takes_nothing() -> None:
    budget = Budget(1000)
    message = MessageFilter(CONFIG, never, budget)
    message.recipient("<someone@example.org>")
    message.body(b"x" * 900)
    assert budget.held == 0 and not message.wants_message


def test_budget_below_the_message_size_is_a_config_error() -> None:
    base = replace(Config(), recipients=(RCPT,), max_message_size=2000)
    with pytest.raises(ConfigError, match="max_in_flight"):
        load_milter_config(None, {"max_in_flight": 1000}, base)
