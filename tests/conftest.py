"""The suite-wide check that every event the tests left behind matches its schema, and the
fixtures of tests/support/ that several test modules use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

# fixtures that several test modules use: server, rig_factory (the alert delivery tests);
# postgres_server, postgres_url, redis_server, redis_url (private PostgreSQL / Redis)
pytest_plugins = ["tests.support.alerts", "tests.support.servers"]


# docs/events.md: the digest's alerts and the undelivered-alert notices carry no event_id
WITHOUT_EVENT_ID = ("tlsrpt.alert", "tlsrpt.alert_undelivered")


@pytest.fixture(scope="session", autouse=True)
def every_event_matches_its_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole suite: every event line any test left in a temporary directory (the
    daemons' and commands' event files, in the json and ecs formats) is valid against its
    JSON Schema in docs/schema/ (issue 13). A line that is not an event is not judged, nor
    are the hand-made payloads of the sink tests (tlsrpt.* without an event_id)."""
    yield
    try:
        import jsonschema
    except ImportError:  # the test extra is not installed: test_event_schemas says so too
        return
    schemas = Path(__file__).resolve().parents[1] / "docs" / "schema"
    cls = jsonschema.Draft202012Validator
    checks = {
        fmt: cls(json.loads((schemas / f"events-{fmt}.schema.json").read_text()))
        for fmt in ("json", "ecs")
    }
    bad: list[str] = []
    seen = 0
    for path in sorted(tmp_path_factory.getbasetemp().rglob("*.jsonl")):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not an event line (a collector's own output, a cut test file)
            if not isinstance(event, dict) or not ("event" in event or "ecs" in event):
                continue
            fmt = "ecs" if "ecs" in event else "json"
            if fmt == "json" and "schema" not in event:
                continue
            if (
                fmt == "json"
                and str(event["event"]).startswith("tlsrpt.")
                and "event_id" not in event
                and event["event"] not in WITHOUT_EVENT_ID
            ):
                continue  # a sink test's hand-made payload: every report event has an id
            seen += 1
            error = jsonschema.exceptions.best_match(checks[fmt].iter_errors(event))
            if error is not None:
                bad.append(f"{path}:{number}: {fmt}: {error.message[:200]}")
    if bad:
        pytest.fail(
            f"{len(bad)} of {seen} events do not match their schema:\n" + "\n".join(bad[:20]),
            pytrace=False,
        )
