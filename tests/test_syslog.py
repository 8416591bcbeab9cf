"""The syslog sink's pure parts: addresses, headers, framing, shortening; and its failures
against plain loopback sockets (the end-to-end tests with rsyslog are in test_syslog_rsyslog)."""

from __future__ import annotations

import json
import random
import re
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest

from tlsrpt_lmtp.config import ConfigError, load
from tlsrpt_lmtp.output.syslog import (
    SyslogOptions,
    SyslogWriter,
    Target,
    event_name,
    frame,
    header,
    parse_target,
    shorten,
    without_nul,
)


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("/dev/log", Target("unix", path="/dev/log")),
        ("unix:/run/x.sock", Target("unix", path="/run/x.sock")),
        ("udp:10.0.0.1", Target("udp", host="10.0.0.1", port=514)),
        ("tcp:logs.example.org:6514", Target("tcp", host="logs.example.org", port=6514)),
        ("tcp:[::1]:601", Target("tcp", host="::1", port=601)),
        ("udp:[::1]", Target("udp", host="::1", port=514)),
    ],
)
def test_parse_target(address: str, target: Target) -> None:
    assert parse_target(address) == target


@pytest.mark.parametrize("address", ["", "unix:", "tcp:", "tcp:host:0", "udp:host:99999"])
def test_parse_target_rejects(address: str) -> None:
    with pytest.raises(ValueError, match="syslog address"):
        parse_target(address)


def test_rfc5424_header() -> None:
    head = header("rfc5424", now=0.25, host="mx1", pid=42, event="tlsrpt.report", local=False)
    assert head == "<22>1 1970-01-01T00:00:00.250000Z mx1 tlsrpt-lmtp 42 tlsrpt.report - "


def test_rfc3164_header_local_and_remote() -> None:
    local = header("rfc3164", now=0, host="mx1", pid=7, event="-", local=True)
    assert re.fullmatch(r"<22>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d tlsrpt-lmtp\[7\]: ", local)
    remote = header("rfc3164", now=0, host="mx1", pid=7, event="-", local=False)
    assert remote.endswith(" mx1 tlsrpt-lmtp[7]: ")


def test_framing() -> None:
    assert frame(b"<22>1 - x", "octet-counting") == b"9 <22>1 - x"
    assert frame("é".encode(), "octet-counting") == "2 é".encode()  # octets, not characters
    assert frame(b"abc", "lf") == b"abc\n"


def test_event_name_is_the_msgid() -> None:
    assert event_name('{"schema":1,"event":"tlsrpt.failure","x":1}') == "tlsrpt.failure"
    assert event_name('{"schema":1,"event":"has space"}') == "-"
    assert event_name('{"schema":1,"event":"' + "a" * 40 + '"}') == "-"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a\x00b", "a\ufffdb"), ("\\u0000", "\\u0000"), ("\\\x00", "\\\ufffd"), ("x", "x")],
)
def test_nul_becomes_a_replacement_character(value: str, expected: str) -> None:
    assert json.loads(without_nul(json.dumps({"v": value})))["v"] == expected


def event(**fields: Any) -> str:
    return orjson.dumps({"schema": 1, "event": "tlsrpt.report", **fields}).decode()


def test_shorten_leaves_a_small_event_alone() -> None:
    line = event(a="b")
    assert shorten(line, 1000) is line


def test_shorten_cuts_the_largest_string() -> None:
    line = event(report_id="r1", blob="ü" * 50_000)
    out = shorten(line, 2000)
    assert len(out.encode()) <= 2000
    obj = json.loads(out)
    assert obj["truncated"] is True and obj["original_size"] == len(line.encode())
    assert obj["truncated_fields"] == ["blob"] and obj["report_id"] == "r1"
    assert obj["blob"].endswith("…") and len(obj["blob"]) > 500


def test_shorten_keeps_a_prefix_of_lists_and_drops_objects() -> None:
    line = event(items=list(range(20_000)), nested={"k": "v" * 30_000}, ctl="\x00" * 5000)
    out = shorten(line, 1500)
    assert len(out.encode()) <= 1500
    obj = json.loads(out)
    assert "nested" not in obj and obj["items"] == list(range(len(obj["items"])))
    assert set(obj["truncated_fields"]) >= {"nested", "items", "ctl"}
    assert obj["schema"] == 1 and obj["event"] == "tlsrpt.report"


def test_shorten_of_many_small_fields_still_fits() -> None:
    line = event(**{f"f{i}": i for i in range(5000)})
    out = shorten(line, 600)
    assert len(out.encode()) <= 600 and json.loads(out)["truncated"] is True


def test_shorten_of_text_that_is_not_json() -> None:
    out = shorten("x" * 5000, 600)
    assert json.loads(out)["event"] == "tlsrpt.unparsable" and len(out) <= 600


def test_message_never_exceeds_max_size() -> None:
    writer = SyslogWriter("tcp:127.0.0.1:9", SyslogOptions(max_size=1000))
    message = writer.message(event(blob="x" * 10_000))
    assert len(message) <= 1000
    assert json.loads(message.split(b" - ", 1)[1])["truncated"] is True


def test_options_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[log]\nformat = "syslog"\nsyslog_framing = "nul"\n')
    with pytest.raises(ConfigError, match="syslog_framing must be one of octet-counting, lf"):
        load(config, {})
    config.write_text("[log]\nsyslog_max_size = 100\n")
    with pytest.raises(ConfigError, match="syslog_max_size must be between 480"):
        load(config, {})
    config.write_text('[log]\nsyslog_format = "rfc5424"\nsyslog_address = "tcp:h:1"\n')
    assert load(config, {}).syslog_format == "rfc5424"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_tcp_write_to_a_closed_port_raises() -> None:
    writer = SyslogWriter(f"tcp:127.0.0.1:{closed_port()}")
    with pytest.raises(ConnectionRefusedError):
        writer.write_line(event())
    with pytest.raises(ConnectionRefusedError):  # tries again on the next event
        writer.write_line(event())
    writer.close()


def test_unix_write_without_a_receiver_raises(tmp_path: Path) -> None:
    writer = SyslogWriter(str(tmp_path / "missing.sock"))
    with pytest.raises(FileNotFoundError):
        writer.write_line(event())
    writer.close()


def test_tcp_reconnects_when_the_collector_closed_the_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(5)
        writer = SyslogWriter(f"tcp:127.0.0.1:{server.getsockname()[1]}")
        writer.write_line(event(n=1))
        first, _ = server.accept()
        first.close()  # the collector restarts: the old connection ends
        writer.write_line(event(n=2))  # noticed before writing: goes to a new connection
        second, _ = server.accept()
        second.settimeout(5)
        data = b""
        while not data.endswith(b"}"):
            data += second.recv(65536)
        second.close()
        writer.close()
    length, _, message = data.partition(b" ")
    assert int(length) == len(message) and json.loads(message.split(b" - ", 1)[1])["n"] == 2


def test_shorten_always_fits_and_stays_json() -> None:
    """Random events (fixed seed): every result fits the limit and parses as an object."""
    rng = random.Random(8460)

    def value(depth: int) -> Any:
        kind = rng.randrange(6 if depth < 2 else 4)
        if kind == 0:
            return rng.randrange(-(10**12), 10**12)
        if kind == 1:
            return "".join(
                chr(rng.choice([0, 10, 34, 92, 0xE9, 0x1F642, 97]))
                for _ in range(rng.randrange(2000))
            )
        if kind == 2:
            return rng.random() < 0.5
        if kind == 3:
            return None
        if kind == 4:
            return [value(depth + 1) for _ in range(rng.randrange(12))]
        return {f"k{i}": value(depth + 1) for i in range(rng.randrange(8))}

    for _ in range(80):
        fields = {f"f{i}": value(0) for i in range(rng.randrange(1, 40))}
        line = event(**fields)
        limit = rng.choice([480, 1000, 8096])
        out = shorten(line, limit)
        assert len(out.encode()) <= limit
        obj = json.loads(out)
        assert obj["event"] == "tlsrpt.report"
        assert (out == line) or obj["truncated"] is True
