"""The syslog sink against a real rsyslogd (Debian's, started here on loopback and a private
unix socket, mmjsonparse on every message): each event arrives as one record that parses as
JSON, over UDP, TCP (both framings) and the unix socket, in a burst and when it is large."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.events import failure_event, policy_event
from tests.support.rsyslog import Rsyslog
from tests.support.samples import real_sample
from tlsrpt_lmtp import cli
from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.output.sinks import open_emitter
from tlsrpt_lmtp.output.syslog import SyslogOptions, SyslogWriter

BURST = 300


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    r = Rsyslog(tmp_path / "rsyslog")
    r.start()
    yield r
    r.stop()


AWKWARD = 'line one\nline two\r\n\x00 "quoted" ü 🙂'
LARGE = ("mx: a",) * 16_000


def seq(record: dict[str, Any]) -> int:
    """The number of a test event (its report_id)."""
    return int(record["report_id"])


def events(transport: str) -> list[Event]:
    """A burst of small events with awkward text, and one of ~100 KB."""
    out: list[Event] = [
        failure_event(report_id=str(i), source=transport, failure_reason_code=AWKWARD)
        for i in range(BURST)
    ]
    out.append(policy_event(report_id=str(BURST), policy_string=LARGE))
    return out


@pytest.mark.parametrize(
    ("transport", "options"),
    [
        ("udp", SyslogOptions()),
        ("tcp", SyslogOptions()),
        ("tcp", SyslogOptions(framing="lf")),
        ("unix", SyslogOptions()),
    ],
    ids=["udp", "tcp-octet-counting", "tcp-lf", "unix-rfc3164"],
)
def test_every_event_is_one_json_record(
    rsyslog: Rsyslog, transport: str, options: SyslogOptions
) -> None:
    emit = open_emitter("syslog", rsyslog.addresses[transport], syslog=options)
    sent = events(transport)
    for e in sent:
        emit(e)
    emit.close()
    records = rsyslog.wait_for(len(sent))
    assert rsyslog.unparsed() == []
    assert sorted(seq(r) for r in records) == list(range(len(sent)))  # each once, none glued
    small = [r for r in records if r["event"] == "tlsrpt.failure"]
    # NUL becomes U+FFFD: rsyslog's JSON parser would end the string there
    expected = AWKWARD.replace("\x00", "\ufffd")
    assert {r["failure_reason_code"] for r in small} == {expected}
    assert all(r["schema"] == 1 and r["source"] == transport for r in small)
    [large] = [r for r in records if r["event"] == "tlsrpt.policy"]
    assert large["truncated"] is True and large["truncated_fields"] == ["policy_string"]
    assert isinstance(large["original_size"], int) and large["original_size"] > 100_000
    assert 0 < len(large["policy_string"]) < 16_000


@pytest.mark.parametrize("transport", ["udp", "tcp", "unix"])
def test_a_message_of_exactly_the_default_size_arrives_whole(
    rsyslog: Rsyslog, transport: str
) -> None:
    writer = SyslogWriter(rsyslog.addresses[transport])
    base = '{"schema":1,"event":"tlsrpt.report","pad":""}'
    pad = writer.limit - len(writer.message(base))
    line = base.replace('"pad":""', '"pad":"' + "p" * pad + '"')
    assert len(writer.message(line)) == writer.limit == 8096
    writer.write_line(line)
    writer.close()
    [record] = rsyslog.wait_for(1)
    assert record["pad"] == "p" * pad and "truncated" not in record
    assert rsyslog.unparsed() == []


def test_large_event_whole_over_tcp_when_the_collector_allows_it(tmp_path: Path) -> None:
    big = Rsyslog(tmp_path / "big", max_message_size="256k")
    big.start()
    try:
        emit = open_emitter("syslog", big.addresses["tcp"], syslog=SyslogOptions(max_size=200_000))
        emit(policy_event(policy_string=LARGE))
        emit.close()
        [record] = big.wait_for(1)
    finally:
        big.stop()
    assert record["policy_string"] == list(LARGE) and "truncated" not in record


def test_tcp_survives_a_collector_restart_and_raises_while_it_is_down(rsyslog: Rsyslog) -> None:
    emit = open_emitter("syslog", rsyslog.addresses["tcp"])
    emit(failure_event(report_id="1"))
    assert [seq(r) for r in rsyslog.wait_for(1)] == [1]
    rsyslog.stop()
    with pytest.raises(OSError):  # not handed over: the caller must know (and retry)
        emit(failure_event(report_id="2"))
    rsyslog.start()
    emit(failure_event(report_id="3"))
    emit.close()
    assert [seq(r) for r in rsyslog.wait_for(2)] == [1, 3]


def test_unix_socket_survives_a_collector_restart(rsyslog: Rsyslog) -> None:
    emit = open_emitter("syslog", rsyslog.addresses["unix"])
    emit(failure_event(report_id="1"))
    rsyslog.wait_for(1)
    rsyslog.stop()
    with pytest.raises(OSError):
        emit(failure_event(report_id="2"))
    rsyslog.start()  # a new socket at the same path
    emit(failure_event(report_id="3"))
    emit.close()
    assert [seq(r) for r in rsyslog.wait_for(2)] == [1, 3]


def test_parse_command_with_the_log_section_sends_real_reports(
    rsyslog: Rsyslog, tmp_path: Path
) -> None:
    sample = real_sample("dmarc-report-viewer__google.json")
    config = tmp_path / "c.toml"
    config.write_text(
        f'[log]\nformat = "syslog"\nsyslog_address = "{rsyslog.addresses["tcp"]}"\n'
        'syslog_framing = "lf"\nsyslog_format = "rfc5424"\n'
    )
    code = cli.main(
        [
            "parse",
            "--config",
            str(config),
            "--log-format",
            "syslog",
            "--data-dir",
            str(tmp_path / "d"),
            str(sample),
        ]
    )
    assert code == 0
    records = rsyslog.wait_for(1)
    assert records and rsyslog.unparsed() == []
    assert "tlsrpt.report" in {r["event"] for r in records}
    assert all(r["schema"] == 1 for r in records)
