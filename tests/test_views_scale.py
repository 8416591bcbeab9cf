"""The views over a provider-sized store: 50,000 reports from 30 organisations about 5,000
policy domains over one year (bench/views_fill.py, stored through Store.add_report).

The expected numbers are recomputed here from the generated Report objects, in Python, with
the counting rule (per report and domain: the maximum over its policies). No timing is
asserted (bench/views_bench.py measures); sizes of the outputs are.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.views_fill import domain_name, fill, generate
from tlsrpt_lmtp.views import cli, html, jsonout, markdown, model, query, text
from tlsrpt_lmtp.views.period import Period

NOW = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
SIZE = {"reports": 50_000, "domains": 5_000, "orgs": 30, "days": 365}


class Expected:
    def __init__(self) -> None:
        self.domains: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # reports, ok, bad
        self.orgs: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.policy_sessions = 0
        for r in generate(SIZE["reports"], domains=SIZE["domains"], orgs=SIZE["orgs"]):
            units: dict[str, tuple[int, int]] = {}
            for p in r.policies:
                self.policy_sessions += (
                    p.total_successful_session_count + p.total_failure_session_count
                )
                sessions = p.total_successful_session_count + p.total_failure_session_count
                old = units.get(p.policy_domain or "", (0, 0))
                units[p.policy_domain or ""] = (
                    max(old[0], sessions),
                    max(old[1], p.total_failure_session_count),
                )
            for domain, (sessions, failed) in units.items():
                for bucket in (self.domains[domain], self.orgs[r.organization_name]):
                    bucket[0] += 1
                    bucket[1] += sessions - failed
                    bucket[2] += failed


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Expected]]:
    data_dir = tmp_path_factory.mktemp("provider")
    fill(data_dir / "tlsrpt.sqlite3", SIZE["reports"], domains=SIZE["domains"])
    yield data_dir, Expected()


def summarise(data_dir: Path, domain: str | None = None, top: int = 20) -> model.Summary:
    db = query.open_readonly(data_dir / "tlsrpt.sqlite3")
    try:
        return cli.summarise(db, Period(), domain, now=NOW, top=top)
    finally:
        db.close()


def test_totals_follow_the_counting_rule(big: tuple[Path, Expected]) -> None:
    data_dir, expected = big
    s = summarise(data_dir)
    assert s.totals.reports == SIZE["reports"]
    assert s.totals.domains == SIZE["domains"] == len(s.domains)
    assert s.totals.successful == sum(v[1] for v in expected.domains.values())
    assert s.totals.failed == sum(v[2] for v in expected.domains.values())
    assert s.totals.sessions < expected.policy_sessions  # Microsoft's tlsa copies not added
    assert {d.domain: [d.reports, d.successful, d.failed] for d in s.domains} == dict(
        expected.domains
    )
    assert {o.organization: [o.reports, o.successful, o.failed] for o in s.orgs} == dict(
        expected.orgs
    )


def test_worst_domains_first_then_one_line_for_the_rest(big: tuple[Path, Expected]) -> None:
    data_dir, expected = big
    s = summarise(data_dir)

    def rate(v: list[int]) -> float:
        return v[1] / (v[1] + v[2])

    worst = sorted(expected.domains.items(), key=lambda kv: (rate(kv[1]), -kv[1][2], kv[0]))
    assert [d.domain for d in s.shown(s.domains)] == [name for name, _ in worst[:20]]
    rest = s.rest(s.domains)
    assert rest.count == SIZE["domains"] - 20
    assert rest.sessions == s.totals.sessions - sum(d.sessions for d in s.shown(s.domains))
    out = text.render(s)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 100 and len(lines) < 250
    assert f"… {rest.count:,} more domains: {rest.reports:,} reports" in out
    assert len(markdown.render(s)) < 50_000


def test_html_stays_small_and_indexes_every_domain(big: tuple[Path, Expected]) -> None:
    s = summarise(data_dir := big[0])
    page = html.render(s)
    assert len(page.encode()) < 2_000_000
    index = page[page.index('<section id="index">') :]
    assert index.count("<tr>") == SIZE["domains"] + 1  # the header and one row per domain
    assert page.count("<svg") == 1 + 20  # all domains together, then the worst 20
    assert "bücher.test" in page  # U-labels for people
    assert len(summarise(data_dir, top=0).domains) == SIZE["domains"]


def test_json_lists_every_domain_with_a_labels(big: tuple[Path, Expected]) -> None:
    doc = json.loads(jsonout.render(summarise(big[0])))
    names = {d["policy_domain"] for d in doc["domains"]}
    assert len(names) == SIZE["domains"] and domain_name(0) in names
    assert len(doc["sources"]) == 20 and doc["sources_rest"]["count"] > 0


def test_drill_down_of_one_domain(big: tuple[Path, Expected]) -> None:
    data_dir, expected = big
    name = domain_name(0)  # reported by Microsoft under sts and tlsa, among others
    s = summarise(data_dir, domain=name, top=0)
    reports, ok, failed = expected.domains[name]
    assert (s.totals.reports, s.totals.successful, s.totals.failed) == (reports, ok, failed)
    assert len(s.reports) == reports and s.reports_rest.count == 0
    assert all(re.fullmatch(r"[0-9a-f]{64}", r.archive_id) for r in s.reports)
    assert {g.policy for g in s.groups} == {"sts/enforce", "tlsa"}
    assert sum(p.reports for p in s.daily[0].points) == reports
