"""The summary's numbers: real samples and generated reports through the pipeline, checked
against totals computed independently from the report JSON."""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import idna
import pytest

from tests.support.views import (
    MX_A,
    MX_B,
    NOW,
    Doc,
    generated,
    ingest_all,
    raw,
    read_sample_reports,
    sample_files,
    summarise,
)
from tlsrpt_lmtp.core.model import MailMeta, Policy, Report
from tlsrpt_lmtp.store.dialect import SQLITE
from tlsrpt_lmtp.store.sqlite import SqliteReader, SqliteStore
from tlsrpt_lmtp.views import cli, query, sql
from tlsrpt_lmtp.views.indexes import ensure_indexes
from tlsrpt_lmtp.views.period import make_period

# --------------------------------------------------------------------------------------------
# real samples
# --------------------------------------------------------------------------------------------


class Expected:
    """Totals from the raw sample JSON, deduplicated on (organization, id, start, end), with
    the counting rule: per report and policy domain, the maximum over its policies."""

    def __init__(self) -> None:
        self.keys: set[tuple[str, ...]] = set()
        self.domains: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.orgs: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.types: Counter[tuple[str, str]] = Counter()

    def add(self, doc: Doc, header: str | None) -> None:
        org = doc.get("organization-name") or str(doc.get("contact-info", "")).partition("@")[2]
        dates = doc["date-range"]
        key = (org, str(doc["report-id"]), dates["start-datetime"], dates["end-datetime"])
        if key in self.keys:
            return
        self.keys.add(key)
        policies = doc.get("policies", [])
        # per domain: [max sessions, max failed], and per (result type, ip, mx): max sessions
        units: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        kinds: dict[tuple[str, str, str, str], int] = defaultdict(int)
        for entry in policies if isinstance(policies, list) else [policies]:
            policy, summary = entry.get("policy", {}), entry.get("summary", {})
            domain = (policy.get("policy-domain") or header or "").strip().rstrip(".").lower()
            domain = idna.encode(domain, uts46=True).decode() if not domain.isascii() else domain
            details = entry.get("failure-details") or []
            ok = int(summary.get("total-successful-session-count", 0))
            failed = summary.get("total-failure-session-count")
            if failed is None:
                failed = sum(int(d.get("failed-session-count", 0)) for d in details)
            unit = units[domain]
            unit[0] = max(unit[0], ok + int(failed))
            unit[1] = max(unit[1], int(failed))
            mine: Counter[tuple[str, str, str, str]] = Counter()
            for d in details:
                mx = d.get("receiving-mx-hostname") or d.get("receiving-ip") or ""
                where = (domain, d["result-type"], d.get("sending-mta-ip") or "", mx)
                mine[where] += int(d["failed-session-count"])
            for where, n in mine.items():
                kinds[where] = max(kinds[where], n)
        for domain, (sessions, failed) in units.items():
            for bucket in (self.domains[domain], self.orgs[org]):
                bucket[0] += sessions - failed
                bucket[1] += failed
        for (domain, result_type, _, _), n in kinds.items():
            self.types[(domain, result_type)] += n


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Expected]]:
    files = sample_files()
    if not files:
        pytest.skip("no real samples in ../shared/samples/real")
    data_dir = tmp_path_factory.mktemp("real")
    ingest_all(data_dir, [f.read_bytes() for f in files])
    expected = Expected()
    for f in files:
        for doc, header in read_sample_reports(f):
            expected.add(doc, header)
    yield data_dir, expected


def test_real_samples_totals_match_the_reports(real_store: tuple[Path, Expected]) -> None:
    data_dir, expected = real_store
    s = summarise(data_dir, top=0)
    assert s.totals.reports == len(expected.keys)  # duplicates among the samples counted once
    assert s.totals.successful == sum(v[0] for v in expected.domains.values())
    assert s.totals.failed == sum(v[1] for v in expected.domains.values())
    assert s.totals.organizations == len(expected.orgs)
    assert {d.domain: [d.successful, d.failed] for d in s.domains} == dict(expected.domains)
    types = Counter(
        {(d.domain, c.result_type): c.sessions for d in s.domains for c in d.result_types}
    )
    assert types == expected.types
    assert {o.organization: [o.successful, o.failed] for o in s.orgs} == dict(expected.orgs)


def test_real_samples_views_agree_with_each_other_and_the_store(
    real_store: tuple[Path, Expected],
) -> None:
    data_dir, _ = real_store
    s = summarise(data_dir, top=0)
    db = sqlite3.connect(data_dir / "tlsrpt.sqlite3")
    (n,) = db.execute("SELECT COUNT(*) FROM reports").fetchone()
    db.close()
    assert s.totals.reports == n == sum(o.reports for o in s.orgs)
    assert s.totals.successful == sum(o.successful for o in s.orgs)
    assert s.totals.failed == sum(o.failed for o in s.orgs) == sum(d.failed for d in s.domains)
    assert s.totals.successful == sum(p.successful for p in s.overall.points)
    assert s.totals.failed == sum(p.failed for p in s.overall.points)
    for d in s.domains:  # details and summary shown side by side, honestly
        detailed = sum(c.sessions for c in d.result_types)
        assert d.failed + d.over_detailed == detailed + d.unattributed
    failed_by_source = sum(x.failed for x in s.sources)
    assert failed_by_source == sum(c.sessions for d in s.domains for c in d.result_types)
    ranked = [d.success_rate for d in s.domains if d.success_rate is not None]
    assert ranked == sorted(ranked)


def test_real_samples_mismatches_are_shown(real_store: tuple[Path, Expected]) -> None:
    s = summarise(real_store[0], top=0)
    mail_ru = next(o for o in s.orgs if o.organization == "Mail.ru")
    assert (mail_ru.failed, mail_ru.over_detailed) == (1, 1)
    assert [x.failed for x in s.sources if x.organization == "Mail.ru"] == [2]
    no_details = [g for g in s.groups if g.domain == "xn--gpher-jua.test" and g.failed == 102]
    assert no_details and no_details[0].unattributed == 102


# --------------------------------------------------------------------------------------------
# generated reports
# --------------------------------------------------------------------------------------------


@pytest.fixture
def gen_store(tmp_path: Path) -> Path:
    docs = [raw(d) for d in generated()]
    ingest_all(tmp_path, [*docs, docs[1], docs[2]])  # two duplicates: stored once
    return tmp_path


def test_a_domain_under_two_policy_types_counts_the_maximum(gen_store: Path) -> None:
    """Microsoft reports example.com under sts (50 sessions) and tlsa (20): the domain had 50."""
    s = summarise(gen_store)
    com = next(d for d in s.domains if d.domain == "example.com")
    assert (com.reports, com.successful, com.failed) == (3, 900 + 950 + 40, 60)
    assert com.policies == ("sts/enforce", "tlsa")
    assert (com.unattributed, com.over_detailed) == (10, 0)
    assert [(c.result_type, c.sessions, c.reports) for c in com.result_types] == [
        ("certificate-expired", 40, 1),
        ("starttls-not-supported", 10, 1),
    ]
    ms = next(o for o in s.orgs if o.organization == "Microsoft Corporation")
    assert (ms.reports, ms.successful, ms.failed) == (1, 40, 10)
    assert s.totals.reports == 5 and s.totals.sessions == 1950 + 6 + 7
    # the policies keep their own numbers, for the reader who asks about tlsa alone
    own = {(g.domain, g.policy): (g.reports, g.successful, g.failed) for g in s.groups}
    assert own[("example.com", "sts/enforce")] == (3, 1890, 60)
    assert own[("example.com", "tlsa")] == (1, 20, 0)
    assert own[("example.org", "sts/testing")] == (1, 5, 1)


def test_generated_domains_worst_first(gen_store: Path) -> None:
    s = summarise(gen_store)
    assert [d.domain for d in s.domains] == ["example.org", "example.com"]  # 92.30% < 96.92%
    org = next(d for d in s.domains if d.domain == "example.org")
    assert (org.reports, org.successful, org.failed, org.over_detailed) == (2, 12, 1, 1)


def test_generated_sources(gen_store: Path) -> None:
    s = summarise(gen_store)
    assert [(x.organization, x.sending_ip, x.receiving_mx, x.failed) for x in s.sources] == [
        ("Google Inc.", "209.85.1.1", MX_A, 30),
        ("Google Inc.", "209.85.1.2", MX_A, 10),
        ("Microsoft Corporation", "40.1.1.1", MX_B, 10),
        ("Mail.ru", "", "", 2),
    ]
    google = next(o for o in s.orgs if o.organization == "Google Inc.")
    assert (google.reports, google.successful, google.failed, google.unattributed) == (
        3,
        1857,
        50,
        10,
    )
    assert (google.first.date(), google.last.date()) == (date(2026, 4, 1), date(2026, 5, 11))
    assert s.orgs[0].organization == "Google Inc."  # most failures first


def test_top_n_and_the_rest(gen_store: Path) -> None:
    s = summarise(gen_store, top=1)
    assert s.shown(s.domains) == s.domains[:1] and len(s.domains) == 2
    rest = s.rest(s.domains)
    assert (rest.count, rest.reports, rest.sessions, rest.failed) == (1, 3, 1950, 60)
    assert [x.failed for x in s.sources] == [30] and s.sources_rest.count == 3
    assert s.sources_rest.failed == 10 + 10 + 2
    assert [d.domain for d in s.daily] == ["example.org"]  # series only for the shown domains
    assert summarise(gen_store, top=0).sources_rest.count == 0


def test_drill_down_lists_the_reports_with_archive_ids(gen_store: Path) -> None:
    s = summarise(gen_store, domain="example.com")
    assert [(r.organization, r.start.date(), r.failed) for r in s.reports] == [
        ("Google Inc.", date(2026, 5, 11), 50),  # failing first, then newest
        ("Microsoft Corporation", date(2026, 5, 11), 10),
        ("Google Inc.", date(2026, 5, 10), 0),
    ]
    db = sqlite3.connect(gen_store / "tlsrpt.sqlite3")
    stored = {row[0] for row in db.execute("SELECT archive_id FROM messages")}
    db.close()
    assert {r.archive_id for r in s.reports} <= stored
    one = summarise(gen_store, domain="example.com", top=1)
    assert len(one.reports) == 1 and (one.reports_rest.count, one.reports_rest.failed) == (2, 10)


def test_period_selects_reports_by_their_start(gen_store: Path) -> None:
    may = make_period(since=None, date_from="2026-05-01", date_to="2026-05-11", now=NOW)
    s = summarise(gen_store, may)
    assert s.totals.reports == 3  # 10th, 11th (Google), 11th (Microsoft, ending on the 12th)
    assert {p.day for d in s.daily for p in d.points} == {date(2026, 5, 10), date(2026, 5, 11)}
    recent = make_period(since="9d", date_from=None, date_to=None, now=NOW)  # from 2026-05-11 12:00
    assert summarise(gen_store, recent).totals.reports == 1  # Mail.ru on the 12th
    one_day = make_period(since=None, date_from="2026-05-12", date_to="2026-05-12", now=NOW)
    assert [o.organization for o in summarise(gen_store, one_day).orgs] == ["Mail.ru"]


def test_domain_filter_counts_only_that_domains_policies(gen_store: Path) -> None:
    s = summarise(gen_store, domain="example.org")
    assert {g.domain for g in s.groups} == {d.domain for d in s.domains} == {"example.org"}
    assert s.totals.sessions == 6 + 7 and s.totals.reports == 2
    google = next(o for o in s.orgs if o.organization == "Google Inc.")
    assert (google.reports, google.sessions) == (1, 7)
    assert [x.organization for x in s.sources] == ["Mail.ru"]
    assert [d.domain for d in s.daily] == ["example.org"]


def test_daily_points(gen_store: Path) -> None:
    s = summarise(gen_store)
    series = {d.domain: d for d in s.daily}
    points = {p.day: (p.successful, p.failed, p.reports) for p in series["example.com"].points}
    assert points == {date(2026, 5, 10): (900, 0, 1), date(2026, 5, 11): (990, 60, 2)}
    overall = {p.day: (p.sessions, p.reports) for p in s.overall.points}
    assert overall[date(2026, 5, 11)] == (1050, 2) and overall[date(2026, 4, 1)] == (7, 1)


def test_empty_store_and_empty_period(tmp_path: Path) -> None:
    ingest_all(tmp_path, [])
    s = summarise(tmp_path)
    assert (s.totals.reports, s.domains, s.orgs, s.sources, s.daily) == (0, (), (), (), ())
    assert s.totals.success_rate is None and s.overall.points == ()


def test_a_count_of_2_63_minus_1_does_not_overflow(tmp_path: Path) -> None:
    """One hostile count plus any other report used to end every format in 'integer overflow'."""
    huge = 2**63 - 1
    db = SqliteStore(tmp_path / "tlsrpt.sqlite3")
    with db.transaction(durable=False) as c:
        for n, count in enumerate((huge, huge, 5)):
            policy = Policy("sts", "example.com", ("mode: enforce",), (), count, count, ())
            start = datetime(2026, 5, 10 + n, tzinfo=UTC)
            report = Report("Org", f"r{n}", start, start, None, (policy,), ())
            db.add_report(c, report, meta=MailMeta(), archive_id=f"a{n}", received_at="x")
    db.close()
    s = summarise(tmp_path)
    assert s.totals.failed == 2 * sql.CAP + 5 and s.totals.successful == 2 * sql.CAP + 5
    for fmt in ("text", "markdown", "json", "html"):
        assert cli.RENDERERS[fmt](s)


def test_a_short_period_is_found_through_the_index(gen_store: Path) -> None:
    """With the store's reports_start index, the period drives the query (no full scan)."""
    db = SqliteReader(sqlite3.connect(gen_store / "tlsrpt.sqlite3"))
    ensure_indexes(db.db)
    db.db.commit()
    params = {"start": "2026-05-12", "end": None, "domain": None}
    params["where"] = "r.date_range_start >= :start"
    params["plan"] = query._plan(db, params)
    assert params["plan"] == "index"  # 1 report of 5 in the period
    plans = []
    for statement in sql.statements(SQLITE).build:
        bound = query._bind(statement, params)
        if bound.startswith("CREATE TEMP TABLE") and " AS\n" in bound:
            select = bound.split(" AS\n", 1)[1]
            plans += [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {select}", params)]
        db.execute(bound, params)
    plan = " | ".join(plans)
    db.close()
    assert plan.count("USING INDEX reports_start") == 2, plan  # the failures and the units
    may = make_period(since=None, date_from="2026-05-12", date_to=None, now=NOW)
    assert summarise(gen_store, may).totals.reports == 1
    every = {**params, "start": "2026-01-01"}
    db = SqliteReader(sqlite3.connect(gen_store / "tlsrpt.sqlite3"))
    assert query._plan(db, every) == "scan"  # most reports: a scan beats the index
    db.close()
