"""Read a large report body as a stream, in bounded memory (sans-I/O: chunks in, a doc out).

``orjson.loads`` builds the whole document: up to ~25 times its size in Python objects (a
``{}`` costs 3 bytes of JSON and 64 of memory), and a report of a million failure details
would become a million dicts. Large bodies are read here instead, through ijson's push parser
(the yajl C backend, fed chunk by chunk as they are decompressed), with a builder that keeps
only what the report parser reads:

- keys the parser does not know are skipped without building their values;
- the items of ``failure-details`` arrays are handed to a callback one by one, never kept
  (their array becomes ``STREAMED``);
- other arrays keep at most ``MAX_LIST_ITEMS + 1`` items (the parser sees there were more),
  a value that should be a scalar but is a container becomes ``SKIPPED``, more than
  ``MAX_POLICIES`` policies or nesting deeper than ``MAX_DEPTH`` stop the parse.

So memory is bounded by the chunk size, the longest string and the kept items, whatever the
body. ijson refuses what orjson's fallback (the stdlib) would read: integers of 2**63 and
more, floats beyond 1.8e308, lone surrogates written as escapes, non-UTF-8 encodings. A body
read this way (larger than 8 MiB or dense with objects) with one of those is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ijson

MAX_LIST_ITEMS = 256
MAX_POLICIES = 1000
MAX_DEPTH = 64


class StreamError(ValueError):
    """The body cannot be read; the message says why."""


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


STREAMED = _Marker("STREAMED")  # a failure-details array whose items went to the callback
SKIPPED = _Marker("SKIPPED")  # a container where the parser only reads scalars


class Node:
    """What the parser reads at one place: a scalar (``keys`` None) or an object's keys."""

    __slots__ = ("keys", "max_items", "stream", "too_many")

    def __init__(
        self,
        keys: dict[str, Node] | None = None,
        *,
        stream: bool = False,
        max_items: int = MAX_LIST_ITEMS + 1,
        too_many: str | None = None,
    ) -> None:
        self.keys = keys
        self.stream = stream
        self.max_items = max_items
        self.too_many = too_many  # raise this instead of dropping items past max_items


def report_schema(detail_keys: Iterable[str]) -> tuple[Node, Node]:
    """The root node of a report and the node of its policies entries."""
    scalar = Node()
    detail = Node(dict.fromkeys(detail_keys, scalar), stream=True)
    policy = Node(
        dict.fromkeys(
            ("policy-type", "policy-string", "policy-domain", "mx-host", "mx-host-pattern"),
            scalar,
        )
    )
    summary = Node(
        dict.fromkeys(("total-successful-session-count", "total-failure-session-count"), scalar)
    )
    entry = Node(
        {"policy": policy, "summary": summary, "failure-details": detail},
        max_items=MAX_POLICIES,
        too_many=f"report has more than {MAX_POLICIES} policies",
    )
    date_range = Node(dict.fromkeys(("start-datetime", "end-datetime"), scalar))
    root = Node(
        {
            "organization-name": scalar,
            "contact-info": scalar,
            "report-id": scalar,
            "date-range": date_range,
            "policies": entry,
        }
    )
    return root, entry


class _Frame:
    __slots__ = ("child", "count", "is_list", "key", "node", "value")

    def __init__(self, node: Node, value: Any, is_list: bool) -> None:
        self.node = node
        self.value = value
        self.is_list = is_list
        self.key = ""
        self.child: Node | None = None
        self.count = 0


_NO_DUPLICATES = frozenset({"policies", "failure-details"})


class Builder:
    """Turns ijson basic events into the parts of the document the schema names."""

    def __init__(self, root: Node, entry: Node, on_item: Callable[[int, Any], None]) -> None:
        self.root = root
        self.entry = entry
        self.on_item = on_item
        self.stack: list[_Frame] = []
        self.skip = 0
        self.policy_index = 0
        self.result: Any = SKIPPED
        self.done = False
        # The item being built in a streamed array (flat: its keys are all scalars). The
        # hot path of a million-detail report, so it bypasses the frames.
        self.flat: dict[str, Any] | None = None
        self.flat_keys: dict[str, Node] = {}
        self.flat_key = ""

    def feed(self, events: Iterable[tuple[str, Any]]) -> None:
        stack = self.stack
        for ev, val in events:
            if self.skip:
                if ev == "start_map" or ev == "start_array":
                    self.skip += 1
                    if self.skip + len(stack) + 1 > MAX_DEPTH:
                        raise StreamError("report body is nested too deeply")
                elif ev == "end_map" or ev == "end_array":
                    self.skip -= 1
                continue
            flat = self.flat
            if flat is not None:
                if ev == "map_key":
                    self.flat_key = val
                elif ev == "end_map":
                    self.flat = None
                    self.on_item(self.policy_index, flat)
                elif ev == "start_map" or ev == "start_array":
                    if self.flat_key in self.flat_keys:
                        flat[self.flat_key] = SKIPPED
                    self._skip_container()
                elif self.flat_key in self.flat_keys:
                    flat[self.flat_key] = val
                continue
            if ev == "map_key":
                top = stack[-1]
                top.key = val
                top.child = top.node.keys.get(val) if top.node.keys else None
                continue
            if ev == "end_map" or ev == "end_array":
                done = stack.pop()
                self._put(STREAMED if done.node.stream and done.is_list else done.value)
                continue
            in_list = False
            if stack:
                top = stack[-1]
                in_list = top.is_list
                node = top.node if in_list else top.child
                if node is None:  # a key the parser does not read
                    if ev == "start_map" or ev == "start_array":
                        self._skip_container()
                    continue
            else:
                node = self.root
            if ev == "start_map":
                if node.keys is None:
                    self._put(SKIPPED)
                    self._skip_container()
                    continue
                if node is self.entry:
                    self.policy_index = stack[-1].count if in_list else 0
                if in_list and node.stream:
                    self.flat = {}
                    self.flat_keys = node.keys or {}
                    continue
                self._push(_Frame(node, {}, False))
            elif ev == "start_array":
                if in_list or not stack:
                    if not stack:
                        raise StreamError("report is a JSON list, not an object")
                    self._put(SKIPPED)
                    self._skip_container()
                    continue
                self._push(_Frame(node, [], True))
            else:
                self._put(val)

    def _push(self, frame: _Frame) -> None:
        self.stack.append(frame)
        if len(self.stack) > MAX_DEPTH:
            raise StreamError("report body is nested too deeply")

    def _skip_container(self) -> None:
        self.skip = 1
        if len(self.stack) + 2 > MAX_DEPTH:
            raise StreamError("report body is nested too deeply")

    def _put(self, value: Any) -> None:
        if not self.stack:
            self.result = value
            self.done = True
            return
        top = self.stack[-1]
        if not top.is_list:
            if top.key in _NO_DUPLICATES and top.key in top.value:
                raise StreamError(f"report has the key {top.key!r} twice in one object")
            top.value[top.key] = value
            return
        if top.node.stream:
            self.on_item(self.policy_index, value)
            return
        top.count += 1
        if top.count > top.node.max_items:
            if top.node.too_many:
                raise StreamError(top.node.too_many)
            return
        top.value.append(value)


def load(
    chunks: Iterator[bytes], root: Node, entry: Node, on_item: Callable[[int, Any], None]
) -> Any:
    """The document read from ``chunks`` (UTF-8 JSON, BOM already removed).

    Raises StreamError for a body that is not JSON or breaks a bound; whatever the chunk
    iterator raises (a decompression error) passes through unchanged.
    """
    builder = Builder(root, entry, on_item)
    events = ijson.sendable_list()
    coro = ijson.basic_parse_coro(events, use_float=True)
    for chunk in chunks:
        _send(coro, chunk)
        builder.feed(events)
        del events[:]
    _send(coro, None)
    builder.feed(events)
    if not builder.done:
        raise StreamError("report body is not JSON: it ends too early")
    return builder.result


def _send(coro: Any, chunk: bytes | None) -> None:
    try:
        if chunk is None:
            coro.close()
        else:
            coro.send(chunk)
    except (ijson.JSONError, UnicodeDecodeError, ValueError, OverflowError) as exc:
        text = " ".join(str(exc).split())[:200]
        raise StreamError(f"report body is not JSON: {text}") from None
