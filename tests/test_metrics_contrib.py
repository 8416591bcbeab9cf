"""contrib/prometheus and contrib/grafana, checked with the real tools: `promtool check rules`,
`promtool test rules` (the rules fire on the series they are meant for, and only then),
`promtool check config`; every dashboard and rule expression accepted by a real Prometheus;
every metric they use documented in docs/metrics.md and exported by the code."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.prometheus import prometheus, require

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "contrib" / "prometheus"
DASHBOARD = ROOT / "contrib" / "grafana" / "tlsrpt-lmtp.json"
DOC = ROOT / "docs" / "metrics.md"
NAME = re.compile(r"\b((?:tlsrpt|process|python)_[a-z0-9_]+)")
SUFFIXES = ("_bucket", "_count", "_sum")


def rule_files() -> list[Path]:
    return sorted(p for p in RULES.glob("*.yml") if "groups:" in p.read_text())


def promtool(*args: str, cwd: Path = RULES) -> str:
    done = subprocess.run(
        [require("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_promtool_checks_the_rules(path: Path) -> None:
    assert "SUCCESS" in promtool("check", "rules", path.name)


@pytest.mark.parametrize("path", sorted(RULES.glob("*.test.yml")), ids=lambda p: p.name)
def test_the_rules_fire_when_they_should(path: Path) -> None:
    assert "SUCCESS" in promtool("test", "rules", path.name)


def test_promtool_checks_the_scrape_config() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in doc["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def rule_exprs() -> list[str]:
    text = "\n".join(p.read_text() for p in rule_files())
    # Each `expr:` is one line or a `|` block indented under it.
    exprs: list[str] = []
    for match in re.finditer(r"expr: (\|\n((?:\s{10,}.*\n)+)|.*)", text):
        exprs.append(match.group(2) if match.group(2) else match.group(1))
    return exprs


def metric_names(exprs: list[str]) -> set[str]:
    names = set()
    for expr in exprs:
        for name in NAME.findall(expr):
            for suffix in SUFFIXES:  # the series of a histogram (all ours are in seconds)
                if name.endswith("_seconds" + suffix):
                    name = name.removesuffix(suffix)
            names.add(name)
    return names


def documented() -> set[str]:
    return set(NAME.findall(DOC.read_text()))


def test_dashboard_is_grafana_json_over_documented_metrics() -> None:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["panels"] and doc["schemaVersion"] >= 30
    titles = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert titles[:3] == ["By result", "By source", "Policy daemon health"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    used = metric_names(dashboard_exprs())
    assert used, "the dashboard queries no metric"
    missing = {
        n
        for n in used
        if n not in documented() and not n.startswith(("process_", "tlsrpt_stage2_process_"))
    }
    assert not missing, f"queried by the dashboard, not in docs/metrics.md: {missing}"


def test_rules_use_documented_metrics() -> None:
    used = metric_names(rule_exprs())
    assert len(rule_exprs()) == sum(p.read_text().count("expr:") for p in rule_files())
    assert not used - documented(), used - documented()


def test_documented_metrics_are_the_ones_exported(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from tlsrpt_lmtp.config import PolicyConfig
    from tlsrpt_lmtp.metrics.config import MetricsConfig
    from tlsrpt_lmtp.metrics.exposition import Backlog
    from tlsrpt_lmtp.metrics.policy import instrument
    from tlsrpt_lmtp.metrics.recorder import PromRecorder
    from tlsrpt_lmtp.sts import daemon

    registry = CollectorRegistry()
    PromRecorder(MetricsConfig(), registry, policy=True)
    service = daemon.build_service(
        PolicyConfig(nameservers=("127.0.0.1",), data_dir=tmp_path), lambda _: None
    )
    try:
        instrument(service, registry)
    finally:
        service.cache.close()
    registry.register(Backlog(tmp_path / "none.sqlite3"))
    exported = set()
    for family in registry.collect():
        exported.add(family.name + ("_total" if family.type == "counter" else ""))
    in_doc = {n for n in documented() if n.startswith("tlsrpt_") and "process" not in n}
    assert in_doc == exported


def test_every_expression_is_accepted_by_prometheus(tmp_path: Path) -> None:
    exprs = [e.replace("$job", ".*") for e in dashboard_exprs()] + rule_exprs()
    with prometheus(tmp_path, {}, wait_up=False) as prom:
        for expr in exprs:
            prom.api("query", query=expr)  # raises on a parse error (HTTP 400)
