"""docs/events.md and docs/alerts.md against the event types in the code: every kind of event
a type defines has a field table (or "No fields of its own") whose fields are the type's
JSON fields, in their order, with the type's types and optional markers; every documented
kind has a type. The fields every event, every report event and every policy daemon event
start with are checked against their own tables once."""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import tlsrpt_lmtp
from tlsrpt_lmtp.core.eventbase import Absent, Event, event_types, json_fields
from tlsrpt_lmtp.core.events import ReportEvent

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ("events.md", "alerts.md")
KIND = re.compile(r"`((?:tlsrpt|sts)\.[a-z_]+)`")
NAME = re.compile(r"`([a-z_]+)`")
HEADER = ["field", "type", "meaning"]
NO_FIELDS = "No fields of its own."
ENVELOPE = "Fields on every event"
REPORT = "Fields on every report event"
POLICY = "Fields on every policy daemon event"


def _all_event_types() -> dict[str, type[Event]]:
    """Every module of the package imported, then every Event subclass with a name."""
    for info in pkgutil.walk_packages(tlsrpt_lmtp.__path__, "tlsrpt_lmtp."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found = event_types()
    kinds = {cls.EVENT: cls for cls in found}
    assert len(kinds) == len(found), "two types with the same EVENT"
    return kinds


def _sections() -> list[tuple[str, str, str]]:
    """(page, heading, body) of every section of the pages."""
    out = []
    for page in PAGES:
        heading, lines = "", []
        for line in (DOCS / page).read_text().splitlines():
            if line.startswith("#"):
                out.append((page, heading, "\n".join(lines)))
                heading, lines = line.lstrip("#").strip(), []
            else:
                lines.append(line)
        out.append((page, heading, "\n".join(lines)))
    return out


def _table(body: str) -> list[tuple[str, str]] | None:
    """The (field, type) rows of the section's field table, None when it has none."""
    rows: list[list[str]] = []
    for line in body.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    if not rows or rows[0] != HEADER:
        return None
    fields = []
    for cells in rows[2:]:
        names = NAME.findall(cells[0])
        assert names, f"no field name in {cells[0]!r}"
        fields += [(name, cells[1]) for name in names]
    return fields


def documented() -> dict[str, list[tuple[str, str]]]:
    """Kind (or ENVELOPE, REPORT, POLICY) → its documented fields."""
    tables: dict[str, list[tuple[str, str]]] = {}
    for page, heading, body in _sections():
        fields = _table(body)
        common = [c for c in (ENVELOPE, REPORT, POLICY) if heading.startswith(c)]
        kinds = KIND.findall(heading)
        if common:
            assert fields is not None, f"{page}: {heading}: no field table"
            tables[common[0]] = fields
        elif len(kinds) == 1 and (fields is not None or NO_FIELDS in body):
            assert kinds[0] not in tables, f"{page}: {kinds[0]} is documented twice"
            tables[kinds[0]] = fields or []
    return tables


def doc_type(hint: Any) -> str:
    """The documentation's name for a field's Python type."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = typing.get_args(hint) if union else (hint,)
    optional = Absent in args
    nullable = type(None) in args
    (base,) = [a for a in args if a not in (Absent, type(None))]
    origin = typing.get_origin(base)
    if base is str:
        name = "string"
    elif base is bool:
        name = "bool"
    elif base is int:
        name = "int"
    elif base is float:
        name = "number"
    elif origin is tuple and typing.get_args(base) == (str, ...):
        name = "list of strings"
    elif origin in (dict, Mapping) or base in (dict, Mapping):
        name = "object"
    else:
        raise AssertionError(f"no documentation name for {base!r}")
    return name + (" / null" if nullable else "") + (" (optional)" if optional else "")


def code_fields(cls: type[Event]) -> list[tuple[str, str]]:
    return [(key, doc_type(hint)) for key, hint in json_fields(cls)]


KINDS = _all_event_types()
DOCUMENTED = documented()


def _family(cls: type[Event]) -> tuple[str, list[tuple[str, str]]]:
    """The common table a type's fields start with, and those fields."""
    from tlsrpt_lmtp.sts.events import PolicyEvent

    for base, name in ((ReportEvent, REPORT), (PolicyEvent, POLICY)):
        if issubclass(cls, base):
            return name, code_fields(base)
    return ENVELOPE, []


def test_every_kind_in_the_code_is_documented_and_every_documented_kind_exists() -> None:
    assert sorted(k for k in DOCUMENTED if "." in k) == sorted(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_table_is_the_types_fields(kind: str) -> None:
    cls = KINDS[kind]
    family, common = _family(cls)
    own = code_fields(cls)[len(common) :]
    assert DOCUMENTED[kind] == own, f"docs table of {kind} against {cls.__qualname__}"
    assert family in DOCUMENTED, f"the table {family!r} is missing"


def test_the_common_tables() -> None:
    from tlsrpt_lmtp.sts.events import PolicyEvent

    assert DOCUMENTED[REPORT] == code_fields(ReportEvent)
    assert DOCUMENTED[POLICY] == code_fields(PolicyEvent)
    # schema, event and timestamp are the sink's; event_id is the one field of every type
    envelope = [("schema", "int"), ("event", "string"), ("timestamp", "string")]
    event_id = [("event_id", doc_type(typing.get_type_hints(Event)["event_id"]))]
    assert [f.name for f in dataclasses.fields(Event)] == ["event_id"]
    assert DOCUMENTED[ENVELOPE] == envelope[:2] + event_id + envelope[2:]


def test_the_tables_are_read() -> None:
    """The reader finds what a table of a known kind says (the parser is not vacuous)."""
    assert ("failed_session_count", "int") in DOCUMENTED["tlsrpt.failure"]
    assert ("dkim_aligned", "bool / null (optional)") in DOCUMENTED["tlsrpt.invalid"]
    assert ("mx", "list of strings / null") in DOCUMENTED[POLICY]
    assert DOCUMENTED["sts.policy_fetched"] == []
    assert doc_type(str | None) == "string / null"


def test_every_kind_has_a_json_schema() -> None:
    """docs/schema/events-json.schema.json has a definition for every kind, requiring the
    type's fields that every event of the kind carries (not the optional ones)."""
    schema = json.loads((DOCS / "schema" / "events-json.schema.json").read_text())
    assert sorted(schema["$defs"]) == sorted(KINDS)
    for kind, cls in KINDS.items():
        carried = {key for key, hint in json_fields(cls) if "(optional)" not in doc_type(hint)}
        required = set(schema["$defs"][kind].get("required", ())) - {"event_id"}
        assert required <= carried, (kind, required - carried)
