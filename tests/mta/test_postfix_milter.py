"""End to end: a real Postfix on 127.0.0.1 with our milter in ``smtpd_milters``.

A report sent by SMTP is ingested by the milter and still delivered by LMTP (tap), or not
delivered (discard); invalid report mail is refused at end of DATA (reject-invalid); when the
milter is down Postfix follows ``milter_default_action``. DKIM is verified on the bytes that
libmilter hands over, through Postfix (``c=simple/simple`` makes every header byte count).
"""

from __future__ import annotations

import smtplib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dkim import SUBMITTER, key_pair, loopback_dns, report_mail, sign
from tests.support.lmtp_client import free_port

from .harness import (
    LOOPBACK,
    REPORT_RCPT,
    LmtpEndpoint,
    LmtpServer,
    PostfixInstance,
    require_postfix,
    send_smtp,
    wait_until,
)

# Skips the module (with the reason) where pymilter or miltertest is missing.
from tests.support.milter import DKIM_OFF, MilterProcess  # isort: skip

pytestmark = pytest.mark.mta


class MilterPostfix(PostfixInstance):
    """The harness's Postfix plus the milter settings of contrib/postfix/milter.md."""

    def __init__(self, workdir: Path, lmtp: LmtpEndpoint, milter_port: int, default: str) -> None:
        super().__init__(workdir, lmtp)
        self.milter_port = milter_port
        self.default_action = default

    def main_cf(self) -> dict[str, str]:
        return {
            **super().main_cf(),
            "smtpd_milters": f"inet:{LOOPBACK}:{self.milter_port}",
            "non_smtpd_milters": f"inet:{LOOPBACK}:{self.milter_port}",
            "milter_default_action": self.default_action,
            "milter_protocol": "6",
            "milter_connect_timeout": "5s",
        }


MakePostfix = Callable[[str], MilterPostfix]


@pytest.fixture
def milter_port() -> int:
    return free_port()


@pytest.fixture
def make_postfix(
    workdir: Path, tcp_endpoint: LmtpEndpoint, milter_port: int
) -> Iterator[MakePostfix]:
    require_postfix()
    started: list[MilterPostfix] = []

    def make(default_action: str = "tempfail") -> MilterPostfix:
        instance = MilterPostfix(workdir, tcp_endpoint, milter_port, default_action)
        started.append(instance)
        instance.start()
        return instance

    yield make
    for instance in started:
        instance.stop()


@pytest.fixture
def milter_factory(workdir: Path, milter_port: int) -> Iterator[Callable[..., MilterProcess]]:
    started: list[MilterProcess] = []

    def make(mode: str = "tap", dkim: str = DKIM_OFF) -> MilterProcess:
        config = f'[lmtp]\nrecipients = ["{REPORT_RCPT}"]\n[milter]\nmode = "{mode}"\n' + dkim
        listen = f"inet:{milter_port}@{LOOPBACK}"
        milter = MilterProcess(workdir / f"milter{len(started)}", config, listen)
        milter.start()
        started.append(milter)
        return milter

    yield make
    for milter in started:
        milter.stop()


def delivered_raw(server: LmtpServer) -> list[bytes]:
    """The raw messages our LMTP server archived, i.e. what Postfix delivered."""
    with sqlite3.connect(server.database()) as db:
        return [bytes(row[0]) for row in db.execute("SELECT raw FROM messages")]


def wait_for_milter_report(
    milter: MilterProcess, report_id: str, postfix: PostfixInstance
) -> dict[str, Any]:
    return wait_until(
        lambda: next(
            (e for e in milter.events("tlsrpt.report") if e["report_id"] == report_id), None
        ),
        what=f"the milter's tlsrpt.report event for {report_id!r}",
        diagnostics=lambda: postfix.diagnostics() + "\nmilter stderr:\n" + milter.stderr(),
    )


def test_tap_ingests_and_postfix_still_delivers(
    make_postfix: MakePostfix, milter_factory: Callable[..., MilterProcess], server: LmtpServer
) -> None:
    milter = milter_factory("tap")
    server.start()
    postfix = make_postfix("tempfail")
    send_smtp(postfix.smtp_port, report_mail(report_id="pf-tap", to=REPORT_RCPT))
    event = wait_for_milter_report(milter, "pf-tap", postfix)
    assert (event["source"], event["total_failure_session_count"]) == ("milter", 3)
    server.wait_for_report("pf-tap", mta=postfix)
    postfix.wait_for_delivery()
    postfix.wait_queue_empty()
    [raw] = delivered_raw(server)
    assert (
        f"X-TLSRPT-Report: archive={event['archive_id'][:16]}; reports=1; failures=3".encode()
        in raw
    )


def test_other_mail_passes_the_milter_untouched(
    make_postfix: MakePostfix, milter_factory: Callable[..., MilterProcess], server: LmtpServer
) -> None:
    milter = milter_factory("tap")
    server.recipients = (REPORT_RCPT, "postmaster@reports.example.test")
    server.start()
    postfix = make_postfix("tempfail")
    raw = report_mail(report_id="pf-other", to="postmaster@reports.example.test")
    send_smtp(postfix.smtp_port, raw, recipients=["postmaster@reports.example.test"])
    server.wait_for_report("pf-other", mta=postfix)
    postfix.wait_queue_empty()
    assert milter.events("tlsrpt.report") == []
    [delivered] = delivered_raw(server)
    assert b"X-TLSRPT-Report" not in delivered


def test_discard_ingests_and_postfix_delivers_nothing(
    make_postfix: MakePostfix, milter_factory: Callable[..., MilterProcess], server: LmtpServer
) -> None:
    milter = milter_factory("discard")
    server.start()
    postfix = make_postfix("tempfail")
    send_smtp(postfix.smtp_port, report_mail(report_id="pf-discard", to=REPORT_RCPT))
    wait_for_milter_report(milter, "pf-discard", postfix)
    postfix.wait_for_log(r"milter-discard", containing="DISCARD")
    postfix.wait_queue_empty()
    assert server.report_events("pf-discard") == []
    assert "status=sent" not in postfix.log_text()


def test_reject_invalid_is_a_550_at_end_of_data(
    make_postfix: MakePostfix, milter_factory: Callable[..., MilterProcess], server: LmtpServer
) -> None:
    milter = milter_factory("reject-invalid")
    server.start()
    postfix = make_postfix("tempfail")
    junk = f"From: a@b.test\r\nTo: {REPORT_RCPT}\r\nSubject: x\r\n\r\nno report\r\n".encode()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send_smtp(postfix.smtp_port, junk)
    assert refused.value.smtp_code == 550
    assert b"5.6.0 no usable TLS report" in refused.value.smtp_error
    assert len(milter.events("tlsrpt.invalid")) == 1
    postfix.wait_queue_empty()


def test_milter_down_with_default_action_tempfail(
    make_postfix: MakePostfix, milter_factory: Callable[..., MilterProcess], server: LmtpServer
) -> None:
    server.start()
    postfix = make_postfix("tempfail")
    raw = report_mail(report_id="pf-down", to=REPORT_RCPT)
    with pytest.raises(smtplib.SMTPException) as refused:
        send_smtp(postfix.smtp_port, raw)
    assert "451" in str(refused.value) and "4.7.1" in str(refused.value)
    assert server.report_events("pf-down") == []
    milter = milter_factory("tap")  # the client retries once the milter is back
    send_smtp(postfix.smtp_port, raw)
    wait_for_milter_report(milter, "pf-down", postfix)
    server.wait_for_report("pf-down", mta=postfix)


def test_milter_down_with_default_action_accept(
    make_postfix: MakePostfix, server: LmtpServer
) -> None:
    server.start()
    postfix = make_postfix("accept")
    send_smtp(postfix.smtp_port, report_mail(report_id="pf-accept", to=REPORT_RCPT))
    server.wait_for_report("pf-accept", mta=postfix)
    postfix.wait_for_delivery()
    assert "connect to Milter service" in postfix.log_text()


def test_dkim_verifies_on_the_bytes_postfix_passes(
    make_postfix: MakePostfix, milter_factory: Callable[..., MilterProcess], server: LmtpServer
) -> None:
    good = key_pair("good")
    with loopback_dns() as dns:
        dns.publish(good)
        config = f'[dkim]\npolicy = "verify"\nnameservers = ["{dns.nameserver}"]\ntimeout = 2\n'
        milter = milter_factory("tap", config)
        server.start()
        postfix = make_postfix("tempfail")
        for rid, canon in (("pf-dkim-simple", b"simple"), ("pf-dkim-relaxed", b"relaxed")):
            raw = sign(
                report_mail(report_id=rid, to=REPORT_RCPT), good, canonicalize=(canon, canon)
            )
            send_smtp(postfix.smtp_port, raw)
            event = wait_for_milter_report(milter, rid, postfix)
            assert (event["dkim_result"], event["dkim_domain"], event["dkim_aligned"]) == (
                "pass",
                SUBMITTER,
                True,
            ), event
        server.wait_for_report("pf-dkim-relaxed", mta=postfix)
