"""The real milter (pymilter on libmilter, in its own process) driven without an MTA:
``miltertest`` plays the MTA's side of the milter protocol (tests/support/milter.py)."""

from __future__ import annotations

import socket
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("Milter", reason="pymilter not installed (pip install '.[milter]')")
miltertest = pytest.importorskip("miltertest", reason="miltertest not installed")
from miltertest import constants as C  # noqa: E402

from tests.support.dkim import (  # noqa: E402
    SUBMITTER,
    LoopbackDns,
    free_port,
    key_pair,
    loopback_dns,
    report_mail,
    sign,
)
from tests.support.milter import (  # noqa: E402
    DKIM_OFF,
    OTHER_RCPT,
    REPORT_RCPT,
    MilterProcess,
    Milters,
    code,
    verdict,
)


@pytest.fixture(scope="module")
def milters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Milters]:
    registry = Milters(tmp_path_factory.mktemp("milters"))
    yield registry
    assert all(rc == 0 for rc in registry.stop_all())


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    with loopback_dns() as server:
        yield server


# --- negotiation and mail that is not a report ----------------------------------------------


def reports(milter: MilterProcess, report_id: str, kind: str = "tlsrpt.report") -> list[Any]:
    return [e for e in milter.events(kind) if e.get("report_id") == report_id]


def test_negotiates_no_reply_steps_and_leading_space(milters: Milters) -> None:
    side = milters.get().connect()
    try:
        for flag in ("NR_MAIL", "NR_RCPT", "NR_HDR", "NR_BODY", "HDR_LEADSPC", "NOCONNECT"):
            assert side.protocol & getattr(C, f"SMFIP_{flag}"), flag
        assert not side.protocol & (C.SMFIP_NR_DATA | C.SMFIP_NR_EOH)  # it answers there
    finally:
        side.close()


def test_other_mail_is_accepted_at_data_and_never_buffered(milters: Milters) -> None:
    milter = milters.get()
    milter.send(report_mail(report_id="warm-up"))
    before = milter.archived()
    replies = milter.send(report_mail(report_id="not-for-us"), [OTHER_RCPT])
    assert replies == [(C.SMFIR_ACCEPT, {})]
    assert milter.archived() == before
    assert reports(milter, "not-for-us") == []


# --- the three modes ------------------------------------------------------------------------


def test_tap_ingests_and_adds_the_header(milters: Milters) -> None:
    milter = milters.get("tap")
    replies = milter.send(report_mail(report_id="tap-1", failures=2))
    [event] = reports(milter, "tap-1")
    assert (event["source"], event["total_failure_session_count"]) == ("milter", 2)
    value = f"archive={event['archive_id'][:16]}; reports=1; failures=2"
    assert replies == [
        (C.SMFIR_ADDHEADER, {"name": "X-TLSRPT-Report", "value": " " + value}),
        (C.SMFIR_CONTINUE, {}),
    ]


def test_several_messages_on_one_connection(milters: Milters) -> None:
    milter = milters.get("tap")
    side = milter.connect()
    try:
        for i in range(3):
            reply = verdict(side.message(report_mail(report_id=f"conn-{i}")))
            assert reply[0] == C.SMFIR_CONTINUE
        assert side.message(report_mail(), [OTHER_RCPT]) == [(C.SMFIR_ACCEPT, {})]
        assert verdict(side.message(report_mail(report_id="conn-3")))[0] == C.SMFIR_CONTINUE
    finally:
        side.close()
    assert all(len(reports(milter, f"conn-{i}")) == 1 for i in range(4))


def test_discard(milters: Milters) -> None:
    milter = milters.get("discard")
    assert milter.send(report_mail(report_id="discard-1")) == [(C.SMFIR_DISCARD, {})]
    assert len(reports(milter, "discard-1")) == 1


def test_discard_removes_only_the_report_recipient(milters: Milters) -> None:
    milter = milters.get("discard")
    replies = milter.send(report_mail(report_id="discard-2"), [REPORT_RCPT, OTHER_RCPT])
    assert replies == [
        (C.SMFIR_DELRCPT, {"rcpt": f"<{REPORT_RCPT}>"}),
        (C.SMFIR_CONTINUE, {}),
    ]
    assert len(reports(milter, "discard-2")) == 1


def test_reject_invalid(milters: Milters) -> None:
    milter = milters.get("reject-invalid")
    before = len(milter.events("tlsrpt.invalid"))
    replies = milter.send(b"From: a@b.test\r\nSubject: x\r\n\r\nnot a report\r\n")
    assert code(replies) == "550 5.6.0 no usable TLS report: no report attachment found"
    assert len(milter.events("tlsrpt.invalid")) == before + 1
    assert verdict(milter.send(report_mail(report_id="valid")))[0] == C.SMFIR_CONTINUE
    assert len(reports(milter, "valid")) == 1


# --- failures -------------------------------------------------------------------------------


def test_archive_failure_is_451(milters: Milters) -> None:
    milter = milters.get("tap")
    assert verdict(milter.send(report_mail(report_id="before-lock")))[0] == C.SMFIR_CONTINUE
    blocker = sqlite3.connect(milter.data_dir / "tlsrpt.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: archiving must fail
    try:
        replies = milter.send(report_mail(report_id="locked-out"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert code(replies).startswith("451 4.3.0 cannot store the report, try again later")
    assert reports(milter, "locked-out") == []
    assert verdict(milter.send(report_mail(report_id="locked-out")))[0] == C.SMFIR_CONTINUE
    assert len(reports(milter, "locked-out")) == 1  # the retry is stored


def test_dkim_verdict_and_enforce_through_libmilter(milters: Milters, dns: LoopbackDns) -> None:
    good = key_pair("good")
    dns.publish(good)
    enforce = f'[dkim]\npolicy = "enforce"\nnameservers = ["{dns.nameserver}"]\ntimeout = 1\n'
    milter = milters.get("reject-invalid", enforce)
    signed = sign(report_mail(report_id="signed"), good)
    assert verdict(milter.send(signed))[0] == C.SMFIR_CONTINUE
    [event] = reports(milter, "signed")
    assert (event["dkim_result"], event["dkim_domain"], event["dkim_aligned"]) == (
        "pass",
        SUBMITTER,
        True,
    )
    replies = milter.send(report_mail(report_id="unsigned"))
    assert code(replies).startswith("550 5.7.20 TLS report not authenticated: no DKIM signature")
    [invalid] = reports(milter, "unsigned", "tlsrpt.invalid")
    assert invalid["dkim_result"] == "none"


def test_dkim_dns_down_with_enforce_is_451(milters: Milters) -> None:
    dead = f"127.0.0.1:{free_port()}"
    enforce = f'[dkim]\npolicy = "enforce"\nnameservers = ["{dead}"]\ntimeout = 0.5\n'
    milter = milters.get("reject-invalid", enforce)
    replies = milter.send(sign(report_mail(report_id="dns-down"), key_pair("good")))
    assert code(replies).startswith("451 4.4.3")
    assert reports(milter, "dns-down") == []


def test_unix_socket_and_clean_shutdown(tmp_path: Path) -> None:
    sock = tmp_path / "milter.sock"
    config = f'[lmtp]\nrecipients = ["{REPORT_RCPT}"]\n' + DKIM_OFF
    milter = MilterProcess(tmp_path / "unix", config, f"unix:{sock}")
    milter.start()
    try:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o666
        assert verdict(milter.send(report_mail()))[0] == C.SMFIR_CONTINUE
    finally:
        assert milter.stop() == 0
    assert not sock.exists()
    assert "Traceback" not in milter.stderr()


def test_tcp_nodelay_reaches_the_accepted_sockets() -> None:
    """disable_nagle() finds the listening socket among the process's descriptors; Linux hands
    TCP_NODELAY on to accepted sockets (else 40 ms per tapped message, see the adapter)."""
    from tlsrpt_lmtp.ingest.milter.adapter import disable_nagle

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert disable_nagle() >= 1
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        with socket.create_connection(listener.getsockname(), timeout=5) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert not client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_stops_on_sigterm_with_an_alert_thread_running(tmp_path: Path) -> None:
    """A webhook alert channel starts a delivery thread before libmilter's main loop; SIGTERM
    must still reach libmilter (the only thread that waits for it), not that thread."""
    config = (
        f'[lmtp]\nrecipients = ["{REPORT_RCPT}"]\n'
        f'[alerts]\nwebhook_url = "http://127.0.0.1:{free_port()}/hook"\n' + DKIM_OFF
    )
    milter = MilterProcess(tmp_path / "alerts", config)
    milter.start()
    try:
        assert verdict(milter.send(report_mail(report_id="alerting")))[0] == C.SMFIR_CONTINUE
    finally:
        assert milter.stop() == 0, milter.stderr()
