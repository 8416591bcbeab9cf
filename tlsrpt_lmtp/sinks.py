"""Where events go: JSON lines (stdout or a file) or syslog, through a structlog pipeline.

The processors are small and ordered: add the schema version, add a UTC timestamp, put the
stable keys first, render JSON. The sink only writes the rendered line.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Protocol, TextIO

import orjson
import structlog

from tlsrpt_lmtp.events import SCHEMA, Event
from tlsrpt_lmtp.syslog import SyslogOptions, SyslogWriter

_FIRST = ("schema", "event", "timestamp")


def _dumps(event: Any, **_: Any) -> str:
    # orjson writes UTF-8 as is (no \u escapes) and is several times faster than json.
    return orjson.dumps(event, default=str).decode()


def add_schema(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.setdefault("schema", SCHEMA)
    return event


def order_keys(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ordered = {k: event[k] for k in _FIRST if k in event}
    ordered.update((k, v) for k, v in event.items() if k not in ordered)
    return ordered


PROCESSORS: list[Any] = [
    add_schema,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    order_keys,
    structlog.processors.JSONRenderer(serializer=_dumps),
]


class Writer(Protocol):
    def write_line(self, line: str) -> None: ...
    def close(self) -> None: ...


class StreamWriter:
    """One JSON object per line, flushed per event so a SIEM shipper sees it at once."""

    def __init__(self, stream: TextIO, *, owned: bool) -> None:
        self._stream = stream
        self._owned = owned
        self._lock = threading.Lock()

    @classmethod
    def open(cls, target: str) -> StreamWriter:
        if target in ("-", "stdout"):
            return cls(sys.stdout, owned=False)
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path.open("a", encoding="utf-8"), owned=True)

    def write_line(self, line: str) -> None:
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._owned:
            self._stream.close()


class _Logger:
    """The structlog 'logger': receives the rendered line."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    def msg(self, line: str) -> None:
        self._writer.write_line(line)

    info = warning = error = msg


class Emitter:
    """Callable that sends one event dict through the processors to the writer."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._log = structlog.wrap_logger(
            _Logger(writer), processors=PROCESSORS, cache_logger_on_first_use=True
        )

    def __call__(self, event: Event) -> None:
        fields = dict(event)
        name = fields.pop("event")
        self._log.info(name, **fields)

    def close(self) -> None:
        self._writer.close()


def open_emitter(log_format: str, target: str, *, syslog: SyslogOptions | None = None) -> Emitter:
    if log_format == "syslog":
        return Emitter(SyslogWriter(target, syslog))
    return Emitter(StreamWriter.open(target))
