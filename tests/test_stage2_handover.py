"""The process boundary: `serve` resolves the configuration once (file, then flags) and hands
it to its stage 2 process as one JSON document; the child reads no file and parses no flag."""

from __future__ import annotations

import json
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.lmtp import children
from tests.support.lmtp_client import NO_DKIM, LMTPClient, address_of, start_server, wait_for
from tests.support.mail import RCPT, report_mail
from tlsrpt_lmtp.cli import _parser, stage2_config
from tlsrpt_lmtp.config import ConfigError
from tlsrpt_lmtp.core.dkim import DkimPolicy
from tlsrpt_lmtp.ingest.stage2 import HANDOVER_ENV, Stage2Config, deserialise, serialise

FILE = """
[storage]
max_decompressed = 100
[log]
file = "/nonexistent/never-written.jsonl"
[dkim]
policy = "enforce"
timeout = 2.5
[alerts]
enabled = false
queue_size = 7
[metrics]
domains = ["Example.ORG"]
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tlsrpt.toml"
    path.write_text(FILE)
    return path


def _argv(config_file: Path, data_dir: Path, log: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(config_file),
        "--max-decompressed",
        "1000000",
        f"--log-file={log}",
        f"--recipient={RCPT}",
        *extra,
    ]


def test_the_flags_win_over_the_file_in_what_is_handed_over(
    config_file: Path, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    argv = ["serve", "--data-dir", str(tmp_path), *NO_DKIM, *_argv(config_file, tmp_path, log)]
    resolved = stage2_config(_parser().parse_args(argv))
    assert resolved.ingest.max_decompressed == 1_000_000  # flag over [storage]
    assert resolved.ingest.log_file == str(log)  # flag over [log]
    assert resolved.ingest.data_dir == tmp_path
    assert resolved.ingest.recipients == (RCPT,)
    assert resolved.dkim.policy is DkimPolicy.OFF  # flag over [dkim] policy
    assert resolved.dkim.timeout == 2.5  # the file's, where no flag says otherwise
    assert (resolved.alerts.enabled, resolved.alerts.queue_size) == (False, 7)
    assert resolved.metrics.domains == ("example.org",)
    text = serialise(resolved)
    assert isinstance(json.loads(text), dict)
    assert deserialise(text) == resolved


def test_the_stage2_process_gets_exactly_the_parent_s_resolved_config(
    config_file: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    log = tmp_path / "events.jsonl"
    extra = _argv(config_file, data, log)
    proc, listen = start_server(data, *extra)
    try:
        wait_for(lambda: len(children(proc.pid)) == 1)
        [child] = children(proc.pid)
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[:-1]
        assert cmdline[1:] == [b"-m", b"tlsrpt_lmtp.ingest.stage2"]  # no flag to re-parse
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        [text] = [e.split(b"=", 1)[1] for e in environ if e.startswith(HANDOVER_ENV.encode())]
        received = deserialise(text.decode())

        argv = ["serve", "--data-dir", str(data), *NO_DKIM, *extra, f"--listen={listen}"]
        expected = stage2_config(_parser().parse_args(argv))
        assert replace(received, server_started="") == replace(expected, server_started="")
        assert received.server_started <= expected.server_started

        # and it acts on it: events go to the flag's file, and [dkim] enforce (the file's)
        # would have quarantined this unsigned report; --dkim-policy off keeps it
        client = LMTPClient(address_of(listen))
        client.cmd("LHLO test.example")
        assert [
            code for code, _ in client.deliver("reporter@example.net", [RCPT], report_mail())
        ] == [250]
        client.close()
        wait_for(lambda: log.exists() and log.read_text().count("\n") >= 1)
        [first, *_] = [json.loads(line) for line in log.read_text().splitlines()]
        assert first["event"] == "tlsrpt.report"
        assert first["dkim_result"] is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        if proc.stderr is not None:
            proc.stderr.close()
    assert not Path("/nonexistent/never-written.jsonl").exists()


def test_a_bad_table_stops_serve_before_it_listens(tmp_path: Path) -> None:
    path = tmp_path / "tlsrpt.toml"
    path.write_text('[alerts]\nmail_to = ["ops@example.org"]\nsendmail = "/nonexistent/x"\n')
    args = _parser().parse_args(["serve", "--config", str(path), "--data-dir", str(tmp_path)])
    with pytest.raises(ConfigError, match="not an executable program"):
        stage2_config(args)


def test_every_section_survives_the_handover_unchanged(tmp_path: Path) -> None:
    args = _parser().parse_args(["serve", "--data-dir", str(tmp_path)])
    resolved = stage2_config(args)
    assert isinstance(resolved, Stage2Config)
    assert deserialise(serialise(resolved)) == resolved
