"""Alert rules (pure), the [alerts] config, the repeat window and the hook in the pipeline."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.events import Recorder
from tests.support.views import detail, other, raw, report, sts
from tlsrpt_lmtp.alerts.config import ACTIONABLE, AlertsConfig, load_alerts, parse_alerts
from tlsrpt_lmtp.alerts.hook import AlertHook, build_hook
from tlsrpt_lmtp.alerts.rules import Alert, History, evaluate
from tlsrpt_lmtp.alerts.state import LastSent, should_send
from tlsrpt_lmtp.config import ConfigError, load
from tlsrpt_lmtp.core.report import parse_report
from tlsrpt_lmtp.ingest.pipeline import Pipeline

T0 = datetime(2026, 5, 12, 8, 0, tzinfo=UTC)
DAY = date(2026, 5, 10)


def run_rules(doc: dict[str, Any], history: History | None = None, **cfg: Any) -> list[Alert]:
    return evaluate(parse_report(raw(doc)), history or History(), AlertsConfig(**cfg))


def by_cause(alerts: list[Alert]) -> dict[tuple[str, str], Alert]:
    return {(a.domain, a.cause): a for a in alerts}


# --------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------


def test_enforce_failure_is_critical_and_names_the_mx() -> None:
    doc = report(
        sts(ok=90, failed=3, details=[detail("certificate-expired", 3, mx="mx1.example.com")])
    )
    [alert] = run_rules(doc, History(seen={"example.com": frozenset({"certificate-expired"})}))
    assert (alert.severity, alert.rule, alert.domain, alert.result_type) == (
        "critical",
        "enforce-failure",
        "example.com",
        "certificate-expired",
    )
    assert alert.rules == ("enforce-failure", "result-type")
    assert "mode enforce" in alert.message and "MX mx1.example.com has expired" in alert.message
    assert alert.failed_session_count == 3 and alert.receiving_mx == ("mx1.example.com",)


def test_enforce_failure_without_details_is_unattributed() -> None:
    [alert] = run_rules(report(sts(ok=5, failed=2)))
    assert (alert.severity, alert.result_type, alert.cause) == ("critical", None, "unattributed")
    assert "without failure details" in alert.message


def test_testing_mode_alerts_only_on_actionable_or_new_types() -> None:
    seen = History(
        seen={"example.com": frozenset({"validation-failure", "starttls-not-supported"})}
    )
    quiet = report(sts(mode="testing", ok=9, failed=1, details=[detail("validation-failure", 1)]))
    assert run_rules(quiet, seen) == []
    loud = report(
        sts(
            mode="testing",
            ok=9,
            failed=1,
            details=[detail("starttls-not-supported", 1, mx="mx9.example.com")],
        )
    )
    [alert] = run_rules(loud, seen)
    assert (alert.severity, alert.rule) == ("warning", "result-type")
    assert (
        "mode testing" in alert.message
        and "MX mx9.example.com did not offer STARTTLS" in alert.message
    )


def test_new_result_type_for_a_domain() -> None:
    doc = report(sts(mode="testing", ok=9, failed=1, details=[detail("validation-failure", 1)]))
    [alert] = run_rules(doc, History(seen={"example.com": frozenset({"certificate-expired"})}))
    assert (alert.rule, alert.severity, alert.result_type) == (
        "new-result-type",
        "warning",
        "validation-failure",
    )
    assert "never reported for example.com before" in alert.message
    other_domain = History(seen={"example.net": frozenset({"validation-failure"})})
    assert [a.rule for a in run_rules(doc, other_domain)] == ["new-result-type"]


def test_failure_rate_per_domain_and_day() -> None:
    doc = report(
        sts(mode="testing", ok=80, failed=20, details=[detail("validation-failure", 20)]),
        day="2026-05-10",
    )
    seen = {"example.com": frozenset({"validation-failure"})}
    high = History(seen=seen, days={("example.com", DAY): (900, 100)})  # 10% of 1000
    [alert] = run_rules(doc, high)
    assert (alert.rule, alert.cause, alert.severity) == ("failure-rate", "failure-rate", "warning")
    assert "100 of 1000 sessions on 2026-05-10 failed (10.0%" in alert.message
    assert run_rules(doc, History(seen=seen, days={("example.com", DAY): (960, 40)})) == []  # 4%
    few = History(seen=seen, days={("example.com", DAY): (3, 2)})  # 40%, but only 5 sessions
    assert run_rules(doc, few) == []
    assert run_rules(doc, few, failure_rate_min_sessions=5)[0].rule == "failure-rate"
    assert run_rules(doc, high, failure_rate=0.2) == []


def test_rules_can_be_switched_off_and_domains_ignored() -> None:
    doc = report(sts(ok=1, failed=1, details=[detail("certificate-expired", 1)]))
    assert run_rules(doc, rules=()) == []
    assert run_rules(doc, ignore_domains=("example.com",)) == []
    assert [a.rule for a in run_rules(doc, rules=("new-result-type",))] == ["new-result-type"]


def test_sts_and_tlsa_of_one_report_merge_into_one_alert_per_cause() -> None:
    tlsa = other("example.com", "tlsa", ok=1, failed=4)
    tlsa["failure-details"] = [detail("certificate-expired", 4, mx="mx2.example.com")]
    doc = report(sts(ok=1, failed=2, details=[detail("certificate-expired", 2)]), tlsa)
    [alert] = run_rules(doc)
    assert (alert.severity, alert.failed_session_count) == ("critical", 6)
    assert alert.receiving_mx == ("mx1.example.com", "mx2.example.com")


@pytest.mark.parametrize(
    ("result_type", "expected"),
    [
        ("sts-policy-fetch-error", "https://mta-sts.example.com/.well-known/mta-sts.txt"),
        ("sts-webpki-invalid", "certificate of the policy host mta-sts.example.com"),
        ("sts-policy-invalid", "does not parse"),
        ("certificate-expired", "certificate of MX mx7.example.com has expired"),
        ("certificate-host-mismatch", "MX mx7.example.com does not carry that host name"),
        ("certificate-not-trusted", "MX mx7.example.com is not trusted"),
        ("starttls-not-supported", "MX mx7.example.com did not offer STARTTLS"),
        ("tlsa-invalid", "TLSA records of MX mx7.example.com do not match"),
        ("dnssec-invalid", "DNSSEC validation failed for example.com"),
        ("dane-required", "no DNSSEC-validated TLSA records for MX mx7.example.com"),
        ("validation-failure", "could not validate the certificate of MX mx7.example.com"),
        ("brand-new-type", "Senders reported brand-new-type for MX mx7.example.com"),
    ],
)
def test_each_result_type_has_its_own_advice(result_type: str, expected: str) -> None:
    d = detail(result_type, 2, mx="mx7.example.com", reason="X509_V_ERR\r\nBcc: victim@evil")
    [alert] = run_rules(report(sts(ok=8, failed=2, details=[d])))
    assert expected in alert.message
    assert alert.result_type == result_type
    assert "\n" not in alert.message and "\r" not in alert.message  # report text is one line
    assert "X509" not in alert.message and "Bcc" not in alert.message  # free text: not quoted
    assert alert.reasons == ("X509_V_ERR Bcc: victim@evil",)  # kept as data, one line


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


def test_config_defaults_without_file_or_section(tmp_path: Path) -> None:
    assert load_alerts(None) == AlertsConfig()
    path = tmp_path / "c.toml"
    path.write_text('[lmtp]\nlisten = "127.0.0.1:2525"\n')
    config = load_alerts(path)
    assert config.enabled and config.repeat_window == timedelta(hours=24)
    assert set(ACTIONABLE) == set(config.result_types) and config.mail_to == ()


def test_config_full_table(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[storage]\ndata_dir = '/tmp/x'\n"
        "[alerts]\n"
        'rules = ["enforce-failure", "failure-rate"]\n'
        'repeat_window = "6h"\n'
        "failure_rate = 0.1\nfailure_rate_min_sessions = 50\n"
        'result_types = ["Certificate-Expired"]\nignore_domains = ["Test.Example."]\n'
        'webhook_url = "http://127.0.0.1:9/hook"\n'
        'webhook_headers = { Authorization = "Bearer x" }\n'
        "webhook_timeout = 2\nwebhook_retries = 5\nwebhook_backoff = 0.5\n"
        'webhook_min_severity = "critical"\nqueue_size = 10\n'
        'mail_to = ["postmaster@example.org"]\nmail_from = "tlsrpt@example.org"\n'
        'sendmail = "/usr/lib/sendmail"\nmail_timeout = 5\nmail_min_severity = "warning"\n'
        "enabled = true\n"
    )
    c = load_alerts(path)
    assert c.rules == ("enforce-failure", "failure-rate") and c.repeat_window == timedelta(hours=6)
    assert (c.failure_rate, c.failure_rate_min_sessions) == (0.1, 50)
    assert c.result_types == ("certificate-expired",) and c.ignore_domains == ("test.example",)
    assert c.webhook_headers == (("Authorization", "Bearer x"),) and c.webhook_timeout == 2.0
    assert c.mail_to == ("postmaster@example.org",) and c.sendmail == "/usr/lib/sendmail"
    assert load(path, {}).data_dir == Path("/tmp/x")  # the main loader skips [alerts]
    assert parse_alerts({"repeat_window": 90}).repeat_window == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("webhok_url = 'http://x'", "unknown key 'webhok_url'"),
        ("failure_rate = 5", "share between 0 and 1"),
        ("failure_rate = 'high'", "failure_rate: invalid value"),
        ("queue_size = 1.5", "queue_size: invalid value"),
        ("enabled = 'yes'", "enabled: invalid value"),
        ("rules = ['everything']", "unknown rule 'everything'"),
        ("repeat_window = 'soon'", "repeat_window: invalid value"),
        ("webhook_url = 'ftp://x'", "http:// or https://"),
        ("mail_to = ['a@b.example, c@d.example']", "plain addresses"),
        ("mail_min_severity = 'loud'", "must be one of"),
        ('webhook_headers = { X = "a\\r\\nB: c" }', "line breaks"),
    ],
)
def test_config_errors_are_clear(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[alerts]\n{table}\n")
    with pytest.raises(ConfigError, match="alerts") as exc:
        load_alerts(path)
    assert message in str(exc.value) and str(path) in str(exc.value)


# --------------------------------------------------------------------------------------------
# repeat window and the hook in the pipeline
# --------------------------------------------------------------------------------------------


def test_should_send() -> None:
    hour = timedelta(hours=1)
    assert should_send(None, "warning", T0, hour)
    sent = LastSent("warning", T0, 0)
    assert not should_send(sent, "warning", T0 + 59 * timedelta(minutes=1), hour)
    assert should_send(sent, "warning", T0 + hour, hour)
    assert should_send(sent, "critical", T0 + timedelta(minutes=1), hour)  # escalation
    assert not should_send(LastSent("critical", T0, 0), "warning", T0 + timedelta(minutes=1), hour)


def test_should_send_when_the_last_one_is_stamped_after_now() -> None:
    """Nodes sharing a store take `now` before waiting for the alert lock: the alert another
    node sent while this one waited is stamped a moment after this one's `now`. That is a
    repeat, not a clock gone backwards (only a window or more in the future is)."""
    hour = timedelta(hours=1)
    sent_meanwhile = LastSent("warning", T0 + timedelta(milliseconds=30), 0)
    assert not should_send(sent_meanwhile, "warning", T0, hour)
    assert should_send(sent_meanwhile, "critical", T0, hour)  # escalation still goes out
    assert should_send(LastSent("warning", T0 + hour, 0), "warning", T0, hour)  # clock was off


def test_two_nodes_claiming_one_alert_send_it_once(tmp_path: Path) -> None:
    """The race of tests/test_store_nodes.py, in order: node B took `now` first, node A
    claimed first; B's claim must be a repeat."""
    from tlsrpt_lmtp.alerts.state import HELD_REPEAT, AlertState
    from tlsrpt_lmtp.store import open_store

    doc = report(sts(ok=90, failed=3, details=[detail("certificate-expired", 3)]))
    [one] = run_rules(doc, History(seen={"example.com": frozenset({"certificate-expired"})}))
    store = open_store(tmp_path / "data")
    try:
        node_a, node_b = AlertState(store), AlertState(store)
        hour = timedelta(hours=1)
        assert node_a.claim_within(one, T0 + timedelta(milliseconds=30), hour, None) == 0
        assert node_b.claim_within(one, T0, hour, None) == HELD_REPEAT
    finally:
        store.close()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def setup(tmp_path: Path, clock: Clock) -> Iterator[tuple[Pipeline, Recorder, AlertHook]]:
    config = tmp_path / "c.toml"
    config.write_text('[alerts]\nrepeat_window = "2h"\n')
    rec = Recorder()
    pipeline = Pipeline.open(tmp_path / "data", rec)
    hook = build_hook(config, tmp_path / "data", rec, clock=clock)
    pipeline.hooks.append(hook)
    yield pipeline, rec, hook
    hook.close()
    pipeline.close()


def expired(n: int, day: str = "2026-05-10", org: str = "Google Inc.") -> bytes:
    doc = report(
        sts(ok=1000, failed=n, details=[detail("certificate-expired", n)]), org=org, day=day
    )
    return raw(doc)


def test_hook_emits_alert_events_with_the_schema_fields(
    setup: tuple[Pipeline, Recorder, AlertHook],
) -> None:
    pipeline, rec, _ = setup
    result = pipeline.ingest(expired(3), source="test")
    [event] = rec.named("tlsrpt.alert")
    assert {
        "report_id": "Google Inc.-2026-05-10",
        "organization_name": "Google Inc.",
        "date_range_start": "2026-05-10T00:00:00Z",
        "archive_id": result.archive_id,
        "severity": "critical",
        "rule": "enforce-failure",
        "domain": "example.com",
        "result_type": "certificate-expired",
        "repeats_suppressed": 0,
    }.items() <= event.items()
    assert set(event["rules"]) == {"enforce-failure", "result-type", "new-result-type"}
    assert "message" in event and "source" in event
    pipeline.ingest(expired(3), source="test")  # a duplicate report: no hook, no alert
    assert len(rec.named("tlsrpt.alert")) == 1


def test_repeat_window_holds_the_same_alert_back(
    setup: tuple[Pipeline, Recorder, AlertHook], clock: Clock
) -> None:
    pipeline, rec, _ = setup
    pipeline.ingest(expired(3, org="A"), source="test")
    clock.now = T0 + timedelta(minutes=90)
    pipeline.ingest(expired(4, org="B"), source="test")
    assert len(rec.named("tlsrpt.alert")) == 1
    clock.now = T0 + timedelta(hours=2, minutes=1)
    pipeline.ingest(expired(5, org="C"), source="test")
    alerts = rec.named("tlsrpt.alert")
    assert len(alerts) == 2 and alerts[1]["repeats_suppressed"] == 1
    assert alerts[1]["organization_name"] == "C"


def test_repeat_window_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    rec = Recorder()
    for org in ("A", "B"):  # two server lifetimes on the same data directory
        pipeline = Pipeline.open(tmp_path, rec)
        hook = build_hook(None, tmp_path, rec, clock=clock)
        pipeline.hooks.append(hook)
        pipeline.ingest(expired(2, org=org), source="test")
        hook.close()
        pipeline.close()
        clock.now += timedelta(hours=1)
    assert [e["organization_name"] for e in rec.named("tlsrpt.alert")] == ["A"]


def test_new_result_type_and_rate_from_the_store(
    setup: tuple[Pipeline, Recorder, AlertHook],
) -> None:
    pipeline, rec, _ = setup

    def testing(n: int, org: str, result_type: str) -> bytes:
        policy = sts(mode="testing", ok=100 - n, failed=n, details=[detail(result_type, n)])
        return raw(report(policy, org=org))

    pipeline.ingest(testing(1, "A", "validation-failure"), source="test")
    assert [e["rule"] for e in rec.named("tlsrpt.alert")] == ["new-result-type"]
    pipeline.ingest(testing(1, "B", "validation-failure"), source="test")  # seen: quiet
    assert len(rec.named("tlsrpt.alert")) == 1
    pipeline.ingest(testing(30, "C", "validation-failure"), source="test")  # 32 of 300 that day
    last = rec.named("tlsrpt.alert")[-1]
    assert (last["rule"], last["result_type"]) == ("failure-rate", None)
    assert "32 of 300 sessions on 2026-05-10" in last["message"]


def test_disabled_hook_does_nothing(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[alerts]\nenabled = false\n")
    rec = Recorder()
    hook = build_hook(config, tmp_path, rec)
    assert hook(parse_report(expired(3)), None, "x") == []  # type: ignore[arg-type]
    hook.close()
    assert not (tmp_path / "tlsrpt.sqlite3").exists()


def test_hook_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    hook = build_hook(None, tmp_path, rec)
    with sqlite3.connect(tmp_path / "tlsrpt.sqlite3") as db:  # the look-ups now fail
        db.execute("DROP TABLE failures")
    assert hook(parse_report(expired(3)), None, "x") == []  # type: ignore[arg-type]
    hook.close()
    assert "alert evaluation failed" in caplog.text
