"""The LMTP server as a real process on loopback, driven by a raw LMTP client."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.lmtp import Server, children, events, serve_with_config, statuses, zombie
from tests.support.lmtp_client import (
    LMTPClient,
    address_of,
    filled,
    small_filesystem,
    wait_for,
)
from tests.support.mail import RCPT, report_mail


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    if s.proc.poll() is None:
        s.stop()


def test_report_is_delivered_and_logged(server: Server) -> None:
    c = server.client()
    replies = c.deliver("reporter@example.net", [RCPT], report_mail())
    c.close()
    assert [code for code, _ in replies] == [250]
    names = [e["event"] for e in events(server.data_dir, at_least=4)]
    assert names[:3] == ["tlsrpt.report", "tlsrpt.policy", "tlsrpt.failure"]
    # a certificate-expired failure under an enforce policy also raises alerts
    assert set(names[3:]) == {"tlsrpt.alert"}
    assert statuses(server.data_dir) == ["report"]


def test_each_recipient_gets_its_own_reply(server: Server) -> None:
    c = server.client()
    replies = c.deliver("r@example.net", [RCPT, RCPT.upper()], report_mail())
    c.close()
    assert [code for code, _ in replies] == [250, 250]
    reports = [e for e in events(server.data_dir, at_least=3) if e["event"] == "tlsrpt.report"]
    assert len(reports) == 1 and reports[0]["total_failure_session_count"] == 3
    assert reports[0]["report_domain"] == "example.org"


def test_unknown_recipient_is_refused_at_rcpt(server: Server) -> None:
    c = server.client()
    c.cmd("MAIL FROM:<r@example.net>")
    code, text = c.cmd("RCPT TO:<someone@else.example>")
    c.close()
    assert (code, text.split()[0]) == (550, "5.1.1")


def test_size_is_advertised_and_enforced(tmp_path: Path) -> None:
    s = Server(tmp_path, "--max-message-size=2000")
    try:
        c = LMTPClient(address_of(s.listen))
        _code, text = c.cmd("LHLO test.example")
        assert "SIZE 2000" in text
        assert c.cmd("MAIL FROM:<r@example.net> SIZE=5000")[0] == 552
        c.cmd("RSET")
        replies = c.deliver("r@example.net", [RCPT], report_mail() + b"x" * 3000 + b"\r\n")
        c.close()
        assert [code for code, _ in replies] == [552]
    finally:
        s.stop()


def test_long_lines_do_not_bounce(server: Server) -> None:
    c = server.client()
    replies = c.deliver("r@example.net", [RCPT], report_mail(extra_line=b"y" * 5000 + b"\r\n"))
    c.close()
    assert [code for code, _ in replies] == [250]


def test_mail_without_report_is_accepted_and_quarantined(server: Server) -> None:
    c = server.client()
    replies = c.deliver("r@example.net", [RCPT], b"Subject: not a report\r\n\r\nhello\r\n")
    c.close()
    assert [code for code, _ in replies] == [250]
    [invalid] = [e for e in events(server.data_dir, at_least=1) if e["event"] == "tlsrpt.invalid"]
    assert invalid["subject"] == "not a report"
    assert statuses(server.data_dir) == ["invalid"]


def test_full_disk_answers_451_to_every_recipient_then_recovers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with small_filesystem(data, "4m"):
        s = Server(data)
        try:
            with filled(data):
                c = s.client()
                replies = c.deliver("r@example.net", [RCPT, RCPT.upper()], report_mail())
                c.close()
            assert [(code, text.split()[0]) for code, text in replies] == [(451, "4.3.0")] * 2
            assert events(data) == []
            c = s.client()
            assert [code for code, _ in c.deliver("r@example.net", [RCPT], report_mail())] == [250]
            c.close()
            assert events(data, at_least=3)[0]["event"] == "tlsrpt.report"
        finally:
            s.stop()


def test_unix_socket_and_clean_shutdown(tmp_path: Path) -> None:
    sock = tmp_path / "lmtp.sock"
    s = Server(tmp_path, f"--listen=unix:{sock}")
    c = s.client()
    assert [code for code, _ in c.deliver("r@example.net", [RCPT], report_mail())] == [250]
    c.close()
    assert s.stop() == 0
    assert not sock.exists()


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    out = serve_with_config(tmp_path, '[lmtp]\nlisten = "127.0.0.1:25"\nrecipent = ["typo"]\n')
    assert out.returncode == 2
    assert "unknown key 'recipent' in [lmtp]" in out.stderr


def test_stage2_process_that_died_is_restarted_and_nothing_is_lost(server: Server) -> None:
    [stage2] = children(server.proc.pid)
    os.kill(stage2, signal.SIGKILL)
    # restarted by the server's supervisor (test_ingest_isolation: without any delivery)
    wait_for(lambda: children(server.proc.pid) not in ([], [stage2]), timeout=30)
    c = server.client()
    assert [code for code, _ in c.deliver("r@example.net", [RCPT], report_mail())] == [250]
    c.close()
    reports = [e for e in events(server.data_dir, at_least=3) if e["event"] == "tlsrpt.report"]
    assert len(reports) == 1
    [restarted] = children(server.proc.pid)
    assert restarted != stage2


def test_killed_server_leaves_its_stage2_to_finish_what_was_acknowledged(tmp_path: Path) -> None:
    s = Server(tmp_path)
    [stage2] = children(s.proc.pid)
    c = s.client()
    replies = c.deliver("r@example.net", [RCPT], report_mail(rid="acked"))
    os.kill(s.proc.pid, signal.SIGKILL)
    s.proc.wait(timeout=10)
    assert [code for code, _ in replies] == [250]
    wait_for(lambda: not Path(f"/proc/{stage2}").exists() or zombie(stage2), timeout=20)
    assert statuses(tmp_path) == ["report"]
    assert [e["report_id"] for e in events(tmp_path) if e["event"] == "tlsrpt.report"] == ["acked"]
