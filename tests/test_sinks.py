"""Event sinks: JSON lines to a file, and syslog to a UDP collector on loopback."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

from tests.support.events import failure_event
from tlsrpt_lmtp.core.events import invalid_event
from tlsrpt_lmtp.core.model import MailMeta
from tlsrpt_lmtp.output.sinks import open_emitter


def test_json_file_has_schema_event_timestamp_first(tmp_path: Path) -> None:
    path = tmp_path / "log" / "events.jsonl"
    emit = open_emitter("json", str(path))
    emit(invalid_event("no report attachment found", MailMeta(), archive_id="x", source="file"))
    emit.close()
    line = path.read_text().splitlines()[0]
    assert list(json.loads(line))[:4] == ["schema", "event", "timestamp", "report_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", json.loads(line)["timestamp"])


def test_syslog_over_udp_carries_the_json_event() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(5)
        port = collector.getsockname()[1]
        emit = open_emitter("syslog", f"udp:127.0.0.1:{port}")
        emit(failure_event())
        emit.close()
        datagram = collector.recv(65536).decode()
    # <22> = facility mail (2) * 8 + severity info (6); RFC 5424 with the event name as MSGID
    head, _, payload = datagram.partition(" - ")
    assert re.fullmatch(r"<22>1 \S+Z \S+ tlsrpt-lmtp \d+ tlsrpt.failure", head)
    event = json.loads(payload)
    assert event["event"] == "tlsrpt.failure" and event["schema"] == 1
