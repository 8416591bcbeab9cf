"""Renderers and the `summary` command: layout, escaping of report values, output files."""

from __future__ import annotations

import argparse
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.test_views import NOW, generated, ingest_all, summarise
from tests.test_views_support import detail, raw, report, sts
from tlsrpt_lmtp.views import cli, html, jsonout, markdown, text

EVIL_ORG = "<script>alert(1)</script>|*bold*_x_ [l](http://evil.example/)\x1b[31mRED\nNL"
EVIL_DOMAIN = 'evil.example"><img src=x onerror=alert(2)>'
EVIL_MX = "<b>mx</b>|evil"
EVIL_TYPE = "<i>type</i>"


def evil_report() -> bytes:
    doc = report(
        sts(
            EVIL_DOMAIN,
            ok=1,
            failed=2,
            details=[detail(EVIL_TYPE, 2, ip="192.0.2.66", mx=EVIL_MX)],
        ),
        org=EVIL_ORG,
        day="2026-05-13",
    )
    return raw(doc)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    ingest_all(tmp_path, [*(raw(d) for d in generated()), evil_report()])
    return tmp_path


def test_text_fits_100_columns_and_has_no_control_characters(store: Path) -> None:
    out = text.render(summarise(store))
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "\x1b" not in out and "certificate-expired" in out
    assert "example.com" in out and "unattributed" in out
    assert re.search(
        r"^Google Inc\.\s+3\s+1,907\s+50\s+97\.37%\s+2026-04-01\.\.2026-05-11$", out, re.M
    )


def test_text_one_view(store: Path) -> None:
    out = text.render(summarise(store), views=("source",))
    assert "BY SENDING SOURCE" in out and "BY RESULT" not in out


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_self_contained_and_escapes_report_values(store: Path) -> None:
    out = html.render(summarise(store))
    parsed = Tags()
    parsed.feed(out)
    assert not {"script", "img", "b", "i", "link", "iframe", "object"} & set(parsed.tags)
    assert not [a for a, _ in parsed.attrs if a.startswith("on")]
    urls = re.findall(r"(?:https?:)?//[^\s\"'<)]+", out)
    assert set(urls) <= {"http://www.w3.org/2000/svg", "http://evil.example/"}
    assert "url(" not in out and "@import" not in out
    assert "default-src 'none'" in out
    text_content = "".join(parsed.text)
    assert EVIL_ORG.split("\n")[0].replace("\x1b", "") in text_content.replace("\x1b", "")
    assert EVIL_DOMAIN in text_content and EVIL_MX in text_content
    assert parsed.tags.count("svg") == len(summarise(store).daily)


def test_markdown_escapes_report_values(store: Path) -> None:
    out = markdown.render(summarise(store))
    for bad in ("<script>", "<img", "<b>", "](http:", "http://evil", "*bold*", "\x1b"):
        assert bad not in out
    tables = [t.splitlines() for t in re.split(r"\n(?!\|)[^\n]*\n", out) if t.startswith("|")]
    assert len(tables) >= 3
    for rows in tables:  # an escaped pipe never adds a cell
        assert len({len(re.split(r"(?<!\\)\|", row)) for row in rows}) == 1, rows
    assert "| example.com | sts/enforce | 3 | 1,950 | 60 | 96.92% |" in out


def test_json_round_trips_the_numbers(store: Path) -> None:
    s = summarise(store)
    doc = json.loads(jsonout.render(s))
    assert doc["totals"]["sessions"] == s.totals.sessions
    assert [g["failed_sessions"] for g in doc["by_result"]] == [g.failed for g in s.by_result]
    evil = next(o for o in doc["by_source"] if o["organization_name"] == EVIL_ORG)
    assert evil["sources"][0]["receiving_mx"] == EVIL_MX
    assert doc["daily"][0]["days"][0]["date"].startswith("2026-")


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path)
    common.add_argument("--data-dir", type=Path)
    p = argparse.ArgumentParser(prog="tlsrpt-lmtp")
    sub = p.add_subparsers(dest="command", required=True)
    cli.add_parser(sub, common)
    return p


def run(*argv: str) -> int:
    return cli.run(parser().parse_args(["summary", *argv]), now=NOW)


@pytest.mark.parametrize("fmt", ["text", "markdown", "json", "html"])
def test_cli_writes_each_format_to_a_file(store: Path, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"out.{fmt}"
    assert run("--data-dir", str(store), "--format", fmt, "--output", str(target)) == 0
    content = target.read_text(encoding="utf-8")
    assert "example.com" in content and "Google Inc." in content


def test_cli_period_domain_and_stdout(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--data-dir", str(store), "--format", "json", "--domain", "EXAMPLE.ORG.")
    assert run(*args, "--from", "2026-05-01", "--to", "2026-05-31") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["policy_domain"] == "example.org"
    assert doc["period"] == {"from": "2026-05-01T00:00:00Z", "to": "2026-06-01T00:00:00Z"}
    assert doc["totals"]["reports"] == 1 and doc["totals"]["sessions"] == 6


def test_cli_reads_data_dir_from_the_config_file(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\ndata_dir = "{store}"\n[alerts]\nmail_to = []\n')
    assert run("--config", str(config), "--since", "30d", "--view", "result") == 0
    assert "BY RESULT" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--since", "soon"), "duration"),
        (("--from", "2026-13-01"), "YYYY-MM-DD"),
        (("--from", "2026-05-02", "--to", "2026-05-01"), "ends before"),
    ],
)
def test_cli_bad_period(
    store: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    assert run("--data-dir", str(store), *argv) == 2
    assert message in capsys.readouterr().err


def test_cli_since_and_from_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["summary", "--since", "7d", "--from", "2026-01-01"])
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_cli_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--data-dir", str(tmp_path / "nothing")) == 2
    assert "no report store" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()  # a summary never creates a store
