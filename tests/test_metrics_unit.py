"""The metrics' pure parts: label bounds, reason classes, the [metrics] table, the recorder fed
events (counted once each, flushed in one go), the policy request counters."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tlsrpt_lmtp.config import ConfigError
from tlsrpt_lmtp.metrics.config import MetricsConfig, load_metrics_config
from tlsrpt_lmtp.metrics.labels import OTHER, Capped, quarantine_class
from tlsrpt_lmtp.metrics.policy import PolicyRequests
from tlsrpt_lmtp.metrics.recorder import PromRecorder
from tlsrpt_lmtp.sts.policy import parse_policy
from tlsrpt_lmtp.sts.reply import Answer, Kind


def test_capped_keeps_the_first_values_then_says_other() -> None:
    cap = Capped(2)
    assert [cap("a"), cap("b"), cap("c"), cap("a"), cap(None)] == ["a", "b", OTHER, "a", OTHER]
    assert Capped(5)("x" * 1000) == "x" * 128


@pytest.mark.parametrize(
    ("reason", "cls"),
    [
        ("no report attachment found", "no_report"),
        ("attachment x.json.gz: gzip data decompresses to more than the 5-byte limit", "size"),
        ("report body is not JSON: Expecting value", "not_json"),
        ("attachment a.zip: zip data is corrupt: bad", "compression"),
        ("DKIM fail for example.com: body hash mismatch [dkim policy enforce]", "dkim"),
        ("poison: processing this message was interrupted 3 times", "poison"),
        ("internal error while reading the message: KeyError()", "internal"),
        ("report has no report-id", "invalid_report"),
    ],
)
def test_quarantine_reasons_fall_into_few_classes(reason: str, cls: str) -> None:
    assert quarantine_class(reason) == cls


def test_metrics_table_and_flag(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[metrics]\nlisten = "[::1]:9464"\ndomains = ["Example.ORG."]\n')
    config = load_metrics_config(cfg)
    assert (config.listen, config.domains, config.address) == (
        "[::1]:9464",
        ("example.org",),
        ("::1", 9464),
    )
    assert load_metrics_config(cfg, "9470").address == ("127.0.0.1", 9470)
    assert load_metrics_config(None) == MetricsConfig()
    with pytest.raises(ConfigError):
        load_metrics_config(None, "unix:/run/x.sock")
    cfg.write_text("[metrics]\nport = 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_metrics_config(cfg)


def _recorder(**kw: object) -> tuple[PromRecorder, CollectorRegistry]:
    registry = CollectorRegistry()
    return PromRecorder(MetricsConfig(**kw), registry, clock=lambda: 1000.0), registry  # type: ignore[arg-type]


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_events_become_counters_once_flushed_at_scrape() -> None:
    rec, registry = _recorder(domains=("example.org",), max_label_values=2)
    for domain, count in (("example.org", 3), ("mx.example.org", 2), ("evil.example", 7)):
        rec.event_written(
            {
                "event": "tlsrpt.failure",
                "policy_type": "sts",
                "policy_domain": domain,
                "result_type": "certificate-expired",
                "failed_session_count": count,
            }
        )
    rec.event_written(
        {
            "event": "tlsrpt.report",
            "duplicate": False,
            "organization_name": "Org",
            "dkim_result": "pass",
        }
    )
    rec.event_written(
        {"event": "tlsrpt.failure", "result_type": "made-up", "failed_session_count": -5}
    )
    assert _sample(registry, "tlsrpt_events_total", event="tlsrpt.failure") == 4.0  # a scrape
    failed = "tlsrpt_failed_sessions_total"
    labels = {"policy_type": "sts", "result_type": "certificate-expired"}
    assert _sample(registry, failed, domain="example.org", **labels) == 3.0
    assert _sample(registry, failed, domain="mx.example.org", **labels) == 2.0
    assert _sample(registry, failed, domain=OTHER, **labels) == 7.0
    # a negative count adds nothing (a counter never goes back)
    assert _sample(registry, failed, domain=OTHER, policy_type=OTHER, result_type=OTHER) is None
    assert _sample(registry, "tlsrpt_reports_total", outcome="stored") == 1.0
    assert _sample(registry, "tlsrpt_dkim_verdicts_total", result="pass") == 1.0
    assert _sample(registry, "tlsrpt_last_report_timestamp_seconds", organization="Org") == 1000.0
    assert b"tlsrpt_events_total" in generate_latest(registry)


def _answer(mode: str | None, kind: Kind = Kind.POLICY) -> Answer:
    if mode is None:
        return Answer(kind, "example.org")
    body = f"version: STSv1\nmode: {mode}\nmx: mx.example.org\nmax_age: 86400\n".encode()
    return Answer(kind, "example.org", parse_policy(body), "id")


def test_policy_requests_are_labelled_at_scrape_and_bounded() -> None:
    requests = PolicyRequests(limit=2)
    requests.add("sts", _answer("enforce"), False, True)
    requests.add("sts", _answer("testing"), False, True)
    requests.add("sts", _answer("testing"), True, False)
    requests.add("sts", _answer(None, Kind.TEMP), False, False)
    requests.add("sts", _answer(None, Kind.NO_POLICY), False, True)
    for i in range(40):  # a client making up map names
        requests.add(f"map{i}", _answer(None, Kind.DANE), False, True)
    registry = CollectorRegistry()
    registry.register(requests)

    def n(m: str, a: str) -> float | None:
        return registry.get_sample_value("tlsrpt_policy_requests_total", {"map": m, "answer": a})

    assert (n("sts", "secure"), n("sts", "notfound"), n("sts", "temp")) == (2.0, 2.0, 1.0)
    names = {s.labels["map"] for f in registry.collect() for s in f.samples if "map" in s.labels}
    assert len(names) <= 3 and OTHER in names
    dane = sum(
        s.value for f in registry.collect() for s in f.samples if s.labels.get("answer") == "dane"
    )
    assert dane == 40.0
    assert registry.get_sample_value("tlsrpt_policy_cache_hits_total") == 43.0
    assert registry.get_sample_value("tlsrpt_policy_cache_misses_total") == 2.0


def test_observe_many_equals_one_observe_per_value() -> None:
    from prometheus_client import Histogram

    from tlsrpt_lmtp.metrics.recorder import LATENCY_BUCKETS, observe_many

    values = [0.0, 0.01, 0.011, 0.3, 5.0, 59.9, 60.0, 1e9]
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("lat", "x", buckets=LATENCY_BUCKETS, registry=one)
    for v in values:
        h1.observe(v)
    observe_many(Histogram("lat", "x", buckets=LATENCY_BUCKETS, registry=many), values)

    def samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
        return [
            (x.name, x.labels, x.value)
            for family in registry.collect()
            for x in family.samples
            if not x.name.endswith("_created")
        ]

    assert samples(one) == samples(many)
    assert ("lat_count", {}, 8.0) in samples(many)


def test_a_strange_event_costs_a_count_never_the_event(capsys: pytest.CaptureFixture[str]) -> None:
    rec, registry = _recorder()
    unhashable = {"result_type": ["not", "hashable"], "failed_session_count": 1}
    rec.event_written({"event": "tlsrpt.failure", **unhashable})
    rec.event_written({"event": ["x"]})
    rec.event_written({"event": "tlsrpt.policy", "total_successful_session_count": True})
    assert "metrics:" in capsys.readouterr().err
    assert _sample(registry, "tlsrpt_events_total", event="tlsrpt.policy") == 1.0
