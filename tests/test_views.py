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

from tests.test_views_support import (
    Doc,
    detail,
    other,
    raw,
    read_sample_reports,
    report,
    sample_files,
    sts,
)
from tlsrpt_lmtp.pipeline import Pipeline
from tlsrpt_lmtp.views import model, query
from tlsrpt_lmtp.views.period import Period, make_period

NOW = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)


def summarise(
    data_dir: Path, period: Period | None = None, domain: str | None = None
) -> model.Summary:
    db = query.open_readonly(data_dir / "tlsrpt.sqlite3")
    try:
        rows = query.fetch(db, period or Period(), domain)
    finally:
        db.close()
    return model.build(rows, period=period or Period(), domain=domain, now=NOW)


def ingest_all(data_dir: Path, docs: list[bytes]) -> None:
    pipeline = Pipeline.open(data_dir, lambda _: None)
    try:
        for data in docs:
            pipeline.ingest(data, source="test")
    finally:
        pipeline.close()


# --------------------------------------------------------------------------------------------
# real samples
# --------------------------------------------------------------------------------------------


class Expected:
    """Totals from the raw sample JSON, deduplicated on (organization, id, start, end)."""

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
        for entry in policies if isinstance(policies, list) else [policies]:
            policy, summary = entry.get("policy", {}), entry.get("summary", {})
            domain = (policy.get("policy-domain") or header or "").strip().rstrip(".").lower()
            domain = idna.encode(domain, uts46=True).decode() if not domain.isascii() else domain
            details = entry.get("failure-details") or []
            ok = int(summary.get("total-successful-session-count", 0))
            failed = summary.get("total-failure-session-count")
            if failed is None:
                failed = sum(int(d.get("failed-session-count", 0)) for d in details)
            for bucket in (self.domains[domain], self.orgs[org]):
                bucket[0] += ok
                bucket[1] += int(failed)
            for d in details:
                self.types[(domain, d["result-type"])] += int(d["failed-session-count"])


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
    s = summarise(data_dir)
    assert s.totals.reports == len(expected.keys)  # duplicates among the samples counted once
    assert s.totals.successful == sum(v[0] for v in expected.domains.values())
    assert s.totals.failed == sum(v[1] for v in expected.domains.values())
    assert s.totals.organizations == len(expected.orgs)
    per_domain: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for g in s.by_result:
        per_domain[g.domain][0] += g.successful
        per_domain[g.domain][1] += g.failed
    assert dict(per_domain) == dict(expected.domains)
    types = Counter(
        {(g.domain, c.result_type): c.sessions for g in s.by_result for c in g.result_types}
    )
    assert types == expected.types
    assert {o.organization: [o.successful, o.failed] for o in s.by_source} == dict(expected.orgs)


def test_real_samples_views_agree_with_each_other_and_the_store(
    real_store: tuple[Path, Expected],
) -> None:
    data_dir, _ = real_store
    s = summarise(data_dir)
    db = sqlite3.connect(data_dir / "tlsrpt.sqlite3")
    ok, failed, n = db.execute(
        "SELECT SUM(total_successful_session_count), SUM(total_failure_session_count), COUNT(*)"
        " FROM reports"
    ).fetchone()
    db.close()
    assert (s.totals.successful, s.totals.failed, s.totals.reports) == (ok, failed, n)
    assert sum(o.reports for o in s.by_source) == n
    assert sum(p.successful for d in s.daily for p in d.points) == ok
    assert sum(p.failed for d in s.daily for p in d.points) == failed
    for g in s.by_result:  # details and summary shown side by side, honestly
        detailed = sum(c.sessions for c in g.result_types)
        assert g.failed + g.over_detailed == detailed + g.unattributed
    for o in s.by_source:
        assert o.failed + o.over_detailed == sum(x.failed for x in o.sources) + o.unattributed
    ranked = [g.success_rate for g in s.by_result if g.success_rate is not None]
    assert ranked == sorted(ranked)


def test_real_samples_mismatches_are_shown(real_store: tuple[Path, Expected]) -> None:
    s = summarise(real_store[0])
    mail_ru = next(o for o in s.by_source if o.organization == "Mail.ru")
    assert (mail_ru.failed, mail_ru.over_detailed, mail_ru.sources[0].failed) == (1, 1, 2)
    no_details = [g for g in s.by_result if g.domain == "xn--gpher-jua.test" and g.failed == 102]
    assert no_details and no_details[0].unattributed == 102 and not no_details[0].result_types


# --------------------------------------------------------------------------------------------
# generated reports
# --------------------------------------------------------------------------------------------

MX_A, MX_B = "mx1.example.com", "mx2.example.com"


def generated() -> list[Doc]:
    return [
        # Google: example.com enforce, two days; one report with an expired MX certificate
        report(sts(ok=900, failed=0), org="Google Inc.", day="2026-05-10"),
        report(
            sts(
                ok=950,
                failed=50,
                details=[
                    detail("certificate-expired", 30, ip="209.85.1.1", mx=MX_A),
                    detail("certificate-expired", 10, ip="209.85.1.2", mx=MX_A),
                ],
            ),
            org="Google Inc.",
            day="2026-05-11",
        ),
        # Microsoft: sts + tlsa for example.com; starttls failures on MX_B; end at next 00:00
        report(
            sts(
                ok=40,
                failed=10,
                details=[detail("starttls-not-supported", 10, ip="40.1.1.1", mx=MX_B)],
            ),
            other("example.com", "tlsa", ok=20, failed=0),
            org="Microsoft Corporation",
            day="2026-05-11",
            end="2026-05-12T00:00:00Z",
        ),
        # Mail.ru: example.org testing; details add up to more than the summary
        report(
            sts(
                "example.org",
                mode="testing",
                ok=5,
                failed=1,
                details=[detail("sts-policy-fetch-error", 1, ip=None, mx=None)] * 2,
            ),
            org="Mail.ru",
            day="2026-05-12",
        ),
        # an old report, outside the May period
        report(other("example.org", ok=7), org="Google Inc.", day="2026-04-01"),
    ]


@pytest.fixture
def gen_store(tmp_path: Path) -> Path:
    docs = [raw(d) for d in generated()]
    ingest_all(tmp_path, [*docs, docs[1], docs[2]])  # two duplicates: stored once
    return tmp_path


def test_generated_by_result(gen_store: Path) -> None:
    s = summarise(gen_store)
    rows = {(g.domain, g.policy): g for g in s.by_result}
    assert set(rows) == {
        ("example.com", "sts/enforce"),
        ("example.com", "tlsa"),
        ("example.org", "sts/testing"),
        ("example.org", "no-policy-found"),
    }
    enforce = rows[("example.com", "sts/enforce")]
    assert (enforce.reports, enforce.successful, enforce.failed) == (3, 1890, 60)
    assert [(c.result_type, c.sessions, c.reports) for c in enforce.result_types] == [
        ("certificate-expired", 40, 1),
        ("starttls-not-supported", 10, 1),
    ]
    assert (enforce.unattributed, enforce.over_detailed) == (10, 0)
    testing = rows[("example.org", "sts/testing")]
    assert (testing.failed, testing.over_detailed, testing.unattributed) == (1, 1, 0)
    assert [g.policy for g in s.by_result][:2] == ["sts/testing", "sts/enforce"]  # worst first
    assert s.totals.reports == 5 and s.totals.sessions == 1890 + 60 + 20 + 6 + 7


def test_generated_by_source(gen_store: Path) -> None:
    s = summarise(gen_store)
    orgs = {o.organization: o for o in s.by_source}
    google = orgs["Google Inc."]
    assert (google.reports, google.successful, google.failed) == (3, 1857, 50)
    assert [(x.sending_ip, x.receiving_mx, x.failed) for x in google.sources] == [
        ("209.85.1.1", MX_A, 30),
        ("209.85.1.2", MX_A, 10),
    ]
    assert google.unattributed == 10
    assert (google.first.date(), google.last.date()) == (date(2026, 4, 1), date(2026, 5, 11))
    ms = orgs["Microsoft Corporation"]
    assert [
        (x.sending_ip, x.receiving_mx, [c.result_type for c in x.result_types]) for x in ms.sources
    ] == [("40.1.1.1", MX_B, ["starttls-not-supported"])]
    assert next(o.organization for o in s.by_source) == "Google Inc."  # most failures first


def test_period_selects_reports_by_their_start(gen_store: Path) -> None:
    may = make_period(since=None, date_from="2026-05-01", date_to="2026-05-11", now=NOW)
    s = summarise(gen_store, may)
    assert s.totals.reports == 3  # 10th, 11th (Google), 11th (Microsoft, ending on the 12th)
    assert {p.day for d in s.daily for p in d.points} == {date(2026, 5, 10), date(2026, 5, 11)}
    recent = make_period(since="9d", date_from=None, date_to=None, now=NOW)  # from 2026-05-11 12:00
    assert summarise(gen_store, recent).totals.reports == 1  # Mail.ru on the 12th
    one_day = make_period(since=None, date_from="2026-05-12", date_to="2026-05-12", now=NOW)
    assert [o.organization for o in summarise(gen_store, one_day).by_source] == ["Mail.ru"]


def test_domain_filter_counts_only_that_domains_policies(gen_store: Path) -> None:
    s = summarise(gen_store, domain="example.org")
    assert {g.domain for g in s.by_result} == {"example.org"}
    assert s.totals.sessions == 6 + 7 and s.totals.reports == 2
    google = next(o for o in s.by_source if o.organization == "Google Inc.")
    assert (google.reports, google.sessions, google.sources) == (1, 7, ())
    assert [d.domain for d in s.daily] == ["example.org"]


def test_daily_points(gen_store: Path) -> None:
    s = summarise(gen_store)
    series = {d.domain: d for d in s.daily}
    points = {p.day: (p.successful, p.failed, p.reports) for p in series["example.com"].points}
    assert points == {date(2026, 5, 10): (900, 0, 1), date(2026, 5, 11): (1010, 60, 2)}


def test_empty_store_and_empty_period(tmp_path: Path) -> None:
    ingest_all(tmp_path, [])
    s = summarise(tmp_path)
    assert (s.totals.reports, s.by_result, s.by_source, s.daily) == (0, (), (), ())
    assert s.totals.success_rate is None
