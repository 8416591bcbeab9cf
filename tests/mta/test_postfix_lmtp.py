"""End-to-end: a real Postfix delivers report emails to our LMTP server (TCP and unix socket)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .harness import (
    REPORT_RCPT,
    UNKNOWN_RCPT,
    LmtpServer,
    PostfixInstance,
    Sample,
    assert_delivered_once,
    deliver_report,
    queue_then_recover,
)

pytestmark = pytest.mark.mta

LoadSample = Callable[[str], Sample]


def test_report_over_tcp(
    postfix: PostfixInstance, server: LmtpServer, load_sample: LoadSample
) -> None:
    sample = load_sample("tlsrpt-digest__tlsrpt_failure.eml")
    server.start()
    deliver_report(postfix, server, sample)
    server.stop()  # SIGTERM: must exit 0


def test_report_over_unix_socket(
    postfix_unix: PostfixInstance, unix_server: LmtpServer, load_sample: LoadSample
) -> None:
    sample = load_sample("tlsrpt-digest__tlsrpt_success_microsoft.eml")
    unix_server.start()
    deliver_report(postfix_unix, unix_server, sample)
    unix_server.stop()  # SIGTERM: must exit 0


def test_server_down_keeps_mail_queued(
    postfix: PostfixInstance, server: LmtpServer, load_sample: LoadSample
) -> None:
    sample = load_sample("parsedmarc__google.com_smtp_tls_report.eml")
    queue_then_recover(
        postfix, server, sample, deferral_reason="Connection refused", repair=server.start
    )


def test_archive_failure_defers_then_delivers_once(
    postfix: PostfixInstance, server: LmtpServer, load_sample: LoadSample
) -> None:
    sample = load_sample("mail-tls-rpt__email.eml")
    server.start()
    server.block_archive()
    queue_then_recover(
        postfix, server, sample, deferral_reason="451 4.3.0", repair=server.unblock_archive
    )


def test_unknown_recipient_bounces(
    postfix: PostfixInstance, server: LmtpServer, load_sample: LoadSample
) -> None:
    sample = load_sample("tlsrpt-digest__tlsrpt_success_google_1.eml")
    server.start()
    postfix.send(sample.message(), recipients=[REPORT_RCPT, UNKNOWN_RCPT])
    line = postfix.wait_for_bounce(UNKNOWN_RCPT, containing="5.1.1")
    assert "in reply to RCPT TO command" in line, line
    postfix.wait_for_delivery(REPORT_RCPT)
    server.wait_for_report(sample.report_id, mta=postfix)
    postfix.wait_queue_empty()
    assert_delivered_once(server, sample)
