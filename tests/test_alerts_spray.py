"""Alerts that cannot be sprayed: a forged report about 150 made-up domains, counted through the
real delivery paths (webhook on 127.0.0.1, mail through a fake sendmail), [alerts] domains,
require_dkim_aligned, the per-report and per-period caps, and the sender's text in mail."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.support.alerts import Server, fake_sendmail, sent
from tests.support.events import plain
from tests.support.views import detail, raw, report, sts
from tlsrpt_lmtp.alerts.config import load_alerts
from tlsrpt_lmtp.alerts.guard import domain_matches
from tlsrpt_lmtp.config import ConfigError
from tlsrpt_lmtp.core.model import MailMeta
from tlsrpt_lmtp.core.report import parse_report
from tlsrpt_lmtp.ingest.dkim import DkimResult, DkimVerdict

SIGNED = DkimVerdict(DkimResult.PASS, "google.com", True)


def spray(n: int, *, rid: str, prefix: str = "made-up", org: str = "Google Inc.") -> bytes:
    """One report with a failing enforce policy for each of ``n`` made-up domains."""
    policies = [
        sts(f"{prefix}-{i}.example", ok=1000, failed=5, details=[detail("certificate-expired", 5)])
        for i in range(n)
    ]
    return raw(report(*policies, org=org, rid=rid))


def channels(server: Server, tmp_path: Path, rig_factory: Any, extra: str = "") -> Any:
    script = fake_sendmail(tmp_path / "bin")
    return rig_factory(
        f'webhook_url = "{server.url}"\nsendmail = "{script}"\n'
        f'mail_to = ["postmaster@example.org"]\n{extra}'
    )


def alerts(rig: Any) -> list[dict[str, Any]]:
    return rig.rec.named("tlsrpt.alert")


def test_a_150_domain_spray_sends_the_cap_and_one_summary(
    server: Server, tmp_path: Path, rig_factory: Any
) -> None:
    rig = channels(server, tmp_path, rig_factory)
    rig.pipeline.ingest(spray(150, rid="spray-1"), source="test")
    assert rig.hook.join(15)
    sent_alerts = alerts(rig)
    [summary] = [a for a in sent_alerts if a["rule"] == "alert-cap"]
    assert len(sent_alerts) == 10 + 1  # max_alerts_per_report (default 10) + the summary
    assert len(server.bodies) == 11 and len(sent(tmp_path / "bin")) == 11
    assert rig.undelivered() == []  # nothing dropped: the queue (100) was never full
    assert summary["held_count"] == 140 and summary["severity"] == "critical"
    assert summary["domain"] is None and len(summary["held_domains"]) == 20
    assert "140 alerts held back" in summary["message"]
    [held] = rig.rec.named("tlsrpt.alert_held")
    assert held["reasons"] == {"over-report-cap": 140}
    # a real alert right after the spray is delivered, by both channels
    rig.ingest("real.example.org")
    assert rig.hook.join(15)
    assert [a["domain"] for a in alerts(rig)][-1] == "real.example.org"
    assert len(server.bodies) == 12 and len(sent(tmp_path / "bin")) == 12


def test_the_period_cap_holds_a_flood_of_reports_with_one_summary(
    server: Server, tmp_path: Path, rig_factory: Any
) -> None:
    rig = channels(server, tmp_path, rig_factory, "max_alerts_per_period = 15\n")
    for i in range(4):
        rig.pipeline.ingest(spray(30, rid=f"flood-{i}", prefix=f"r{i}"), source="test")
    assert rig.hook.join(15)
    sent_alerts = alerts(rig)
    summaries = [a for a in sent_alerts if a["rule"] == "alert-cap"]
    # report 0: 10 + summary (report cap); report 1: 5 + summary (period cap reached);
    # reports 2 and 3: nothing sent, the period's summary is already out
    assert len(sent_alerts) - len(summaries) == 15 and len(summaries) == 2
    assert len(server.bodies) == 17 and len(sent(tmp_path / "bin")) == 17
    assert "per 1h for not DKIM-aligned reports" in summaries[1]["message"]
    held = rig.rec.named("tlsrpt.alert_held")
    assert [h["reasons"].get("over-period-cap", 0) for h in held] == [0, 25, 30, 30]
    assert held[0]["reasons"] == {"over-report-cap": 20}
    # a signed report has its own budget: the unsigned flood did not spend it
    signed = parse_report(spray(1, rid="signed", prefix="signed"))
    events = [plain(e) for e in rig.hook(signed, MailMeta(), "archive-key", dkim=SIGNED)]
    assert [e["domain"] for e in events if e["event"] == "tlsrpt.alert"] == ["signed-0.example"]


def test_only_our_domains_alert_and_the_others_are_flagged(
    server: Server, tmp_path: Path, rig_factory: Any
) -> None:
    rig = channels(server, tmp_path, rig_factory, 'domains = ["example.org", "*.example.org"]\n')
    names = ["example.org", "mx.example.org", "evil.example", "example.org.evil.test"]
    names.append("notexample.org")
    rig.ingest(*names)
    assert rig.hook.join(15)
    assert sorted(a["domain"] for a in alerts(rig)) == ["example.org", "mx.example.org"]
    assert len(server.bodies) == 2
    [held] = rig.rec.named("tlsrpt.alert_held")
    assert held["reasons"] == {"not-our-domain": 3}
    assert held["not_our_domains"] == ["evil.example", "example.org.evil.test", "notexample.org"]
    with sqlite3.connect(tmp_path / "0" / "data" / "tlsrpt.sqlite3") as db:
        stored = {r[0] for r in db.execute("SELECT policy_domain FROM policies")}
    assert stored == set(names)  # every policy is still stored


def test_require_dkim_aligned(server: Server, tmp_path: Path, rig_factory: Any) -> None:
    rig = channels(server, tmp_path, rig_factory, "require_dkim_aligned = true\n")
    rig.ingest("example.com")  # the pipeline gives no verdict: not DKIM-aligned
    unsigned = parse_report(spray(2, rid="unsigned"))
    forged = DkimVerdict(DkimResult.PASS, "attacker.example", False)
    events = [plain(e) for e in rig.hook(unsigned, MailMeta(), "k1", dkim=forged)]
    assert rig.hook.join(15)
    assert alerts(rig) == [] and events[0]["event"] == "tlsrpt.alert_held"
    assert events[0]["reasons"] == {"not-dkim-aligned": 2}
    assert events[0]["dkim_authentic"] is False
    signed = parse_report(spray(2, rid="signed"))
    events = [plain(e) for e in rig.hook(signed, MailMeta(), "k2", dkim=SIGNED)]
    assert rig.hook.join(15)
    assert {e["domain"] for e in events} == {"made-up-0.example", "made-up-1.example"}
    assert len(server.bodies) == 2


def test_the_senders_text_is_only_quoted_data_in_mail(tmp_path: Path, rig_factory: Any) -> None:
    script = fake_sendmail(tmp_path / "bin")
    rig = rig_factory(f'sendmail = "{script}"\nmail_to = ["postmaster@example.org"]')
    pitch = "URGENT call +1 555 0100\r\nBcc: victim@elsewhere.example"
    d = detail("certificate-not-trusted", 3, mx="mx1.example.com", reason=pitch)
    doc = report(sts("example.com", ok=1000, failed=3, details=[d]), org="Google \u001b[31mInc.")
    rig.pipeline.ingest(raw(doc), source="test")
    assert rig.hook.join(15)
    [(_, msg)] = sent(tmp_path / "bin")
    body = msg.get_content()
    first = body.splitlines()[0]
    assert "555" not in first and "URGENT" not in first  # not in the sentence
    assert '(as the report says): "URGENT call +1 555 0100 Bcc: victim@elsewhere.example"' in body
    assert 'Reported by (as the report says): "Google  [31mInc."' not in body  # ESC stripped
    assert "\u001b" not in body and msg["Bcc"] is None
    [event] = alerts(rig)
    assert event["failure_reason_codes"] == [
        "URGENT call +1 555 0100 Bcc: victim@elsewhere.example"
    ]


@pytest.mark.parametrize(
    ("domain", "matches"),
    [
        ("example.org", True),
        ("EXAMPLE.ORG.", True),
        ("mx.example.org", True),
        ("a.b.example.org", True),
        ("example.org.evil", False),
        ("notexample.org", False),
        ("example.com", False),
    ],
)
def test_domain_patterns(domain: str, matches: bool) -> None:
    assert domain_matches(domain, ("example.org", "*.example.org")) is matches
    assert domain_matches("example.org", ("*.example.org",)) is False


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('domains = ["*example.org"]', "domains takes names and"),
        ('domains = ["ex ample.org"]', "domains takes names and"),
        ("max_alerts_per_report = 0", "must be >= 1"),
        ("max_alerts_per_period = -1", "must be >= 1"),
        ("alert_period = 0", "alert_period must be positive"),
        ("require_dkim_aligned = 1", "require_dkim_aligned: invalid value"),
    ],
)
def test_config_errors(tmp_path: Path, table: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"[alerts]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_alerts(config)
