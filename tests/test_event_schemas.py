"""Every event the real emitters write, in both formats (json and ecs), is valid against its
JSON Schema in docs/schema/: the real sample reports of shared/samples/real, the hostile mails
of tests/support/hostile.py, alerts, duplicates, and the policy daemon's events from a real
service on the loopback test internet. Plus the ECS mapping itself (ecs.py), value by value."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support import hostile
from tests.support.factories import detail, report_dict, sts_policy, tlsrpt_email
from tests.support.samples import shared_dir
from tests.support.schemas import BothFormats, validator
from tlsrpt_lmtp.alerts.hook import build_hook
from tlsrpt_lmtp.config import PolicyConfig
from tlsrpt_lmtp.ingest.pipeline import Pipeline
from tlsrpt_lmtp.ingest.sources import iter_messages
from tlsrpt_lmtp.output.ecs import ECS_VERSION, to_ecs

jsonschema = pytest.importorskip("jsonschema")
pytest_plugins = ["tests.netsim.fixtures"]

# The hostile mails that are cheap enough for a schema test (the slow ones are in bench/).
CHEAP = (
    "surrogate-subject",
    "surrogate-in-json",
    "count-2**63",
    "count-1e300",
    "count-digit-string",
    "count-overflow-by-sum",
    "gzip bomb",
)


def test_pipeline_events_are_valid_in_both_formats(tmp_path: Path) -> None:
    samples = shared_dir() / "samples" / "real"
    if not samples.is_dir():
        pytest.skip(f"no real samples under {samples}")
    sink = BothFormats(tmp_path)
    pipeline = Pipeline.open(tmp_path / "data", sink)
    # Alerts only for some domains: the others' alerts are held (tlsrpt.alert_held).
    config = tmp_path / "alerts.toml"
    config.write_text('[alerts]\ndomains = ["example.com", "*.example.com"]\n')
    hook = build_hook(config, tmp_path / "data", sink)
    pipeline.hooks.append(hook)
    try:
        for _, raw in iter_messages([samples]):
            pipeline.ingest(raw, source="file")
        for _, raw in iter_messages([samples]):  # the same reports again: duplicates
            pipeline.ingest(b"X-Again: 1\r\n" + raw, source="lmtp")
        for name in CHEAP:
            pipeline.ingest(hostile.HOSTILE[name](), source="lmtp")
        failing = report_dict(
            sts_policy(
                "bad-ips.example",
                failure=3,
                details=[
                    detail(count=3, sending_ip="not an ip"),
                    detail(count=1, receiving_ip="2001:db8::1"),
                ],
            ),
            report_id="ips",
        )
        raw = tlsrpt_email(gzip.compress(json.dumps(failing).encode()))
        pipeline.ingest(raw, source="milter")
        pipeline.process_pending()
        hook.join()
    finally:
        hook.close()
        pipeline.close()
        sink.close()
    docs = sink.check()
    names = Counter(d["event"] for d in docs["json"])
    assert {"tlsrpt.report", "tlsrpt.policy", "tlsrpt.failure", "tlsrpt.invalid"} <= set(names)
    assert {"tlsrpt.alert", "tlsrpt.alert_held"} <= set(names)
    assert any(d["duplicate"] for d in docs["json"] if d["event"] == "tlsrpt.report")
    assert len(docs["json"]) > 100


def test_policy_daemon_events_are_valid_in_both_formats(netsim: Any, tmp_path: Path) -> None:
    from tlsrpt_lmtp.sts import daemon

    sink = BothFormats(tmp_path)
    config = PolicyConfig(
        nameservers=(netsim.nameserver,),
        ca_file=str(netsim.ca_file),
        data_dir=tmp_path / "data",
        dns_timeout=2.0,
        fetch_timeout=2.0,
        allow_private_policy_hosts=True,  # the loopback test internet's policy hosts
    )
    service = daemon.build_service(config, sink)
    netsim.publish_sts("schema-ok.test")
    netsim.publish_sts("schema-down.test", host_state="down")
    netsim.publish_sts("schema-garbage.test", policy="not a policy")

    async def run() -> None:
        for domain in ("schema-ok.test", "schema-down.test", "schema-garbage.test"):
            await service.lookup(domain)
        entry = service.cache.get("schema-ok.test")
        assert entry is not None
        netsim.site(
            "schema-ok.test"
        ).body = "version: STSv1\nmode: testing\nmx: *.x.test\nmax_age: 86400\n"
        await service.refresh(entry)  # the policy changed
        netsim.set_sts_host("schema-ok.test", "down")
        changed = service.cache.get("schema-ok.test")
        assert changed is not None
        await service.refresh(changed)  # the refresh fails
        await service.settle()

    try:
        asyncio.run(run())
    finally:
        service.cache.close()
        sink.close()
    docs = sink.check()
    names = {d["event"] for d in docs["json"]}
    assert names == {
        "sts.policy_fetched",
        "sts.policy_changed",
        "sts.fetch_error",
        "sts.refresh_failed",
    }


def _failure(**over: Any) -> dict[str, Any]:
    event = {
        "schema": 1,
        "event": "tlsrpt.failure",
        "event_id": "0" * 32,
        "timestamp": "2026-11-30T08:00:00.000001Z",
        "report_id": "r1",
        "organization_name": "Example Inc.",
        "date_range_start": "2026-11-29T00:00:00Z",
        "date_range_end": "2026-11-29T23:59:59Z",
        "archive_id": "a" * 64,
        "source": "lmtp",
        "policy_type": "sts",
        "policy_domain": "example.org",
        "result_type": "certificate-expired",
        "sending_mta_ip": "192.0.2.1",
        "receiving_mx_hostname": "mx.example.org",
        "receiving_mx_helo": None,
        "receiving_ip": "2001:DB8::25",
        "failed_session_count": 3,
        "additional_information": None,
        "failure_reason_code": "X509_V_ERR_CERT_HAS_EXPIRED",
    }
    return event | over


def test_ecs_puts_each_field_in_its_place() -> None:
    doc = to_ecs(_failure())
    assert doc["@timestamp"] == "2026-11-30T08:00:00.000001Z"
    assert doc["ecs"] == {"version": ECS_VERSION}
    assert doc["event"]["id"] == "0" * 32
    assert (doc["event"]["kind"], doc["event"]["outcome"]) == ("event", "failure")
    assert doc["event"]["start"] == "2026-11-29T00:00:00Z"
    assert doc["organization"] == {"name": "Example Inc."}
    assert doc["source"] == {"ip": "192.0.2.1"}
    assert doc["destination"] == {"ip": "2001:db8::25", "domain": "mx.example.org"}
    assert doc["error"] == {"code": "certificate-expired"}
    assert doc["related"] == {
        "ip": ["192.0.2.1", "2001:db8::25"],
        "hosts": ["mx.example.org", "example.org"],
    }
    assert doc["tlsrpt"]["failure_reason_code"] == "X509_V_ERR_CERT_HAS_EXPIRED"
    assert doc["tlsrpt"]["failed_session_count"] == 3
    assert "sending_mta_ip" not in doc["tlsrpt"] and "organization_name" not in doc["tlsrpt"]
    assert doc["log"] == {"level": "warning"}


def test_ecs_keeps_what_does_not_fit_under_tlsrpt() -> None:
    doc = to_ecs(_failure(sending_mta_ip="mta.example.net", receiving_ip=None))
    assert "source" not in doc and "ip" not in doc["destination"]
    assert doc["tlsrpt"]["sending_mta_ip"] == "mta.example.net"
    assert doc["tlsrpt"]["receiving_ip"] is None
    assert "ip" not in doc.get("related", {})


def test_ecs_of_a_policy_daemon_event() -> None:
    doc = to_ecs(
        {
            "schema": 1,
            "event": "sts.fetch_error",
            "timestamp": "2026-11-30T08:00:00Z",
            "domain": "example.org",
            "mode": None,
            "mx": None,
            "policy_id": "20261130",
            "result_type": "sts-webpki-invalid",
            "reason": "certificate verify failed",
            "cached_policy_applied": False,
        }
    )
    assert doc["event"]["dataset"] == "tlsrpt.policy_daemon"
    assert doc["destination"] == {"domain": "example.org"}
    assert doc["error"] == {"code": "sts-webpki-invalid", "message": "certificate verify failed"}
    assert doc["tlsrpt"]["cached_policy_applied"] is False
    assert "id" not in doc["event"]


def test_parse_with_log_format_ecs_writes_valid_ecs(tmp_path: Path) -> None:
    """The real command line: `tlsrpt-lmtp parse --log-format ecs` on the real samples."""
    samples = shared_dir() / "samples" / "real"
    if not samples.is_dir():
        pytest.skip(f"no real samples under {samples}")
    argv = [sys.executable, "-m", "tlsrpt_lmtp", "parse", "--log-format", "ecs"]
    argv += ["--data-dir", str(tmp_path), "--dkim-policy", "off", str(samples)]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    check = validator("ecs")
    docs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(docs) > 50
    for doc in docs:
        assert not list(check.iter_errors(doc)), doc
    assert {d["event"]["action"] for d in docs} >= {"tlsrpt.report", "tlsrpt.failure"}
