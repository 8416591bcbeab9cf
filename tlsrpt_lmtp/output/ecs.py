"""Events in Elastic Common Schema (ECS 8.x) for ``--log-format ecs`` (docs/events.md).

A pure function from an event's JSON object (``Event.to_dict``, with its ``timestamp``)
to an ECS document: the fields ECS has a place for go there (``event.*``, ``source.ip``,
``destination.*``, ``organization.name``, ``error.*``, ``email.*``, ``related.*``), every
other field keeps its name under ``tlsrpt.*``. Nothing is dropped but the null value of a field
that has an ECS place. ``event.id`` is the
stable ``event_id``, so a SIEM can drop the repeats of at-least-once delivery.

Values that come from report senders are not trusted to fit ECS types: an IP that does not
parse stays under ``tlsrpt.*`` instead of ``source.ip`` (an ``ip`` field in Elasticsearch
would refuse the whole document).
"""

from __future__ import annotations

import ipaddress
from collections.abc import MutableMapping
from typing import Any

ECS_VERSION = "8.11.0"
MAX_RELATED = 32

# event name → (kind, category, type, outcome); outcome None: computed or not set
_CLASSES: dict[str, tuple[str, list[str], list[str], str | None]] = {
    "tlsrpt.report": ("event", ["email"], ["info"], "success"),
    "tlsrpt.policy": ("event", ["email", "network"], ["info"], None),
    "tlsrpt.failure": ("event", ["email", "network"], ["connection", "error"], "failure"),
    "tlsrpt.invalid": ("event", ["email"], ["error"], "failure"),
    "tlsrpt.alert": ("alert", ["email", "network"], ["info"], None),
    "tlsrpt.alert_undelivered": ("event", ["email"], ["error"], "failure"),
    "tlsrpt.alert_held": ("event", ["email"], ["info"], None),
    "tlsrpt.prune": ("event", ["database"], ["deletion"], "success"),
    "sts.policy_fetched": ("event", ["configuration", "network"], ["creation"], "success"),
    "sts.policy_changed": ("event", ["configuration", "network"], ["change"], "success"),
    "sts.fetch_error": ("event", ["network"], ["error"], "failure"),
    "sts.refresh_failed": ("event", ["network"], ["error"], "failure"),
    "sts.shared_cache_unavailable": ("event", ["database", "network"], ["error"], "failure"),
    "sts.shared_cache_restored": ("event", ["database", "network"], ["info"], "success"),
}
_DEFAULT_CLASS: tuple[str, list[str], list[str], str | None] = ("event", [], ["info"], None)
_LEVELS = {"info": "info", "warning": "warning", "critical": "critical"}
# Fields ECS has a place for (the rest go under tlsrpt.*); see _mapped() for the others.
_PLACES: dict[str, tuple[str, ...]] = {
    "event_id": ("event", "id"),
    "timestamp": ("@timestamp",),
    "organization_name": ("organization", "name"),
    "date_range_start": ("event", "start"),
    "date_range_end": ("event", "end"),
    "receiving_mx_hostname": ("destination", "domain"),
    "subject": ("email", "subject"),
    "message_id": ("email", "message_id"),
    "message": ("message",),
}
_ENVELOPE = frozenset(("schema", "event", "event_id", "timestamp"))
_HOST_FIELDS = (
    "receiving_mx_hostname",
    "receiving_mx_helo",
    "policy_domain",
    "domain",
    "report_domain",
    "submitter",
    "dkim_domain",
)


def _ip(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        return None


def _put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = doc
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def to_ecs(event: MutableMapping[str, Any]) -> dict[str, Any]:
    """One event dict → one ECS document (nested objects)."""
    name = str(event.get("event", ""))
    kind, category, types, outcome = _CLASSES.get(name, _DEFAULT_CLASS)
    doc: dict[str, Any] = {}
    if "timestamp" in event:
        doc["@timestamp"] = event["timestamp"]
    head: dict[str, Any] = {"kind": kind}
    if category:
        head["category"] = list(category)
    head["type"] = list(types)
    head["action"] = name
    head["dataset"] = "tlsrpt.policy_daemon" if name.startswith("sts.") else "tlsrpt.reports"
    head["module"] = "tlsrpt"
    doc["event"] = head
    doc["ecs"] = {"version": ECS_VERSION}
    doc["log"] = {"level": _level(name, event)}
    own: dict[str, Any] = {}
    # The event's own fields, then its id and schema version (the order of the objects the
    # first versions wrote, whose event_id and schema came last).
    fields = [(k, v) for k, v in event.items() if k not in _ENVELOPE]
    fields += [(k, event[k]) for k in ("event_id", "schema") if k in event]
    for key, value in fields:
        place = _PLACES.get(key)
        if place is not None:
            if value is not None:  # ECS leaves out what is unknown
                _put(doc, place, value)
        elif not _mapped(doc, name, key, value):
            own[key] = value
    outcome = outcome or _outcome(name, event)
    if outcome is not None:
        head["outcome"] = outcome
    related = _related(event)
    if related:
        doc["related"] = related
    doc.setdefault("message", _message(name, event))
    doc["tlsrpt"] = own
    return doc


def _mapped(doc: dict[str, Any], name: str, key: str, value: Any) -> bool:
    """Place the fields whose ECS place depends on the event or on the value."""
    if value is None:
        return False
    if key in ("sending_mta_ip", "receiving_ip"):
        ip = _ip(value)
        if ip is None:
            return False
        _put(doc, ("source" if key == "sending_mta_ip" else "destination", "ip"), ip)
        return True
    if key == "result_type" and name in ("tlsrpt.failure", "sts.fetch_error"):
        _put(doc, ("error", "code"), value)
        return True
    if key == "reason" and isinstance(value, str):
        _put(doc, ("error", "message"), value)
        _put(doc, ("event", "reason"), value)
        return True
    if key == "from" and isinstance(value, str):
        _put(doc, ("email", "from", "address"), [value])
        return True
    if key == "domain" and name.startswith("sts."):
        _put(doc, ("destination", "domain"), value)
        return True
    return False


def _outcome(name: str, event: MutableMapping[str, Any]) -> str | None:
    if name == "tlsrpt.policy":
        failed = event.get("total_failure_session_count")
        return "failure" if isinstance(failed, int) and failed > 0 else "success"
    return None


def _level(name: str, event: MutableMapping[str, Any]) -> str:
    if name == "tlsrpt.alert":
        return _LEVELS.get(str(event.get("severity")), "warning")
    _, _, types, outcome = _CLASSES.get(name, _DEFAULT_CLASS)
    if "error" in types or outcome == "failure" or _outcome(name, event) == "failure":
        return "warning"
    return "info"


def _related(event: MutableMapping[str, Any]) -> dict[str, list[str]]:
    related: dict[str, list[str]] = {}
    ips = [ip for ip in (_ip(event.get("sending_mta_ip")), _ip(event.get("receiving_ip"))) if ip]
    if ips:
        related["ip"] = list(dict.fromkeys(ips))
    hosts = [event.get(k) for k in _HOST_FIELDS]
    names = [h for h in hosts if isinstance(h, str) and h]
    if names:
        related["hosts"] = list(dict.fromkeys(names))[:MAX_RELATED]
    return related


def _message(name: str, event: MutableMapping[str, Any]) -> str:
    """A short line for a human scanning the SIEM; every field is in the document too."""
    org = event.get("organization_name")
    if name == "tlsrpt.report":
        return (
            f"TLS report {event.get('report_id')} from {org}:"
            f" {event.get('total_successful_session_count')} successful,"
            f" {event.get('total_failure_session_count')} failed sessions"
            + (" (duplicate)" if event.get("duplicate") else "")
        )
    if name == "tlsrpt.policy":
        return (
            f"{event.get('policy_type')} policy of {event.get('policy_domain')} ({org}):"
            f" {event.get('total_successful_session_count')} successful,"
            f" {event.get('total_failure_session_count')} failed sessions"
        )
    if name == "tlsrpt.failure":
        return (
            f"{event.get('failed_session_count')} sessions to"
            f" {event.get('receiving_mx_hostname') or event.get('receiving_ip')}"
            f" ({event.get('policy_domain')}) failed: {event.get('result_type')} ({org})"
        )
    if name == "tlsrpt.prune":
        return (
            f"retention{' (dry run)' if event.get('dry_run') else ''}:"
            f" {event.get('messages', 0) + event.get('quarantined', 0)} raw messages"
            f" received before {event.get('raw_before')}, {event.get('reports')} reports"
            f" ended before {event.get('reports_before')}"
        )
    reason = event.get("reason")
    domain = event.get("domain")
    return f"{name}" + (f" {domain}" if domain else "") + (f": {reason}" if reason else "")
