"""Where events go: JSON lines (stdout or a file) or syslog, through a structlog pipeline.

The processors are small and ordered: add the schema version, add a UTC timestamp, put the
stable keys first, render JSON. The sink only writes the rendered line.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Protocol, TextIO

import orjson
import structlog

from tlsrpt_lmtp import metrics
from tlsrpt_lmtp.core.events import SCHEMA, Event
from tlsrpt_lmtp.output import ecs
from tlsrpt_lmtp.output.syslog import SyslogOptions, SyslogWriter

_FIRST = ("schema", "event", "event_id", "timestamp")


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
# --log-format ecs: the same event in Elastic Common Schema field names (ecs.py)
ECS_PROCESSORS: list[Any] = [*PROCESSORS[:2], ecs.processor, PROCESSORS[-1]]


class Writer(Protocol):
    def write_line(self, line: str) -> None: ...
    def close(self) -> None: ...


class StreamWriter:
    """One JSON object per line, written with one system call per event (no buffer that
    could hold half an event): a SIEM shipper sees it at once, and a write that fails raises.

    On a regular file a failed write is undone (the file is cut back to where the event
    began), so a full disk never leaves half a line that the retry would follow."""

    def __init__(self, fd: int, *, owned: bool) -> None:
        self._fd = fd
        self._owned = owned
        self._regular = stat.S_ISREG(os.fstat(fd).st_mode)
        self._lock = threading.Lock()

    @classmethod
    def open(cls, target: str) -> Writer:
        if target in ("-", "stdout"):
            try:
                fd = sys.stdout.fileno()
            except (AttributeError, ValueError, io.UnsupportedOperation):
                return _TextWriter(sys.stdout)  # stdout replaced in-process (tests, embedding)
            sys.stdout.flush()
            return cls(fd, owned=False)
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        return cls(fd, owned=True)

    def write_line(self, line: str) -> None:
        data = (line + "\n").encode()
        with self._lock:
            written = 0
            try:
                while written < len(data):
                    written += os.write(self._fd, data[written:])
            except OSError:
                if self._regular and written:  # O_APPEND: this event's bytes end the file
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
                raise

    def flush(self) -> None:
        """Every line is in the kernel already; a file is not fsynced per event."""

    def close(self) -> None:
        if self._owned:
            os.close(self._fd)


class _TextWriter:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write_line(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Not ours to close."""


class _Logger:
    """The structlog 'logger': receives the rendered line."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    def msg(self, line: str) -> None:
        self._writer.write_line(line)

    info = warning = error = msg


class Emitter:
    """Callable that sends one event dict through the processors to the writer."""

    def __init__(self, writer: Writer, processors: list[Any] = PROCESSORS) -> None:
        self._writer = writer
        self._log = structlog.wrap_logger(
            _Logger(writer), processors=processors, cache_logger_on_first_use=True
        )

    def __call__(self, event: Event) -> None:
        """Render and write one event; raises OSError if the sink did not take it."""
        fields = event.to_dict()
        name = fields.pop("event")
        self._log.info(name, **fields)
        metrics.RECORDER.event_written({"event": name, **fields})

    def flush(self) -> None:
        flush = getattr(self._writer, "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        self._writer.close()


def open_emitter(log_format: str, target: str, *, syslog: SyslogOptions | None = None) -> Emitter:
    if log_format == "syslog":
        return Emitter(SyslogWriter(target, syslog))
    chain = ECS_PROCESSORS if log_format == "ecs" else PROCESSORS
    return Emitter(StreamWriter.open(target), chain)
