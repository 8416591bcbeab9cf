"""The HTML summary in a real headless Chromium: it renders, loads nothing, and the numbers in
its DOM are the store's (read here with SQL of its own, not through the views)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.support.views import (
    EVIL_DOMAIN,
    evil_report,
    generated,
    ingest_all,
    raw,
    run,
    sample_files,
)
from tlsrpt_lmtp.views.fmt import clean

CHROMIUM = next(
    (p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or os.geteuid() != 0,
    reason="needs Debian's chromium and root (run scripts/install-views-deps.sh as root)"
    if CHROMIUM is None
    else "Chromium runs with --no-sandbox only as root here",
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / "profile"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


class Cells(HTMLParser):
    """Rows of the two tables as (row class, row data-* attributes, {data-k: text})."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.totals: dict[str, str] = {}
        self.tags: list[str] = []
        self._key: str | None = None
        self._in_total = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = {k: v or "" for k, v in attrs}
        if tag == "tr":
            data = {k: v for k, v in a.items() if k.startswith("data-")}
            self.rows.append((a.get("class", ""), data, {}))
        self._key = a.get("data-k")
        self._in_total = tag == "dd"

    def handle_data(self, data: str) -> None:
        if self._key is None:
            return
        if self._in_total:
            self.totals[self._key] = self.totals.get(self._key, "") + data
        elif self.rows:
            cells = self.rows[-1][2]
            cells[self._key] = cells.get(self._key, "") + data

    def handle_endtag(self, tag: str) -> None:
        self._key = None


def number(text: str) -> int:
    return int(text.replace(",", "").strip())


@pytest.fixture
def page(tmp_path: Path) -> tuple[Path, Path]:
    data_dir = tmp_path / "data"
    docs = [f.read_bytes() for f in sample_files()]
    ingest_all(data_dir, [*docs, *(raw(d) for d in generated()), evil_report()])
    out = tmp_path / "site"
    out.mkdir()
    argv = ("--data-dir", str(data_dir), "--format", "html", "--top", "0", "--output", str(out))
    assert run(*argv) == 0
    return data_dir, out / "index.html"


def dump(tmp_path: Path, html_file: Path) -> Cells:
    done = chromium(tmp_path, "--dump-dom", html_file.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = Cells()
    dom.feed(done.stdout)
    assert not {"script", "img", "iframe"} & set(dom.tags)  # report text stayed text
    return dom


# the counting rule, in this test's own SQL: per report and domain, the maximum over policies
_UNITS = """SELECT p.report AS report, COALESCE(p.policy_domain, '') AS domain,
    MAX(p.total_successful_session_count + p.total_failure_session_count) AS sessions,
    MAX(p.total_failure_session_count) AS failed FROM policies AS p GROUP BY 1, 2"""


def test_overview_renders_in_chromium_with_the_stores_numbers(
    page: tuple[Path, Path], tmp_path: Path
) -> None:
    data_dir, html_file = page
    dom = dump(tmp_path, html_file)
    assert "svg" in dom.tags and "circle" in dom.tags and "a" in dom.tags

    db = sqlite3.connect(data_dir / "tlsrpt.sqlite3")
    (reports,) = db.execute("SELECT COUNT(*) FROM reports").fetchone()
    sessions, failed = db.execute(f"SELECT SUM(sessions), SUM(failed) FROM ({_UNITS})").fetchone()
    per_domain = {
        d: (s - f, f)
        for d, s, f in db.execute(
            f"SELECT domain, SUM(sessions), SUM(failed) FROM ({_UNITS}) GROUP BY domain"
        )
    }
    per_org = {
        clean(o): (n, s, f)
        for o, n, s, f in db.execute(
            f"SELECT r.organization_name, COUNT(DISTINCT r.id), SUM(u.sessions), SUM(u.failed)"
            f" FROM ({_UNITS}) AS u JOIN reports AS r ON r.id = u.report"
            " GROUP BY r.organization_name"
        )
    }
    db.close()

    assert number(dom.totals["reports"]) == reports
    assert number(dom.totals["sessions"]) == sessions
    assert number(dom.totals["failed"]) == failed
    shown = {
        data["data-domain"]: (
            number(cells["sessions"]) - number(cells["failed"]),
            number(cells["failed"]),
        )
        for cls, data, cells in dom.rows
        if cls == "group"
    }
    assert shown == per_domain
    orgs = {
        data["data-org"]: (number(c["reports"]), number(c["sessions"]), number(c["failed"]))
        for cls, data, c in dom.rows
        if cls == "org"
    }
    assert orgs == per_org
    assert any(o.startswith("<script>alert(1)</script>|*bold*") for o in orgs)
    assert EVIL_DOMAIN in shown


def test_drill_down_page_in_chromium_lists_the_domains_reports(
    page: tuple[Path, Path], tmp_path: Path
) -> None:
    data_dir, html_file = page
    dom = dump(tmp_path, html_file.parent / "domain-example.com.html")
    db = sqlite3.connect(data_dir / "tlsrpt.sqlite3")
    stored = sorted(
        (f, archive)
        for archive, f in db.execute(
            f"SELECT r.archive_id, u.failed FROM ({_UNITS}) AS u"
            " JOIN reports AS r ON r.id = u.report WHERE u.domain = 'example.com'"
        )
    )
    db.close()
    rows = [(number(c["failed"]), c["archive"]) for cls, _, c in dom.rows if cls == "report"]
    assert sorted(rows) == stored
    policies = {data["data-policy"] for cls, data, _ in dom.rows if "data-policy" in data}
    assert {"sts/enforce", "tlsa"} <= policies  # Microsoft's tlsa next to the sts policy


def test_html_screenshot(page: tuple[Path, Path], tmp_path: Path) -> None:
    png = tmp_path / "summary.png"
    done = chromium(
        tmp_path,
        "--hide-scrollbars",
        "--window-size=1200,1600",
        f"--screenshot={png}",
        page[1].as_uri(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 1600)
    assert len(data) > 20_000  # a page with tables and charts, not a blank one
