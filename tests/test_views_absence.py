"""Absence and readiness findings with a fixed clock; as alerts (deduplicated) and in views;
and the digest mailed through a fake sendmail (multipart text + HTML)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.alerts import fake_sendmail, sent
from tlsrpt_lmtp.alerts import absence
from tlsrpt_lmtp.alerts.hook import build_hook
from tlsrpt_lmtp.alerts.state import AlertState
from tlsrpt_lmtp.cli import _parser
from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.core.model import FailureDetail, MailMeta, Policy, Report
from tlsrpt_lmtp.store.sqlite import SqliteStore
from tlsrpt_lmtp.views import digest, query, text
from tlsrpt_lmtp.views.cli import summarise
from tlsrpt_lmtp.views.period import Period

NOW = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def days(first: str, last: str) -> list[date]:
    a, b = date.fromisoformat(first), date.fromisoformat(last)
    return [a + DAY * i for i in range((b - a).days + 1)]


def policy(domain: str, mode: str = "enforce", failed: int = 0) -> Policy:
    details = (
        (FailureDetail("certificate-expired", "192.0.2.1", "mx", None, None, failed, None, None),)
        if failed
        else ()
    )
    return Policy("sts", domain, ("version: STSv1", f"mode: {mode}"), ("mx",), 100, failed, details)


def store(path: Path, plan: list[tuple[str, str, list[date], str, set[date]]]) -> Path:
    """plan: (organisation, domain, days, mode, days with a failure)."""
    db = SqliteStore(path / "tlsrpt.sqlite3")
    n = 0
    with db.transaction(durable=False) as c:
        for org, domain, when, mode, bad in plan:
            for day in when:
                start = datetime(day.year, day.month, day.day, tzinfo=UTC)
                p = policy(domain, mode, 3 if day in bad else 0)
                r = Report(org, f"{org}-{domain}-{day}", start, start + DAY, None, (p,), ())
                db.add_report(c, r, meta=MailMeta(), archive_id=f"{n:064x}", received_at="")
                n += 1
    db.close()
    return path


@pytest.fixture
def world(tmp_path: Path) -> Path:
    return store(
        tmp_path,
        [
            # a.example: Google stopped after 15 daily reports, Yahoo still reports
            ("Google", "a.example", days("2026-05-01", "2026-05-15"), "enforce", set()),
            ("Yahoo", "a.example", days("2026-05-01", "2026-05-19"), "enforce", set()),
            # b.example: its only reporter stopped: reporter and domain silent
            ("Google", "b.example", days("2026-05-10", "2026-05-14"), "enforce", set()),
            # c.example: four report days are not a habit (K=5): nothing
            ("Google", "c.example", days("2026-05-07", "2026-05-10"), "enforce", set()),
            # d.example: silent 3 days (last 16th: 17, 18, 19 missing): flagged; e: 2 days: not
            ("Yahoo", "d.example", days("2026-05-05", "2026-05-16"), "enforce", set()),
            ("Yahoo", "e.example", days("2026-05-05", "2026-05-17"), "enforce", set()),
            # f.example: testing for 31 days, no failure: ready; g: one failure: not ready
            ("Yahoo", "f.example", days("2026-04-19", "2026-05-19"), "testing", set()),
            ("Yahoo", "g.example", days("2026-04-19", "2026-05-19"), "testing", {date(2026, 5, 2)}),
            # h.example: testing for only 10 days: not yet
            ("Yahoo", "h.example", days("2026-05-10", "2026-05-19"), "testing", set()),
            # i.example: its policy went to mode none
            ("Yahoo", "i.example", days("2026-05-01", "2026-05-10"), "enforce", set()),
            ("Yahoo", "i.example", days("2026-05-11", "2026-05-19"), "none", set()),
        ],
    )


def findings(data_dir: Path, now: datetime = NOW) -> list[absence.Finding]:
    db = query.open_readonly(data_dir / "tlsrpt.sqlite3")
    try:
        return absence.find(db, now)
    finally:
        db.close()


def test_findings_with_a_fixed_clock(world: Path) -> None:
    found = {(f.kind, f.domain, f.organization) for f in findings(world)}
    assert found == {
        ("reporter-silent", "a.example", "Google"),
        ("reporter-silent", "b.example", "Google"),
        ("domain-silent", "b.example", None),
        ("reporter-silent", "d.example", "Yahoo"),
        ("domain-silent", "d.example", None),
        ("ready-for-enforce", "f.example", None),
        ("mode-none", "i.example", None),
    }
    first = findings(world)[0]
    assert first.severity == "warning" and first.since is not None
    silent_a = next(f for f in findings(world) if f.domain == "a.example")
    assert silent_a.since == date(2026, 5, 15) and "for 4 days" in silent_a.message


def test_findings_follow_the_clock(world: Path) -> None:
    earlier = {(f.kind, f.domain) for f in findings(world, datetime(2026, 5, 18, 12, tzinfo=UTC))}
    assert ("reporter-silent", "b.example") in earlier  # last the 14th: 15th to 17th missing
    assert ("reporter-silent", "a.example") not in earlier  # last the 15th: 2 days missing
    later = findings(world, datetime(2026, 10, 1, tzinfo=UTC))  # beyond the 45-day lookback
    assert later == []


def test_the_rule_is_pure() -> None:
    act = [absence.Activity("x.example", "Org", date(2026, 5, 10), 5)]
    ready = [absence.Readiness("y.example", "testing", date(2026, 4, 20), 30, 0, 0)]
    got = absence.evaluate(act, ready, NOW, absence.AbsenceConfig(), ignore=["y.example"])
    assert [(f.kind, f.domain) for f in got] == [("reporter-silent", "x.example")]
    strict = absence.AbsenceConfig(active_days=6)
    assert absence.evaluate(act, [], NOW, strict) == []


def test_findings_in_the_views(world: Path) -> None:
    db = query.open_readonly(world / "tlsrpt.sqlite3")
    try:
        s = summarise(db, Period(), None, now=NOW, top=20)
        one = summarise(db, Period(), "f.example", now=NOW, top=20)
    finally:
        db.close()
    out = text.render(s)
    assert "FINDINGS" in out and "WARNING reporter-silent: Google has sent no report" in out
    assert [f.kind for f in one.findings] == ["ready-for-enforce"]


def alerts_config(tmp_path: Path, script: Path) -> Path:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[alerts]\nsendmail = "{script}"\nmail_to = ["ops@example.org"]\n'
        'mail_min_severity = "info"\n'
    )
    return config


def test_findings_as_alerts_are_deduplicated(world: Path, tmp_path: Path) -> None:
    script = fake_sendmail(tmp_path / "bin")
    config = alerts_config(tmp_path, script)
    events: list[Event] = []
    found = findings(world)
    for later in (NOW, NOW + DAY / 4):  # the second run is within the repeat window
        hook = build_hook(config, world, events.append, clock=lambda at=later: at)
        try:
            got = absence.raise_alerts(hook, found, source="digest")
            assert hook.join(20)
        finally:
            hook.close()
        assert len(got) == (len(found) if later == NOW else 0)
    mails = sent(tmp_path / "bin")
    assert len(mails) == len(found)
    subjects = sorted(str(m["Subject"]) for _, m in mails)
    assert "[tlsrpt] WARNING a.example: reporter-silent" in subjects
    assert "[tlsrpt] INFO f.example: ready-for-enforce" in subjects


def run_digest(*argv: str) -> int:
    args: argparse.Namespace = _parser().parse_args(["digest", *argv])
    return digest.run(args, now=NOW)


def test_digest_through_sendmail_is_multipart_text_and_html(world: Path, tmp_path: Path) -> None:
    script = fake_sendmail(tmp_path / "bin")
    config = alerts_config(tmp_path, script)
    config.write_text(config.read_text() + 'mail_from = "tlsrpt@example.org"\n')
    assert (
        run_digest(
            "--config",
            str(config),
            "--data-dir",
            str(world),
            "--since",
            "7d",
            "--mail-to",
            "boss@example.org",
            "--no-alerts",
        )
        == 0
    )
    [(argv, msg)] = sent(tmp_path / "bin")
    assert argv == "-t\n-i\n" and msg["To"] == "boss@example.org"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    rich = msg.get_body(("html",))
    assert plain is not None and rich is not None
    body = plain.get_content()
    assert "TOP PROBLEMS" in body and "g.example" not in body.split("CHANGES")[0]
    assert "CHANGES SINCE THE PREVIOUS PERIOD" in body
    assert "c.example: no reports this period" in body  # its last report was on the 10th
    assert "reporter-silent" in body
    assert "<h2>Top problems</h2>" in rich.get_content()
    assert "failed sessions" in str(msg["Subject"])


def test_digest_changes_compare_with_the_period_before(tmp_path: Path) -> None:
    data = store(
        tmp_path,
        [
            (
                "Yahoo",
                "x.example",
                days("2026-05-14", "2026-05-19"),
                "enforce",
                {date(2026, 5, 15)},
            ),
            ("Yahoo", "y.example", days("2026-05-06", "2026-05-19"), "enforce", {date(2026, 5, 8)}),
        ],
    )
    db = query.open_readonly(data / "tlsrpt.sqlite3")
    try:
        d = digest.build(db, NOW, since="7d", top=10)
    finally:
        db.close()
    assert [(c.domain, c.kind) for c in d.changes] == [
        ("x.example", "new"),
        ("y.example", "recovered"),
    ]


def test_digest_prints_without_mail_to_and_sends_findings_as_alerts(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = fake_sendmail(tmp_path / "bin")
    config = alerts_config(tmp_path, script)
    assert run_digest("--config", str(config), "--data-dir", str(world)) == 0
    out, err = capsys.readouterr()
    assert out.startswith("TLS reporting digest") and "FINDINGS" in out
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert {e["rule"] for e in events} >= {"reporter-silent", "ready-for-enforce"}
    assert len(sent(tmp_path / "bin")) == len(events)


def test_digest_writes_the_alert_events_where_its_log_flags_say(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = fake_sendmail(tmp_path / "bin")
    config = alerts_config(tmp_path, script)
    log = tmp_path / "alerts.jsonl"
    argv = ("--config", str(config), "--data-dir", str(world), "--log-file", str(log))
    assert run_digest(*argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("TLS reporting digest") and not err
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert {e["rule"] for e in events} >= {"reporter-silent", "ready-for-enforce"}


def test_digest_bad_since_is_a_usage_error(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_digest("--data-dir", str(world), "--since", "99999999999w", "--no-alerts") == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_the_failure_rate_history_counts_by_the_same_rule(tmp_path: Path) -> None:
    """The failure-rate alert sees a domain's day as the views do: the maximum over its
    policies per report, not sts + tlsa; and a hostile count does not overflow it."""
    start = datetime(2026, 5, 10, tzinfo=UTC)
    sts = Policy("sts", "m.example", ("mode: enforce",), (), 40, 10, ())
    tlsa = Policy("tlsa", "m.example", (), (), 40, 10, ())
    ms = Report("Microsoft", "m1", start, start + DAY, None, (sts, tlsa), ())
    huge = Policy("sts", "m.example", ("mode: enforce",), (), 2**63 - 1, 2**63 - 1, ())
    hostile = Report("Evil", "e1", start, start + DAY, None, (huge,), ())
    db = SqliteStore(tmp_path / "tlsrpt.sqlite3")
    state = AlertState(tmp_path / "tlsrpt.sqlite3")
    try:
        assert state.history(ms).days[("m.example", start.date())] == (40, 10)  # not stored
        with db.transaction(durable=False) as c:
            for n, r in enumerate((ms, hostile)):
                db.add_report(c, r, meta=MailMeta(), archive_id=f"a{n}", received_at="")
        assert state.history(ms).days[("m.example", start.date())] == (40 + 10**12, 10 + 10**12)
    finally:
        state.close()
        db.close()


def test_findings_alert_only_for_the_operators_domains_and_within_the_cap(
    world: Path, tmp_path: Path
) -> None:
    script = fake_sendmail(tmp_path / "bin")
    config = alerts_config(tmp_path, script)
    config.write_text(
        config.read_text() + 'domains = ["a.example", "*.d.example", "d.example"]\n'
        "max_alerts_per_period = 2\n"
    )
    hook = build_hook(config, world, lambda _: None, clock=lambda: NOW)
    try:
        got = absence.raise_alerts(hook, findings(world), source="digest")
        assert hook.join(20)
    finally:
        hook.close()
    # three findings are about the operator's domains; the cap lets the first two through
    assert [(e.rule, e.domain) for e in got] == [
        ("domain-silent", "d.example"),
        ("reporter-silent", "a.example"),
    ]
