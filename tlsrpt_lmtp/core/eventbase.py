"""What every event type is (docs/events.md): a frozen dataclass named by ``EVENT``.

Each kind of event the program writes (``tlsrpt.report``, ``sts.fetch_error``, ...) is one
subclass with its fields in the order the JSON object has them. ``to_dict`` is the one place
an event becomes its JSON object: ``schema``, ``event``, ``event_id``, ``timestamp``, then the
fields. Three rules make the fields match the JSON object exactly:

- a field whose value is ``ABSENT`` is left out (a field only some events of a kind carry,
  e.g. ``since`` on the digest's alerts); ``None`` is written as null;
- a field named like a Python keyword ends in ``_`` (``from_``) and is written without it;
- a part (a field with ``PART`` as its metadata) holds a NamedTuple whose fields are
  written in its place (the report fields every ``tlsrpt.*`` event shares, a failure detail
  as the parser made it): the events of a report share these values instead of copying
  them, which keeps building a large report's 10,000 failure events as cheap as building
  dicts was.

``json_fields`` lists a type's JSON fields with their types (the documentation test).
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Final, Literal

SCHEMA = 1


class _Absent(enum.Enum):
    ABSENT = "absent"

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent.ABSENT
Absent = Literal[_Absent.ABSENT]

PART: Final = {"part": True}  # field metadata: a part (below)
# per type: (attribute, JSON key, the part's JSON keys or None for a plain field)
_Keys = tuple[tuple[str, str, tuple[str, ...] | None], ...]
_KEYS: dict[type, _Keys] = {}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """The base of every event type; ``event_id``: see ``core.events.EventIds``."""

    EVENT: ClassVar[str] = ""

    event_id: str | Absent = ABSENT

    def to_dict(self, timestamp: str | None = None) -> dict[str, Any]:
        """The event as its JSON object (``timestamp``: when the sink writes it)."""
        doc: dict[str, Any] = {"schema": SCHEMA, "event": self.EVENT}
        if self.event_id is not ABSENT:
            doc["event_id"] = self.event_id
        if timestamp is not None:
            doc["timestamp"] = timestamp
        keys = _KEYS.get(type(self)) or _keys(type(self))
        for attr, key, inner in keys:
            value = getattr(self, attr)
            if inner is not None:
                doc.update(zip(inner, value, strict=True))
            elif value is not ABSENT:
                doc[key] = value
        return doc


def _keys(cls: type[Event]) -> _Keys:
    hints = typing.get_type_hints(cls)
    found = tuple(
        (
            f.name,
            f.name.removesuffix("_"),
            hints[f.name]._fields if f.metadata.get("part") else None,
        )
        for f in dataclasses.fields(cls)
        if f.name != "event_id"
    )
    _KEYS[cls] = found
    return found


def values(events: list[Event]) -> list[tuple[Any, ...]]:
    """Every value of the events, as plain tuples JSON can hold (orjson reads these far
    faster than dataclasses), a part shared by consecutive events once."""
    rows: list[tuple[Any, ...]] = []
    add = rows.append
    last: dict[str, object] = {}  # the part the previous event had (a report's events share it)
    for event in events:
        entry = _VALUES.get(type(event))
        get, parts = entry if entry is not None else _values(type(event))
        add(get(event))
        for name in parts:
            value = getattr(event, name)
            if last.get(name) is not value:
                last[name] = value
                add(tuple(value))
    return rows


_VALUES: dict[type, tuple[Callable[[Any], tuple[Any, ...]], tuple[str, ...]]] = {}


def _values(cls: type[Event]) -> tuple[Callable[[Any], tuple[Any, ...]], tuple[str, ...]]:
    fields = dataclasses.fields(cls)
    plain = [f.name for f in fields if not f.metadata.get("part")]
    parts = tuple(f.name for f in fields if f.metadata.get("part"))
    get = operator.attrgetter(*plain, "EVENT")  # at least two names: always a tuple
    _VALUES[cls] = (get, parts)
    return get, parts


def json_fields(cls: type[Event]) -> list[tuple[str, Any]]:
    """(JSON key, type) of each field after ``event_id``, parts expanded, in order."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, Any]] = []
    for f in dataclasses.fields(cls):
        if f.name == "event_id":
            continue
        if f.metadata.get("part"):
            out.extend(typing.get_type_hints(hints[f.name]).items())
        else:
            out.append((f.name.removesuffix("_"), hints[f.name]))
    return out


def event_types(root: type[Event] = Event) -> list[type[Event]]:
    """Every event type defined so far (the imported modules' subclasses with an EVENT)."""
    found: list[type[Event]] = []
    for sub in root.__subclasses__():
        if "__slots__" not in sub.__dict__:
            continue  # the class dataclass(slots=True) replaced (until it is collected)
        if sub.EVENT:
            found.append(sub)
        found.extend(event_types(sub))
    return found
