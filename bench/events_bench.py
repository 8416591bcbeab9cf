"""The event sink's cost per event (issue 10): today's chain, structlog used as a processor
chain, and a direct renderer without structlog, for the json, ecs and syslog formats.

    .venv/bin/python -m bench.events_bench [--events N] [--repeat N]

Each row renders the same events (one report's: 1 ``tlsrpt.report``, 1 ``tlsrpt.policy``,
5 ``tlsrpt.failure``, stamped as the pipeline stamps them) from what the producer hands
over to the bytes the writer gets; the writer keeps only the last line, so no I/O is
measured (it is the same system call per event in every variant). Every variant's output is
checked to be the same JSON (time stamps aside) before anything is timed. A cell is the
best of ``--repeat`` runs of the process's CPU time (µs per event, lower is better): on a
shared machine the minimum is the run least disturbed by others.

- today: the dict the producers built, through structlog's ``wrap_logger`` with the
  hand-made logger shim and the processors add_schema, TimeStamper, order_keys (json and
  syslog) or the ECS mapping, and JSONRenderer (orjson), as sinks.py had it before the typed
  events; syslog adds the syslog message around the line (SyslogWriter.message).
- structlog chain: the typed event through structlog used for what it is for: the JSON
  object with its time stamp, the ECS mapping, the JSON renderer and the syslog renderer are
  processors in one configured chain, whose last processor's output the logger writes.
- direct: sinks.Emitter as it is now: the same steps as plain calls.
- built, stamped, checked (second table): what stage 2 pays for a report's events before
  any is written: the dicts and ``stamp`` as they were (kept here to compare), then
  ``orjson.dumps`` per event; against ``report_events`` with its ``EventIds`` and
  ``check_encodable`` now. For the sample report and for one with 10,000 failure details.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
import structlog

from tests.support.factories import detail, report_dict, sts_policy
from tlsrpt_lmtp.core.eventbase import SCHEMA
from tlsrpt_lmtp.core.events import (
    Event,
    EventIds,
    check_encodable,
    iso,
    report_events,
    stamp,
    submitter_of,
)
from tlsrpt_lmtp.core.model import MailMeta, Report
from tlsrpt_lmtp.core.report import parse_report
from tlsrpt_lmtp.output import ecs
from tlsrpt_lmtp.output.sinks import MAPPINGS, Emitter
from tlsrpt_lmtp.output.syslog import SyslogOptions, SyslogWriter

FORMATS = ("json", "ecs", "syslog")


class LastLine:
    """A sink Writer that keeps the last line (no I/O)."""

    def __init__(self) -> None:
        self.line: Any = ""

    def write_line(self, line: str) -> None:
        self.line = line

    def close(self) -> None:
        """Nothing to close."""

    # the structlog logger interface: the chain's output
    def msg(self, line: Any) -> None:
        self.line = line

    info = msg


def sample_report() -> Report:
    details = [detail(count=1 + i, sending_ip=f"192.0.2.{i + 1}") for i in range(5)]
    doc = report_dict(sts_policy("example.org", failure=15, details=details), report_id="b1")
    return parse_report(json.dumps(doc).encode())


META = MailMeta(from_="r@reporter.example", report_domain="example.org")


def sample_events() -> list[Event]:
    report = sample_report()
    made = report_events(report, META, archive_id="a" * 64, source="lmtp", duplicate=False)
    return stamp(made, "a" * 64, *report.dedup_key)


def syslog_writer() -> SyslogWriter:
    # a UDP target is never connected by .message(): nothing is sent
    return SyslogWriter("udp:127.0.0.1:9", SyslogOptions(format="rfc5424"))


# -- today: the chain sinks.py had before the typed events (kept here to compare) -----------

_FIRST = ("schema", "event", "event_id", "timestamp")


def _dumps(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def _add_schema(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.setdefault("schema", SCHEMA)
    return event


def _order_keys(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ordered = {k: event[k] for k in _FIRST if k in event}
    ordered.update((k, v) for k, v in event.items() if k not in ordered)
    return ordered


def _ecs_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return ecs.to_ecs(event)


_STAMPER = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
_JSON = structlog.processors.JSONRenderer(serializer=_dumps)
_TODAY = {
    "json": [_add_schema, _STAMPER, _order_keys, _JSON],
    "ecs": [_add_schema, _STAMPER, _ecs_processor, _JSON],
}


class _TodayLogger:
    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def msg(self, line: str) -> None:
        self._writer.write_line(line)

    info = msg


def today(fmt: str, sink: LastLine) -> Callable[[Any], None]:
    writer: Any = sink
    if fmt == "syslog":
        syslog = syslog_writer()

        class _Syslog:
            def write_line(self, line: str) -> None:
                sink.line = syslog.message(line)

        writer = _Syslog()
    log = structlog.wrap_logger(
        _TodayLogger(writer),
        processors=_TODAY.get(fmt, _TODAY["json"]),
        cache_logger_on_first_use=True,
    )

    def emit(event: dict[str, Any]) -> None:
        fields = dict(event)
        name = fields.pop("event")
        log.info(name, **fields)

    return emit


# -- structlog as a processor chain ---------------------------------------------------------


def structlog_chain(fmt: str, sink: LastLine) -> Callable[[Any], None]:
    from tlsrpt_lmtp.output.sinks import timestamp

    def as_object(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
        typed: Event = event_dict["event"]
        return typed.to_dict(timestamp())

    def ecs_mapping(_: Any, __: str, doc: MutableMapping[str, Any]) -> Any:
        return ecs.to_ecs(doc)

    def json_renderer(_: Any, __: str, doc: MutableMapping[str, Any]) -> Any:
        return orjson.dumps(doc, default=str).decode()

    syslog = syslog_writer()

    def syslog_renderer(_: Any, __: str, line: Any) -> Any:
        return syslog.message(line)

    processors: list[Any] = [as_object]
    if fmt == "ecs":
        processors.append(ecs_mapping)
    processors.append(json_renderer)
    if fmt == "syslog":
        processors.append(syslog_renderer)
    log = structlog.wrap_logger(sink, processors=processors, cache_logger_on_first_use=True)
    return log.info


# -- direct: sinks.Emitter ------------------------------------------------------------------


def direct(fmt: str, sink: LastLine) -> Callable[[Any], None]:
    if fmt != "syslog":
        return Emitter(sink, MAPPINGS[fmt])
    syslog = syslog_writer()

    class _Syslog:
        def write_line(self, line: str) -> None:
            sink.line = syslog.message(line)

        def close(self) -> None:
            """Nothing to close."""

    return Emitter(_Syslog())


VARIANTS: dict[str, Callable[[str, LastLine], Callable[[Any], None]]] = {
    "today (structlog + logger shim)": today,
    "structlog processor chain": structlog_chain,
    "direct (no structlog)": direct,
}


def _normal(out: Any) -> Any:
    text = out.decode() if isinstance(out, bytes) else str(out)
    text = re.sub(r'"(@?timestamp)":"[^"]*"', r'"\1":"T"', text)
    head, brace, body = text.partition("{")
    stamp_free = re.sub(r"^<22>1 \S+", "<22>1 T", head)
    return stamp_free + brace + json.dumps(json.loads(brace + body), sort_keys=False)


def _time(emit: Callable[[Any], None], events: list[Any], count: int) -> float:
    start = time.process_time()
    n = 0
    while n < count:
        for event in events:
            emit(event)
        n += len(events)
    return (time.process_time() - start) / n * 1e6


def _old_report_events(report: Report, meta: MailMeta, archive_id: str) -> list[dict[str, Any]]:
    """report_events as it was for dict events (kept here to compare), stamped by
    setdefault on each dict and checked with one orjson call per event."""
    common = {
        "report_id": report.report_id,
        "organization_name": report.organization_name,
        "date_range_start": iso(report.date_range_start),
        "date_range_end": iso(report.date_range_end),
        "archive_id": archive_id,
        "source": "lmtp",
    }
    events: list[dict[str, Any]] = [
        {
            "event": "tlsrpt.report",
            **common,
            "contact_info": report.contact_info,
            "report_domain": meta.report_domain,
            "submitter": submitter_of(report, meta),
            "policy_count": len(report.policies),
            "total_successful_session_count": report.total_successful_session_count,
            "total_failure_session_count": report.total_failure_session_count,
            "duplicate": False,
            "warnings": list(report.warnings),
            "dkim_result": None,
            "dkim_domain": None,
            "dkim_aligned": None,
            "dkim_reason": None,
        }
    ]
    for p in report.policies:
        events.append(
            {
                "event": "tlsrpt.policy",
                **common,
                "policy_type": p.policy_type,
                "policy_domain": p.policy_domain,
                "policy_string": list(p.policy_string),
                "mx_host": list(p.mx_host),
                "total_successful_session_count": p.total_successful_session_count,
                "total_failure_session_count": p.total_failure_session_count,
            }
        )
        events.extend(
            {
                "event": "tlsrpt.failure",
                **common,
                "policy_type": p.policy_type,
                "policy_domain": p.policy_domain,
                "result_type": d.result_type,
                "sending_mta_ip": d.sending_mta_ip,
                "receiving_mx_hostname": d.receiving_mx_hostname,
                "receiving_mx_helo": d.receiving_mx_helo,
                "receiving_ip": d.receiving_ip,
                "failed_session_count": d.failed_session_count,
                "additional_information": d.additional_information,
                "failure_reason_code": d.failure_reason_code,
            }
            for d in p.failure_details
        )
    base = "\x1f".join(str(part) for part in (archive_id, *report.dedup_key))
    for position, event in enumerate(events):
        digest = hashlib.blake2b(
            f"{base}\x1e{position}\x1e{event['event']}".encode("utf-8", "surrogatepass"),
            digest_size=16,
        )
        event.setdefault("event_id", digest.hexdigest())
    for event in events:
        orjson.dumps(event, default=str)
    return events


def _new_report_events(report: Report, meta: MailMeta, archive_id: str) -> list[Event]:
    """What the pipeline does now: report_events with its ids, then check_encodable."""
    ids = EventIds(archive_id, *report.dedup_key)
    events = report_events(
        report, meta, archive_id=archive_id, source="lmtp", duplicate=False, ids=ids
    )
    check_encodable(events)
    return events


def large_report(details: int) -> Report:
    made = [detail(count=1, sending_ip=f"192.0.2.{i % 250 + 1}") for i in range(details)]
    doc = report_dict(sts_policy("example.org", failure=details, details=made), report_id="b2")
    return parse_report(json.dumps(doc).encode())


def _time_build(
    report: Report,
    build: Callable[..., list[Any]],
    count: int,
    emit: Callable[[Any], None] | None = None,
) -> float:
    """µs per event to build, stamp and check a report's events (and write them: ``emit``)."""
    start = time.process_time()
    n = 0
    while n < count:
        events = build(report, META, "a" * 64)
        if emit is not None:
            for event in events:
                emit(event)
        n += len(events)
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs per cell (best is kept)")
    args = parser.parse_args()
    typed = sample_events()
    as_dicts = _old_report_events(sample_report(), META, "a" * 64)
    results: dict[tuple[str, str], float] = {}
    for fmt in FORMATS:
        for i, event in enumerate(typed):  # every variant writes the same
            outputs = {}
            for name, make in VARIANTS.items():
                sink = LastLine()
                make(fmt, sink)(as_dicts[i] if make is today else event)
                outputs[name] = _normal(sink.line)
            assert len(set(outputs.values())) == 1, (fmt, outputs)
        for _ in range(args.repeat):
            for name, make in VARIANTS.items():  # the variants take turns
                sink = LastLine()
                emit = make(fmt, sink)
                events: list[Any] = as_dicts if make is today else typed
                took = _time(emit, events, args.events)
                results[fmt, name] = min(results.get((fmt, name), took), took)
    builders = {"dicts (today)": _old_report_events, "typed (now)": _new_report_events}
    writers = {
        "dicts (today)": today("json", LastLine()),
        "typed (now)": direct("json", LastLine()),
    }
    reports = {
        "1 report, 1 policy, 5 failures": sample_report(),
        "10,000 failures": large_report(10_000),
    }
    build: dict[tuple[str, str], float] = {}
    for _ in range(args.repeat):
        for label, report in reports.items():
            for name, builder in builders.items():
                for written in (False, True):
                    emit = writers[name] if written else None
                    took = _time_build(report, builder, args.events, emit)
                    key = (label, name + (" + json" if written else ""))
                    build[key] = min(build.get(key, took), took)
    names = list(VARIANTS)
    print("| µs per event | " + " | ".join(names) + " | direct vs today |")
    print("|---|" + "---|" * (len(names) + 1))
    for fmt in FORMATS:
        cells = [f"{results[fmt, n]:.2f}" for n in names]
        ratio = results[fmt, names[0]] / results[fmt, names[-1]]
        print(f"| {fmt} | " + " | ".join(cells) + f" | {ratio:.1f}x faster |")
    print()
    columns = [n + w for w in ("", " + json") for n in builders]
    print(
        "| µs per event: built, stamped, checked (+ written as json) | "
        + " | ".join(columns)
        + " |"
    )
    print("|---|" + "---|" * len(columns))
    for label in reports:
        cells = " | ".join(f"{build[label, name]:.2f}" for name in columns)
        print(f"| {label} | {cells} |")


if __name__ == "__main__":
    main()
