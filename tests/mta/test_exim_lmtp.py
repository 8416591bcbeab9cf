"""End-to-end: a real (extracted) Exim delivers report emails to our LMTP server over TCP."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .harness import EximInstance, LmtpServer, Sample, deliver_report, queue_then_recover

pytestmark = pytest.mark.mta

LoadSample = Callable[[str], Sample]


def test_report_arrives(exim: EximInstance, server: LmtpServer, load_sample: LoadSample) -> None:
    sample = load_sample("tlsrpt-digest__tlsrpt_success_google_2.eml")
    server.start()
    deliver_report(exim, server, sample)


def test_server_down_keeps_mail_queued(
    exim: EximInstance, server: LmtpServer, load_sample: LoadSample
) -> None:
    sample = load_sample("tlsrpt-digest__tlsrpt_success_microsoft.eml")
    queue_then_recover(
        exim, server, sample, deferral_reason="Connection refused", repair=server.start
    )


def test_archive_failure_defers_then_delivers_once(
    exim: EximInstance, server: LmtpServer, load_sample: LoadSample
) -> None:
    sample = load_sample("tlsrpt-digest__tlsrpt_failure.eml")
    server.start()
    server.block_archive()
    queue_then_recover(
        exim, server, sample, deferral_reason="451 4.3.0", repair=server.unblock_archive
    )
