"""Renderers and the `summary` command: layout, escaping of report values, output files."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from html.parser import HTMLParser
from pathlib import Path

import cmarkgfm
import pytest

from tests.support.views import (
    EVIL_DOMAIN,
    EVIL_MX,
    EVIL_ORG,
    detail,
    evil_report,
    generated,
    ingest_all,
    parser,
    raw,
    report,
    run,
    sts,
    summarise,
)
from tlsrpt_lmtp.views import fmt, html, jsonout, markdown, text
from tlsrpt_lmtp.views.fmt import clean

# what no output may hold: C0 but LF, DEL, C1, Unicode separators, bidi controls
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    ingest_all(tmp_path, [*(raw(d) for d in generated()), evil_report()])
    return tmp_path


def test_text_fits_100_columns_and_has_no_control_characters(store: Path) -> None:
    out = text.render(summarise(store))
    assert max(len(line) for line in out.splitlines()) <= 100
    assert not CONTROL.search(out.replace("\n", "")) and "certificate-expired" in out
    assert "example.com" in out and "unattributed" in out
    assert re.search(
        r"^Google Inc\.\s+2\s+3\s+1,907\s+50\s+97\.37%\s+2026-04-01\.\.2026-05-11$", out, re.M
    )


def test_text_one_view(store: Path) -> None:
    out = text.render(summarise(store), views=("source",))
    assert "REPORTING ORGANISATIONS" in out and "POLICY DOMAINS" not in out


def test_text_top_n_ends_with_one_line_for_the_rest(store: Path) -> None:
    out = text.render(summarise(store, top=1))
    assert "… 2 more domains: 5 reports, 1,963 sessions, 61 failed (--top 0: all)" in out
    assert "… 3 more organisations:" in out and "… 4 more sources: 24 failed" in out


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
    assert clean(EVIL_ORG.split("\n")[0]) in text_content
    assert EVIL_DOMAIN in text_content and EVIL_MX in text_content
    assert not CONTROL.search(out.replace("\n", ""))


def test_markdown_makes_no_link_markup_or_html_in_cmark_gfm(store: Path) -> None:
    out = markdown.render(summarise(store))
    rendered = cmarkgfm.github_flavored_markdown_to_html(out)
    tags = set(re.findall(r"<([a-z0-9]+)", rendered))
    assert tags <= {
        "h1",
        "h2",
        "p",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "em",
        "strong",
        "code",
        "ul",
        "li",
    }, tags
    assert "<a " not in rendered and "href" not in rendered
    assert not CONTROL.search(out.replace("\n", ""))
    tables = [t.splitlines() for t in re.split(r"\n(?!\|)[^\n]*\n", out) if t.startswith("|")]
    assert len(tables) >= 3
    for rows in tables:  # an escaped pipe never adds a cell
        assert len({len(re.split(r"(?<!\\)\|", row)) for row in rows}) == 1, rows
    assert "| example.com | sts/enforce, tlsa | 3 | 1,950 | 60 | 96.92% |" in out


@pytest.mark.parametrize(
    "value",
    [
        "www.evil.example",
        "WWW.evil.example/path",
        "mallory@evil.example",
        "http://evil.example",
        "xmpp:mallory@evil.example",
        "mailto:mallory@evil.example",
        "a`b@c.example|x",
        "ftp://x.y",
    ],
)
def test_markdown_escaping_stops_every_autolink(value: str) -> None:
    rendered = cmarkgfm.github_flavored_markdown_to_html(f"| a |\n|---|\n| {markdown.esc(value)} |")
    assert "<a " not in rendered and "<td>" in rendered
    assert value.replace("&", "&amp;") in rendered.replace("\\|", "|")


def test_json_round_trips_the_numbers_and_keeps_a_labels(tmp_path: Path, store: Path) -> None:
    s = summarise(store)
    doc = json.loads(jsonout.render(s))
    assert doc["totals"]["sessions"] == s.totals.sessions
    assert [d["failed_sessions"] for d in doc["domains"]] == [d.failed for d in s.domains]
    evil = next(o for o in doc["organizations"] if o["organization_name"] == EVIL_ORG)
    assert evil["failed_sessions"] == 2
    assert any(x["receiving_mx"] == EVIL_MX for x in doc["sources"])
    assert doc["daily"][0]["days"][0]["date"].startswith("2026-")


def test_u_labels_in_views_a_labels_in_json(tmp_path: Path) -> None:
    ingest_all(tmp_path, [raw(report(sts("xn--bcher-kva.example", failed=1, ok=1)))])
    s = summarise(tmp_path)
    assert "bücher.example" in text.render(s) and "bücher.example" in html.render(s)
    assert "bücher.example" in markdown.render(s)
    assert "xn--bcher-kva.example" in jsonout.render(s) and "bücher" not in jsonout.render(s)
    assert fmt.u_label("xn--invalid-.example") == "xn--invalid-.example"


def test_control_characters_never_reach_any_output(tmp_path: Path) -> None:
    nasty = "Org\x07\x1b]52;c;ZXZpbA==\x07\x9b31m\u202eevil\u0085"
    ingest_all(
        tmp_path, [raw(report(sts(failed=1, ok=1, details=[detail(ip="192.0.2.1")]), org=nasty))]
    )
    s = summarise(tmp_path)
    for render in (text.render, markdown.render, html.render):
        out = render(s)
        assert not CONTROL.search(out.replace("\n", "")), render
        assert "Org?" in out
    assert not CONTROL.search(jsonout.render(s).replace("\n", ""))


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


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
    assert "POLICY DOMAINS" in capsys.readouterr().out


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


@pytest.mark.parametrize(
    "argv",
    [
        ("--to", "9999-12-31"),
        ("--since", "99999999999w"),
        ("--since", "99999999999999999999d"),
        ("--from", "0001-01-01T00:00:00+01:00"),
        ("--to", "9999-12-31T23:59:59-05:00"),
    ],
)
def test_cli_period_out_of_range_is_a_usage_error(
    store: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    assert run("--data-dir", str(store), *argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tlsrpt-lmtp: ") and "Traceback" not in err


def test_cli_output_into_a_fifo_writes_in_place(store: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    fifo = tmp_path / "out" / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert run("--data-dir", str(store), "--output", str(fifo)) == 0
    reader.join(30)
    assert b"POLICY DOMAINS" in got[0]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the FIFO, not a regular file
    assert os.listdir(tmp_path / "out") == ["pipe"]  # no temporary file left beside it


def test_cli_output_into_a_device_never_replaces_it(store: Path, tmp_path: Path) -> None:
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("creating a device node needs root (CAP_MKNOD)")
    assert run("--data-dir", str(store), "--output", str(device)) == 0
    assert stat.S_ISCHR(os.lstat(device).st_mode)


def test_cli_output_through_a_symlink_keeps_the_link(store: Path, tmp_path: Path) -> None:
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "stdout"
    link.symlink_to(target)
    assert run("--data-dir", str(store), "--output", str(link)) == 0
    assert link.is_symlink() and "POLICY DOMAINS" in target.read_text()


def test_cli_output_replaces_a_regular_file_atomically_keeping_its_mode(
    store: Path, tmp_path: Path
) -> None:
    target = tmp_path / "summary.txt"
    target.write_text("old")
    target.chmod(0o600)
    inode = target.stat().st_ino
    assert run("--data-dir", str(store), "--output", str(target)) == 0
    assert target.stat().st_ino != inode and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "POLICY DOMAINS" in target.read_text()


def test_cli_html_into_a_directory_writes_an_index_and_domain_pages(
    store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    out.mkdir()
    assert run("--data-dir", str(store), "--format", "html", "--output", str(out)) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "index.html" in names and "domain-example.com.html" in names
    assert len(names) == 1 + 3  # every listed domain; the hostile one under a hashed name
    assert all(re.fullmatch(r"domain-[a-z0-9.-]+\.html|index\.html", n) for n in names)
    index = (out / "index.html").read_text()
    assert 'href="domain-example.com.html"' in index
    page = (out / "domain-example.com.html").read_text()
    assert "Reports</h2>" in page and "Archive ID" in page
    assert run("--data-dir", str(store), "--format", "text", "--output", str(out)) == 2


def test_cli_top_must_be_a_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["summary", "--top", "-1"])
    assert "expected 0" in capsys.readouterr().err
