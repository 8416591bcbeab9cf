"""The milter's sans-I/O core and its ``[milter]`` config, in front of a real pipeline (SQLite in
a temporary directory). libmilter itself is exercised in test_milter_protocol.py."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.dkim import SUBMITTER, key_pair, report_mail, sign
from tests.support.events import Recorder
from tests.support.mail import report_json
from tlsrpt_lmtp.config import Config, ConfigError
from tlsrpt_lmtp.ingest.dkim import DkimChecker, DkimPolicy, DnsTempError
from tlsrpt_lmtp.ingest.milter.config import (
    MilterConfig,
    Mode,
    load_milter_config,
    parse_milter_listen,
)
from tlsrpt_lmtp.ingest.milter.core import HEADER, Action, MessageFilter, Reply
from tlsrpt_lmtp.ingest.pipeline import IngestResult, Pipeline
from tlsrpt_lmtp.store.base import ArchiveError

REPORT_RCPT = "tlsrpt@reports.example.test"
OTHER_RCPT = "postmaster@reports.example.test"
CONFIG = MilterConfig(recipients=(REPORT_RCPT,))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def pipeline(tmp_path: Path, recorder: Recorder) -> Iterator[Pipeline]:
    p = Pipeline.open(tmp_path / "data", recorder)
    yield p
    p.close()


def ingest_with(pipeline: Pipeline) -> Callable[[bytes], IngestResult]:
    return lambda raw: pipeline.ingest(raw, source="milter")


def split(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers as a milter sees them with SMFIP_HDR_LEADSPC (value after the colon, folded
    lines kept), and the body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    headers: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            name, value = headers[-1]
            headers[-1] = (name, value + b"\n" + line)
        else:
            name, _, value = line.partition(b":")
            headers.append((name, value))
    return headers, body


def feed(
    message: MessageFilter,
    raw: bytes,
    recipients: Sequence[str] = (f"<{REPORT_RCPT}>",),
    *,
    leading_space: bool = True,
) -> Reply:
    for rcpt in recipients:
        message.recipient(rcpt)
    headers, body = split(raw)
    for name, value in headers:
        message.header(
            name, value if leading_space else value.lstrip(b" "), leading_space=leading_space
        )
    message.end_of_headers()
    for start in range(0, len(body), 65535):
        message.body(body[start : start + 65535])
    return message.end_of_message()


def run(
    pipeline: Pipeline,
    raw: bytes,
    recipients: Sequence[str] = (f"<{REPORT_RCPT}>",),
    **config: object,
) -> Reply:
    settings = replace(CONFIG, **config)
    return feed(MessageFilter(settings, ingest_with(pipeline)), raw, recipients)


# --- what is buffered -------------------------------------------------------------------------


def test_mail_without_a_report_recipient_is_not_kept(pipeline: Pipeline) -> None:
    def no_ingest(raw: bytes) -> IngestResult:
        raise AssertionError("not a report: must not be ingested")

    message = MessageFilter(CONFIG, no_ingest)
    reply = feed(message, report_mail(), ["<someone@reports.example.test>"])
    assert not message.wants_message
    assert message.raw == b""
    assert reply == Reply(Action.CONTINUE)


@pytest.mark.parametrize("rcpt", [f"<{REPORT_RCPT}>", REPORT_RCPT, "<TLSRPT@Reports.Example.TEST>"])
def test_report_recipient_matches_however_written(rcpt: str) -> None:
    message = MessageFilter(CONFIG, lambda raw: pytest.fail("unused"))
    message.recipient(rcpt)
    assert message.wants_message


@pytest.mark.parametrize("leading_space", [True, False])
def test_the_message_is_rebuilt_byte_for_byte(leading_space: bool) -> None:
    raw = report_mail()
    assert b"\r\n\t" in raw or b"\r\n " in raw  # folded header lines are part of the test
    message = MessageFilter(CONFIG, lambda raw: pytest.fail("unused"))
    message.recipient(REPORT_RCPT)
    headers, body = split(raw)
    for name, value in headers:
        message.header(name, value if leading_space else value[1:], leading_space=leading_space)
    message.end_of_headers()
    message.body(body)
    assert message.raw == raw


# --- modes --------------------------------------------------------------------------------------


def test_tap_ingests_and_passes_the_mail_on_with_a_header(
    pipeline: Pipeline, recorder: Recorder
) -> None:
    reply = run(pipeline, report_mail(failures=4))
    [event] = recorder.named("tlsrpt.report")
    assert event["source"] == "milter"
    assert reply.action is Action.CONTINUE
    assert reply.add_header == (
        HEADER,
        f"archive={event['archive_id'][:16]}; reports=1; failures=4",
    )


def test_tap_without_header(pipeline: Pipeline, recorder: Recorder) -> None:
    assert run(pipeline, report_mail(), add_header=False) == Reply(Action.CONTINUE)
    assert len(recorder.named("tlsrpt.report")) == 1


def test_tap_passes_invalid_mail_on_and_says_so(pipeline: Pipeline, recorder: Recorder) -> None:
    reply = run(pipeline, b"From: a@b.test\r\nSubject: hi\r\n\r\nno report here\r\n")
    assert reply.action is Action.CONTINUE
    assert reply.add_header is not None and reply.add_header[1].endswith("; reports=0; invalid")
    assert recorder.named("tlsrpt.invalid")[0]["reason"] == "no report attachment found"


def test_a_forged_header_is_replaced(pipeline: Pipeline) -> None:
    raw = report_mail().replace(
        b"\r\nFrom:", f"\r\n{HEADER}: forged\r\n{HEADER.lower()}: again\r\nFrom:".encode(), 1
    )
    reply = run(pipeline, raw)
    assert reply.delete_headers == (2, 1)
    assert reply.add_header is not None


def test_discard_drops_mail_only_for_the_report_address(
    pipeline: Pipeline, recorder: Recorder
) -> None:
    assert run(pipeline, report_mail(), mode=Mode.DISCARD) == Reply(Action.DISCARD)
    assert len(recorder.named("tlsrpt.report")) == 1


def test_discard_keeps_mail_for_the_other_recipients(pipeline: Pipeline) -> None:
    reply = run(
        pipeline,
        report_mail(report_id="mixed"),
        [f"<{REPORT_RCPT}>", f"<{OTHER_RCPT}>"],
        mode=Mode.DISCARD,
    )
    assert reply == Reply(Action.CONTINUE, delete_rcpts=(f"<{REPORT_RCPT}>",))


def test_reject_invalid_refuses_report_mail_without_a_report(
    pipeline: Pipeline, recorder: Recorder
) -> None:
    reply = run(pipeline, b"From: a@b.test\r\n\r\nhello\r\n", mode=Mode.REJECT_INVALID)
    assert (reply.action, reply.code, reply.xcode) == (Action.REJECT, "550", "5.6.0")
    assert reply.text == "no usable TLS report: no report attachment found"
    assert len(recorder.named("tlsrpt.invalid")) == 1  # logged and quarantined all the same


def test_reject_invalid_passes_valid_reports_like_tap(pipeline: Pipeline) -> None:
    reply = run(pipeline, report_mail(), mode=Mode.REJECT_INVALID)
    assert reply.action is Action.CONTINUE and reply.add_header is not None


def test_reject_invalid_never_rejects_mail_for_other_recipients(pipeline: Pipeline) -> None:
    reply = run(
        pipeline,
        b"From: a@b.test\r\n\r\nhello\r\n",
        [REPORT_RCPT, OTHER_RCPT],
        mode=Mode.REJECT_INVALID,
    )
    assert reply.action is Action.CONTINUE


def test_bare_json_body_is_a_report_too(pipeline: Pipeline, recorder: Recorder) -> None:
    raw = b"Content-Type: application/tlsrpt+json\r\n\r\n" + report_json()
    reply = run(pipeline, raw, mode=Mode.REJECT_INVALID)
    assert reply.action is Action.CONTINUE
    assert len(recorder.named("tlsrpt.report")) == 1


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(Mode))
def test_archive_failure_is_a_temporary_failure(mode: Mode) -> None:
    def broken(raw: bytes) -> IngestResult:
        raise ArchiveError(errno.ENOSPC, "cannot archive message: database or disk is full")

    reply = feed(MessageFilter(replace(CONFIG, mode=mode), broken), report_mail())
    assert (reply.action, reply.code, reply.xcode) == (Action.TEMPFAIL, "451", "4.3.0")
    assert "try again later" in (reply.text or "")


def test_a_bug_in_ingest_is_a_temporary_failure() -> None:
    def buggy(raw: bytes) -> IngestResult:
        raise RuntimeError("bug")

    reply = feed(MessageFilter(CONFIG, buggy), report_mail())
    assert (reply.action, reply.code, reply.xcode) == (Action.TEMPFAIL, "451", "4.3.0")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (Mode.TAP, Action.CONTINUE),
        (Mode.DISCARD, Action.REJECT),
        (Mode.REJECT_INVALID, Action.REJECT),
    ],
)
def test_oversize_mail_is_not_ingested(mode: Mode, expected: Action) -> None:
    settings = replace(CONFIG, mode=mode, max_message_size=1000)
    message = MessageFilter(settings, lambda raw: pytest.fail("oversize: not ingested"))
    reply = feed(message, report_mail())
    assert reply.action is expected
    if expected is Action.REJECT:
        assert (reply.code, reply.xcode) == ("552", "5.3.4")
    assert message.raw == b""


def enforcing(tmp_path: Path, keys: dict[str, bytes] | None, recorder: Recorder) -> Pipeline:
    def lookup(name: str) -> bytes | None:
        if keys is None:
            raise DnsTempError(f"DNS lookup of {name} failed: timeout")
        return keys.get(name)

    check = DkimChecker(lookup, policy=DkimPolicy.ENFORCE)
    return Pipeline.open(tmp_path / "enforce", recorder, dkim=check)


def test_reject_invalid_with_enforce_refuses_an_unauthenticated_report(
    tmp_path: Path, recorder: Recorder
) -> None:
    pipeline = enforcing(tmp_path, {}, recorder)
    raw = sign(report_mail(), key_pair("good"))
    reply = run(pipeline, raw, mode=Mode.REJECT_INVALID)
    assert (reply.action, reply.code, reply.xcode) == (Action.REJECT, "550", "5.7.20")
    assert reply.text == (
        f"TLS report not authenticated: DKIM fail for {SUBMITTER}: no key record at"
        f" tlsrpt._domainkey.{SUBMITTER} [dkim policy enforce]"
    )
    pipeline.close()


def test_reject_invalid_with_enforce_and_dns_down_asks_for_a_retry(
    tmp_path: Path, recorder: Recorder
) -> None:
    pipeline = enforcing(tmp_path, None, recorder)
    reply = run(pipeline, sign(report_mail(), key_pair("good")), mode=Mode.REJECT_INVALID)
    assert (reply.action, reply.code, reply.xcode) == (Action.TEMPFAIL, "451", "4.4.3")
    pipeline.close()


def test_tap_header_carries_the_dkim_result(tmp_path: Path, recorder: Recorder) -> None:
    good = key_pair("good")
    pipeline = enforcing(
        tmp_path, {f"tlsrpt._domainkey.{SUBMITTER}.": good.record().encode()}, recorder
    )
    reply = run(pipeline, sign(report_mail(), good))
    assert reply.add_header is not None and reply.add_header[1].endswith("; dkim=pass")
    pipeline.close()


# --- [milter] config ------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tlsrpt.toml"
    path.write_text(text)
    return path


def test_recipients_and_size_default_to_the_lmtp_table(tmp_path: Path) -> None:
    base = Config(recipients=("tlsrpt@example.org",), max_message_size=1234)
    config = load_milter_config(write(tmp_path, "[milter]\n"), {}, base)
    assert config == MilterConfig(recipients=("tlsrpt@example.org",), max_message_size=1234)


def test_the_milter_table_and_flags_override(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[milter]\nlisten = "unix:/run/t/m.sock"\nmode = "Reject-Invalid"\nadd_header = false\n'
        'recipients = ["<Reports@Example.ORG>"]\ntimeout = 30\n',
    )
    config = load_milter_config(path, {"mode": "discard", "recipients": None}, Config())
    assert config.listen == "unix:/run/t/m.sock"
    assert config.socket_path == Path("/run/t/m.sock")
    assert (config.mode, config.add_header, config.timeout) == (Mode.DISCARD, False, 30)
    assert config.recipients == ("reports@example.org",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[milter]\nmdoe = 'tap'\n", "unknown key 'mdoe' in [milter]"),
        ("[milter]\nmode = 'quarantine'\n", "mode: invalid value 'quarantine'"),
        ("[milter]\nrecipients = []\n", "needs the report address"),
        ("[milter]\nlisten = 'inet:99999@127.0.0.1'\n", "invalid port"),
        ("[milter]\nadd_header = 'yes'\n", "add_header: invalid value"),
    ],
)
def test_config_errors_are_clear(tmp_path: Path, text: str, message: str) -> None:
    base = Config(recipients=("a@example.org",))
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_milter_config(write(tmp_path, text), {}, base)


@pytest.mark.parametrize(
    ("given", "spec"),
    [
        ("inet:8891@127.0.0.1", "inet:8891@127.0.0.1"),
        ("127.0.0.1:8891", "inet:8891@127.0.0.1"),
        ("[::1]:8891", "inet6:8891@::1"),
        ("local:/run/m.sock", "local:/run/m.sock"),
    ],
)
def test_listen_forms(given: str, spec: str) -> None:
    assert parse_milter_listen(given) == spec
