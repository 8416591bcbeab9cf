"""The recording ``Recorder``: prometheus_client metrics fed by the daemons' call sites.

Most metrics are derived from the events the sink took (``event_written``), so that what
Prometheus counts and what the SIEM receives cannot drift apart: a report's sessions are
counted when its ``tlsrpt.policy`` and ``tlsrpt.failure`` events are written, once per
event (an event written again after a crash is counted again, as the SIEM sees it again).

Increments from events are gathered in a dict and applied to the prometheus_client metrics in
one go (``flush``): at the end of each stage 2 batch, after each milter message, at scrape
time in a one-process daemon, and at the latest a second after the previous flush. A
metric's ``labels()`` and ``inc()`` take locks and, under ``serve``, write to a shared file;
a dict update does not (bench/metrics_bench.py).

Every label whose values come from outside (organisation names, map names, domains) is
bounded by ``Capped``: the first ``max_label_values`` distinct values, then ``other``.
"""

from __future__ import annotations

import bisect
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from tlsrpt_lmtp.metrics import Recorder
from tlsrpt_lmtp.metrics.config import MetricsConfig
from tlsrpt_lmtp.metrics.labels import (
    OTHER,
    POLICY_TYPES,
    RESULT_TYPES,
    Capped,
    quarantine_class,
)
from tlsrpt_lmtp.metrics.policy import PolicyRequests

if TYPE_CHECKING:
    from tlsrpt_lmtp.ingest.pipeline import IngestResult
    from tlsrpt_lmtp.store.base import Pending
    from tlsrpt_lmtp.sts.reply import Answer

FLUSH_SECONDS = 1.0
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


Pending_ = dict[tuple[Any, tuple[str, ...]], float]
Handler = Callable[[dict[str, Any], Pending_], None]


def _bump(pending: Pending_, key: tuple[Any, tuple[str, ...]], amount: float = 1.0) -> None:
    pending[key] = pending.get(key, 0.0) + amount


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe`` for many values with one update per bucket: under ``serve`` each
    update is a locked write to a shared file. Uses the client's bucket counters (stable
    for years; if they change, falls back to one observe per value)."""
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or bounds is None or total is None or len(buckets) != len(bounds):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    for bucket, n in zip(buckets, counts, strict=True):
        if n:
            bucket.inc(n)
    if values:
        total.inc(sum(values))


class PromRecorder(Recorder):
    enabled = True

    def __init__(
        self,
        config: MetricsConfig,
        registry: CollectorRegistry | None,
        *,
        clock: Callable[[], float] = time.time,
        policy: bool = False,
    ) -> None:
        self.config = config
        self._clock = clock
        self._pending: dict[tuple[Any, tuple[str, ...]], float] = {}
        self._gauges: dict[tuple[Any, tuple[str, ...]], float] = {}
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._lock = threading.Lock()
        self._flushed = time.monotonic()
        if registry is not None:
            registry.register(_Flusher(self))  # first: flushed before the others are read
        self._domains = tuple(d.lower() for d in config.domains)
        limit = config.max_label_values
        self._org = Capped(limit)
        self._domain = Capped(limit)
        self._rule = Capped(limit)
        r = registry
        self.received = Counter(
            "tlsrpt_intake_messages_received",
            "Messages handed to an intake",
            ["intake"],
            registry=r,
        )
        self.archived = Counter(
            "tlsrpt_intake_messages_archived",
            "Messages archived and acknowledged (250)",
            ["intake"],
            registry=r,
        )
        self.refused = Counter(
            "tlsrpt_intake_messages_refused",
            "Messages answered 451 (not archived, or events not written)",
            ["intake"],
            registry=r,
        )
        self.events = Counter("tlsrpt_events", "Events the sink took", ["event"], registry=r)
        self.reports = Counter(
            "tlsrpt_reports", "Reports by outcome (stored or duplicate)", ["outcome"], registry=r
        )
        self.quarantined = Counter(
            "tlsrpt_quarantined",
            "tlsrpt.invalid events (messages or reports kept in quarantine) by reason class",
            ["reason"],
            registry=r,
        )
        self.dkim = Counter(
            "tlsrpt_dkim_verdicts", "DKIM verdicts of report mail", ["result"], registry=r
        )
        self.sessions = Counter(
            "tlsrpt_sessions",
            "TLS sessions the reports describe, from the policy summaries",
            ["policy_type", "result", "domain"],
            registry=r,
        )
        self.failed = Counter(
            "tlsrpt_failed_sessions",
            "Failed TLS sessions from the failure details, by RFC 8460 result type",
            ["policy_type", "result_type", "domain"],
            registry=r,
        )
        self.last_report = Gauge(
            "tlsrpt_last_report_timestamp_seconds",
            "When the last new report of an organisation was written (Unix time)",
            ["organization"],
            registry=r,
            multiprocess_mode="max",
        )
        self.alerts = Counter("tlsrpt_alerts", "Alerts raised", ["severity", "rule"], registry=r)
        self.processed = Counter(
            "tlsrpt_stage2_messages",
            "Messages stage 2 finished, by status (report or invalid)",
            ["status"],
            registry=r,
        )
        self.latency = Histogram(
            "tlsrpt_stage2_latency_seconds",
            "From archiving a message to its events written",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._dispatch: dict[str, tuple[Any, Handler | None]] = {}
        self._handlers: dict[str, Handler] = {
            "tlsrpt.report": self._report,
            "tlsrpt.policy": self._policy,
            "tlsrpt.failure": self._failure,
            "tlsrpt.invalid": self._invalid,
            "tlsrpt.alert": self._alert,
        }
        self.requests = PolicyRequests(limit)
        # The hot path of the policy daemon: one call less (the adapters call this per request).
        self.policy_answer = self.requests.add  # type: ignore[method-assign]
        if policy:
            if r is not None:
                r.register(self.requests)
            refresh_failures = Counter(
                "tlsrpt_policy_refresh_failures",
                "Proactive policy refreshes that failed (sts.refresh_failed)",
                registry=r,
            )
            self._handlers["sts.refresh_failed"] = lambda _, pending: _bump(
                pending, (refresh_failures, ())
            )
        self._event_names = Capped(64)

    # --- intake ---------------------------------------------------------------------------

    def intake(self, intake: str, accepted: bool) -> None:
        self._child((self.received, (intake,))).inc()
        self._child((self.archived if accepted else self.refused, (intake,))).inc()

    @contextlib.contextmanager
    def intake_of(self, intake: str) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.intake(intake, False)
            raise
        finally:
            self.flush()
        self.intake(intake, True)

    # --- batching -------------------------------------------------------------------------

    def _child(self, key: tuple[Any, tuple[str, ...]]) -> Any:
        child = self._children.get(key)
        if child is None:
            metric, labels = key
            child = self._children[key] = metric.labels(*labels) if labels else metric
        return child

    def flush(self) -> None:
        """Apply the gathered increments to the metrics."""
        with self._lock:
            pending, self._pending = self._pending, {}
            gauges, self._gauges = self._gauges, {}
            self._flushed = time.monotonic()
        for key, amount in pending.items():
            if amount:
                self._child(key).inc(amount)
        for key, value in gauges.items():
            self._child(key).set(value)

    # --- events ---------------------------------------------------------------------------

    def event_written(self, event: dict[str, Any]) -> None:
        """Count one event the sink took. Never raises: metrics must not stop delivery."""
        try:
            name = event.get("event")
            entry = self._dispatch.get(name) if isinstance(name, str) else None
            if entry is None:
                entry = self._dispatch_entry(name)
            key, handler = entry
            with self._lock:  # alert delivery threads write events too
                pending = self._pending
                pending[key] = pending.get(key, 0.0) + 1
                if handler is not None:
                    handler(event, pending)
            if time.monotonic() - self._flushed >= FLUSH_SECONDS:
                self.flush()
        except Exception as exc:  # a bug here must cost a count, never an event
            print(f"tlsrpt-lmtp: metrics: {exc!r}", file=sys.stderr, flush=True)

    def _dispatch_entry(self, name: object) -> tuple[Any, Handler | None]:
        entry = (
            (self.events, (self._event_names(name),)),
            (self._handlers.get(name) if isinstance(name, str) else None),
        )
        if isinstance(name, str) and len(self._dispatch) < 64:
            self._dispatch[name] = entry
        return entry

    # The handlers run under the lock and add to ``pending``: (metric, labels) → amount.

    def _report(self, e: dict[str, Any], pending: Pending_) -> None:
        duplicate = e.get("duplicate") is True
        _bump(pending, (self.reports, ("duplicate" if duplicate else "stored",)))
        self._dkim(e, pending)
        if not duplicate:
            org = self._org(e.get("organization_name") or "")
            self._gauges[(self.last_report, (org,))] = self._clock()

    def _dkim(self, e: dict[str, Any], pending: Pending_) -> None:
        result = e.get("dkim_result")
        if isinstance(result, str):
            _bump(pending, (self.dkim, (result if len(result) <= 16 else OTHER,)))

    # _policy and _failure run for most events: written for speed (bench/metrics_bench.py).

    def _policy(self, e: dict[str, Any], pending: Pending_) -> None:
        ptype = e.get("policy_type")
        ptype = ptype if ptype in POLICY_TYPES else OTHER
        domain = self.domain_label(e.get("policy_domain")) if self._domains else ""
        success = e.get("total_successful_session_count")
        if type(success) is int and success > 0:
            key = (self.sessions, (ptype, "success", domain))
            pending[key] = pending.get(key, 0.0) + success
        failure = e.get("total_failure_session_count")
        if type(failure) is int and failure > 0:
            key = (self.sessions, (ptype, "failure", domain))
            pending[key] = pending.get(key, 0.0) + failure

    def _failure(self, e: dict[str, Any], pending: Pending_) -> None:
        failed = e.get("failed_session_count")
        if type(failed) is not int or failed <= 0:
            return
        ptype, rt = e.get("policy_type"), e.get("result_type")
        labels = (
            ptype if ptype in POLICY_TYPES else OTHER,
            rt if rt in RESULT_TYPES else OTHER,
            self.domain_label(e.get("policy_domain")) if self._domains else "",
        )
        key = (self.failed, labels)
        pending[key] = pending.get(key, 0.0) + failed

    def _invalid(self, e: dict[str, Any], pending: Pending_) -> None:
        _bump(pending, (self.quarantined, (quarantine_class(str(e.get("reason") or "")),)))
        self._dkim(e, pending)

    def _alert(self, e: dict[str, Any], pending: Pending_) -> None:
        severity = e.get("severity")
        sev = severity if severity in ("info", "warning", "critical") else OTHER
        _bump(pending, (self.alerts, (sev, self._rule(e.get("rule") or ""))))

    def domain_label(self, domain: object) -> str:
        """The policy domain when it is one of ``[metrics] domains`` (or under one), else
        ``other``; empty when no domain is configured (the label is then left out)."""
        if not self._domains:
            return ""
        if not isinstance(domain, str):
            return OTHER
        for own in self._domains:
            if domain == own or domain.endswith("." + own):
                return self._domain(domain)
        return OTHER

    # --- stage 2 --------------------------------------------------------------------------

    def stage2_done(self, items: Sequence[Pending], results: Sequence[IngestResult]) -> None:
        try:
            self._stage2_done(items, results)
        except Exception as exc:  # never stop stage 2 for a count
            print(f"tlsrpt-lmtp: metrics: {exc!r}", file=sys.stderr, flush=True)

    def _stage2_done(self, items: Sequence[Pending], results: Sequence[IngestResult]) -> None:
        now = datetime.now(UTC)
        latencies = []
        for item in items:
            try:
                received = datetime.fromisoformat(item.received_at.replace("Z", "+00:00"))
            except ValueError:
                continue
            latencies.append(max((now - received).total_seconds(), 0.0))
        observe_many(self.latency, latencies)
        valid = sum(1 for result in results if result.valid)
        with self._lock:
            _bump(self._pending, (self.processed, ("report",)), valid)
            _bump(self._pending, (self.processed, ("invalid",)), len(results) - valid)
        self.flush()

    # --- policy daemon --------------------------------------------------------------------

    def policy_answer(
        self, map_name: str, answer: Answer, enforce_testing: bool, hit: bool
    ) -> None:
        self.requests.add(map_name, answer, enforce_testing, hit)


class _Flusher(Collector):
    """Registered first in a one-process daemon's registry: a scrape sees every event."""

    def __init__(self, recorder: PromRecorder) -> None:
        self._recorder = recorder

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        self._recorder.flush()
        return []
