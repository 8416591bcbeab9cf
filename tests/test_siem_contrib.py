"""contrib/siem, checked against the lines the real emitters write (json and ecs): the
Elasticsearch/OpenSearch index template maps every field an ECS event carries, with a type
its values fit; Splunk's props.conf finds the time stamp of every line; Vector's config
parses the file and keys documents by event.id, into an index the template covers."""

from __future__ import annotations

import configparser
import fnmatch
import ipaddress
import json
import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support import hostile
from tests.support.samples import shared_dir
from tests.support.schemas import BothFormats
from tlsrpt_lmtp.alerts.hook import build_hook
from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.ingest.pipeline import Pipeline
from tlsrpt_lmtp.ingest.sources import iter_messages
from tlsrpt_lmtp.output.ecs import to_ecs
from tlsrpt_lmtp.sts.events import FetchFailed, PolicyChanged, RefreshFailed

SIEM = Path(__file__).resolve().parents[1] / "contrib" / "siem"
POLICY_EVENTS: list[Event] = [
    PolicyChanged(
        domain="example.org",
        mode="enforce",
        mx=("mx.example.org",),
        policy_id="2",
        changes={"policy_id": ("1", "2"), "max_age": (86400, 604800)},
    ),
    FetchFailed(
        domain="example.org",
        mode=None,
        mx=None,
        policy_id="2",
        result_type="sts-webpki-invalid",
        reason="certificate verify failed",
        cached_policy_applied=False,
    ),
    RefreshFailed(
        domain="example.org",
        mode="enforce",
        mx=("mx.example.org",),
        policy_id="2",
        expires_at=1796025781.5,
        reason="HTTP 404",
    ),
]


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """What the real emitters wrote for the real samples, hostile mails, alerts and policy
    daemon events, by format."""
    samples = shared_dir() / "samples" / "real"
    if not samples.is_dir():
        pytest.skip(f"no real samples under {samples}")
    tmp = tmp_path_factory.mktemp("siem")
    sink = BothFormats(tmp)
    pipeline = Pipeline.open(tmp / "data", sink)
    hook = build_hook(None, tmp / "data", sink)
    pipeline.hooks.append(hook)
    try:
        for _, raw in iter_messages([samples]):
            pipeline.ingest(raw, source="file")
        for make in (hostile.surrogate_in_json, hostile.big_int_count, hostile.bomb):
            pipeline.ingest(make(), source="lmtp")
        for event in POLICY_EVENTS:
            sink(event)
        hook.join()
    finally:
        hook.close()
        pipeline.close()
        sink.close()
    return {fmt: path.read_text().splitlines() for fmt, path in sink.paths.items()}


def leaves(doc: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every leaf; a list's items are values of the list's path."""
    if isinstance(doc, dict):
        return [leaf for k, v in doc.items() for leaf in leaves(v, f"{prefix}{k}.")]
    if isinstance(doc, list):
        return [leaf for v in doc for leaf in leaves(v, prefix)] or [(prefix[:-1], None)]
    return [(prefix[:-1], doc)]


def mapping_of(template: dict[str, Any], path: str) -> dict[str, Any] | None:
    mappings = template["template"]["mappings"]
    node: dict[str, Any] = mappings
    parts = path.split(".")
    for i, part in enumerate(parts):
        child = node.get("properties", {}).get(part)
        if child is None:
            break
        if child.get("enabled") is False:  # kept in _source, not indexed
            return child
        if i == len(parts) - 1:
            return dict(child)
        node = child
    for entry in mappings["dynamic_templates"]:
        [(_, rule)] = entry.items()
        if fnmatch.fnmatchcase(path, rule["path_match"]):
            return dict(rule["mapping"])
    return None


def fits(mapping: dict[str, Any], value: Any) -> bool:
    kind = mapping.get("type", "object")
    if value is None or mapping.get("enabled") is False:
        return True
    if kind == "ip":
        return bool(ipaddress.ip_address(value))
    if kind == "date":
        return bool(datetime.fromisoformat(value.replace("Z", "+00:00")))
    if kind == "long":
        in_range = isinstance(value, int) and -(2**63) <= value < 2**63
        return in_range or mapping.get("ignore_malformed") is True
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "double":
        return isinstance(value, int | float)
    return kind in ("keyword", "text") and isinstance(value, str | int | float | bool)


def test_index_template_maps_every_ecs_field(lines: dict[str, list[str]]) -> None:
    template = json.loads((SIEM / "elasticsearch-index-template.json").read_text())
    assert template["index_patterns"] and template["template"]["mappings"]["properties"]
    seen = set()
    for line in lines["ecs"]:
        for path, value in leaves(json.loads(line)):
            mapping = mapping_of(template, path)
            assert mapping is not None, f"{path} is not mapped"
            assert fits(mapping, value), (path, mapping, value)
            seen.add(path)
    # every ECS place that ecs.py fills is in the events of this run
    for path in ("source.ip", "destination.ip", "error.code", "event.id", "organization.name"):
        assert path in seen


def test_every_leaf_path_of_a_synthetic_ecs_document_is_mapped() -> None:
    template = json.loads((SIEM / "elasticsearch-index-template.json").read_text())
    doc = to_ecs(
        {
            "event": "tlsrpt.invalid",
            "timestamp": "2026-11-30T08:00:00Z",
            "reason": "no report attachment found",
            "from": "x@example.net",
            "subject": "s",
            "message_id": "<m@example.net>",
        }
    )
    for path, _ in leaves(doc):
        assert mapping_of(template, path) is not None, path


def test_splunk_finds_the_time_of_every_line(lines: dict[str, list[str]]) -> None:
    conf = configparser.ConfigParser(interpolation=None, strict=True)
    conf.optionxform = str  # type: ignore[assignment,method-assign]
    conf.read_string((SIEM / "props.conf").read_text())
    for fmt in ("ecs", "json"):
        stanza = conf[f"tlsrpt:{fmt}"]
        assert stanza["SHOULD_LINEMERGE"] == "false" and stanza["KV_MODE"] == "json"
        prefix = re.compile(stanza["TIME_PREFIX"])
        lookahead = int(stanza["MAX_TIMESTAMP_LOOKAHEAD"])
        assert re.fullmatch(stanza["LINE_BREAKER"], "\n")  # one event per line
        for line in lines[fmt]:
            match = prefix.search(line)
            assert match is not None, line[:200]
            stamp = line[match.end() : match.end() + lookahead].split('"', 1)[0]
            assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).tzinfo is not None


def test_vector_ships_to_an_index_the_template_covers_keyed_by_event_id() -> None:
    config = tomllib.loads((SIEM / "vector.toml").read_text())
    template = json.loads((SIEM / "elasticsearch-index-template.json").read_text())
    [source] = config["sources"].values()
    [transform] = config["transforms"].values()
    [sink] = config["sinks"].values()
    assert source["type"] == "file" and source["include"]
    assert transform["type"] == "remap" and "parse_json!(.message)" in transform["source"]
    assert transform["inputs"] == list(config["sources"])
    assert sink["inputs"] == list(config["transforms"])
    assert sink["type"] == "elasticsearch" and sink["id_key"] == "event.id"
    assert sink["bulk"]["action"] == "index"
    assert any(fnmatch.fnmatchcase(sink["bulk"]["index"], p) for p in template["index_patterns"])
