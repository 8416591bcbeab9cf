"""`tlsrpt-lmtp parse` and `reprocess` over files, Maildir and mbox; config precedence."""

from __future__ import annotations

import gzip
import json
import mailbox
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.lmtp_client import NO_DKIM
from tests.support.mail import report_json, report_mail
from tlsrpt_lmtp.config import ConfigError, load


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tlsrpt_lmtp", *args, *NO_DKIM],
        capture_output=True,
        text=True,
        timeout=60,
    )


def report_ids(stdout: str) -> list[str]:
    events = [json.loads(line) for line in stdout.splitlines()]
    return sorted(e["report_id"] for e in events if e["event"] == "tlsrpt.report")


def test_parse_reads_every_input_kind(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.json").write_bytes(report_json(rid="json"))
    (inputs / "b.json.gz").write_bytes(gzip.compress(report_json(rid="gz")))
    with zipfile.ZipFile(inputs / "c.zip", "w") as z:
        z.writestr("x!y!1!2.json", report_json(rid="zip"))
    (inputs / "d.eml").write_bytes(report_mail(rid="eml"))
    box = mailbox.mbox(tmp_path / "box.mbox")
    box.add(report_mail(rid="mbox1"))
    box.add(report_mail(rid="mbox2"))
    box.close()
    md = mailbox.Maildir(tmp_path / "Maildir")
    md.add(report_mail(rid="maildir"))
    md.close()
    out = run(
        "parse",
        "--data-dir",
        str(tmp_path / "data"),
        str(inputs),
        str(tmp_path / "box.mbox"),
        str(tmp_path / "Maildir"),
    )
    assert out.returncode == 0, out.stderr
    assert report_ids(out.stdout) == ["eml", "gz", "json", "maildir", "mbox1", "mbox2", "zip"]
    assert "7 messages, 7 reports (0 duplicates), 0 without a usable report" in out.stderr


def test_parse_twice_flags_duplicates(tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    f.write_bytes(report_json())
    run("parse", "--data-dir", str(tmp_path / "d"), str(f))
    out = run("parse", "--data-dir", str(tmp_path / "d"), str(f))
    [report] = [json.loads(line) for line in out.stdout.splitlines()]
    assert report["duplicate"] is True


def test_parse_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    out = run("parse", "--data-dir", str(tmp_path), str(tmp_path / "nope.eml"))
    assert out.returncode == 2 and "no such file" in out.stderr


def test_reprocess_quarantine(tmp_path: Path) -> None:
    f = tmp_path / "bad.eml"
    f.write_bytes(b"Subject: x\r\n\r\nno report here\r\n")
    run("parse", "--data-dir", str(tmp_path / "d"), str(f))
    out = run("reprocess", "--quarantine", "--data-dir", str(tmp_path / "d"), "--log-file", "-")
    assert out.returncode == 0
    [event] = [json.loads(line) for line in out.stdout.splitlines()]
    assert (event["event"], event["source"]) == ("tlsrpt.invalid", "reprocess")


def test_flags_win_over_file_which_wins_over_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[lmtp]\nlisten = "unix:/run/x.sock"\nrecipients = ["A@Example.org"]\n'
        '[storage]\ndata_dir = "/srv/tlsrpt"\n[log]\nformat = "syslog"\n'
    )
    c = load(cfg, {"listen": "127.0.0.1:2424", "data_dir": None})
    assert c.listen == "127.0.0.1:2424"
    assert c.recipients == ("a@example.org",)
    assert c.data_dir == Path("/srv/tlsrpt")
    assert c.log_format == "syslog"
    assert load(None, {}).max_decompressed == 32 * 1024 * 1024


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b'[lmtp]\nlisten = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="is not UTF-8"):
        load(cfg, {})
    out = subprocess.run(
        [sys.executable, "-m", "tlsrpt_lmtp", "summary", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "is not UTF-8" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[lmtp]\nlisten = 'nowhere'\n", "expected HOST:PORT"),
        ("[log]\nformat = 'xml'\n", "log format"),
        ("[nope]\nx = 1\n", "unknown section [nope]"),
        ("[lmtp\n", "not valid TOML"),
        ("[lmtp]\nmax_message_size = 'big'\n", "max_message_size: invalid value"),
    ],
)
def test_config_errors_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load(cfg, {})
