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

from tests.test_views import generated, ingest_all
from tests.test_views_render import EVIL_DOMAIN, evil_report, run
from tests.test_views_support import raw, sample_files

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
    out = tmp_path / "summary.html"
    assert run("--data-dir", str(data_dir), "--format", "html", "--output", str(out)) == 0
    return data_dir, out


def test_html_renders_in_chromium_with_the_stores_numbers(
    page: tuple[Path, Path], tmp_path: Path
) -> None:
    data_dir, html_file = page
    done = chromium(tmp_path, "--dump-dom", html_file.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = Cells()
    dom.feed(done.stdout)
    assert "svg" in dom.tags and "circle" in dom.tags
    assert not {"script", "img", "iframe"} & set(dom.tags)  # report text stayed text

    db = sqlite3.connect(data_dir / "tlsrpt.sqlite3")
    ok, failed, reports = db.execute(
        "SELECT SUM(total_successful_session_count), SUM(total_failure_session_count), COUNT(*)"
        " FROM reports"
    ).fetchone()
    per_domain = {
        d or "": (s, f)
        for d, s, f in db.execute(
            "SELECT policy_domain, SUM(total_successful_session_count),"
            " SUM(total_failure_session_count) FROM policies GROUP BY policy_domain"
        )
    }
    per_org = {
        o: (n, s + f, f)
        for o, n, s, f in db.execute(
            "SELECT organization_name, COUNT(*), SUM(total_successful_session_count),"
            " SUM(total_failure_session_count) FROM reports GROUP BY organization_name"
        )
    }
    db.close()

    assert number(dom.totals["reports"]) == reports
    assert number(dom.totals["sessions"]) == ok + failed
    assert number(dom.totals["failed"]) == failed
    shown: dict[str, list[int]] = {}
    for cls, data, cells in dom.rows:
        if cls == "group":
            total = shown.setdefault(data["data-domain"], [0, 0])
            total[0] += number(cells["sessions"]) - number(cells["failed"])
            total[1] += number(cells["failed"])
    assert {d: tuple(v) for d, v in shown.items()} == per_domain
    orgs = {
        data["data-org"]: (number(c["reports"]), number(c["sessions"]), number(c["failed"]))
        for cls, data, c in dom.rows
        if cls == "org"
    }
    assert orgs == per_org
    assert any(o.startswith("<script>alert(1)</script>|*bold*") for o in orgs)
    assert EVIL_DOMAIN in shown


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
