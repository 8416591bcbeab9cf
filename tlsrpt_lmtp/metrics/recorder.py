"""The recording ``Recorder``: prometheus_client metrics fed by the daemons' call sites.

Most metrics are derived from the events the sink took (``event_written``), so that what
Prometheus counts and what the SIEM receives cannot drift apart: a report's sessions are
counted when its ``tlsrpt.policy`` and ``tlsrpt.failure`` events are written, once per
event (an event written again after a crash is counted again, as the SIEM sees it again).

Every label whose values come from outside (organisation names, map names, domains) is
bounded by ``Capped``: the first ``max_label_values`` distinct values, then ``other``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from tlsrpt_lmtp.metrics import Recorder
from tlsrpt_lmtp.metrics.config import MetricsConfig

if TYPE_CHECKING:
    from tlsrpt_lmtp.archive import Pending
    from tlsrpt_lmtp.pipeline import IngestResult
    from tlsrpt_lmtp.sts.reply import Answer

OTHER = "other"
MAX_LABEL_LENGTH = 128
# RFC 8460 §4.3 result types and §4.2 policy types; anything else is counted as "other".
RESULT_TYPES = frozenset(
    {
        "starttls-not-supported",
        "certificate-host-mismatch",
        "certificate-expired",
        "certificate-not-trusted",
        "validation-failure",
        "tlsa-invalid",
        "dnssec-invalid",
        "dane-required",
        "sts-policy-fetch-error",
        "sts-policy-invalid",
        "sts-webpki-invalid",
    }
)
POLICY_TYPES = frozenset({"sts", "tlsa", "no-policy-found"})
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Capped:
    """A label's values: the first ``limit`` distinct ones as they are, then ``other``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        text = str(value)[:MAX_LABEL_LENGTH] if value is not None else ""
        if text in self._seen:
            return text
        with self._lock:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(text)
        return text


def quarantine_class(reason: str) -> str:
    """A ``tlsrpt.invalid`` reason → a small fixed set of classes (docs/metrics.md)."""
    low = reason.lower()
    for needle, cls in (
        ("[dkim policy enforce]", "dkim"),
        ("poison:", "poison"),
        ("internal error", "internal"),
        ("limit", "size"),
        ("no report attachment", "no_report"),
        ("not json", "not_json"),
        ("zip", "compression"),
        ("neither gzip", "compression"),
    ):
        if needle in low:
            return cls
    return "invalid_report"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


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
        self._domains = tuple(d.lower() for d in config.domains)
        limit = config.max_label_values
        self._org = Capped(limit)
        self._domain = Capped(limit)
        self._map = Capped(min(limit, 32))
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
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "tlsrpt.report": self._report,
            "tlsrpt.policy": self._policy,
            "tlsrpt.failure": self._failure,
            "tlsrpt.invalid": self._invalid,
            "tlsrpt.alert": self._alert,
        }
        self.requests = PolicyRequests()
        if policy:
            if r is not None:
                r.register(self.requests)
            refresh_failures = Counter(
                "tlsrpt_policy_refresh_failures",
                "Proactive policy refreshes that failed (sts.refresh_failed)",
                registry=r,
            )
            self._handlers["sts.refresh_failed"] = lambda _: refresh_failures.inc()
        self._event_names = Capped(64)

    # --- intake ---------------------------------------------------------------------------

    def intake(self, intake: str, accepted: bool) -> None:
        self.received.labels(intake).inc()
        (self.archived if accepted else self.refused).labels(intake).inc()

    @contextlib.contextmanager
    def intake_of(self, intake: str) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.intake(intake, False)
            raise
        self.intake(intake, True)

    # --- events ---------------------------------------------------------------------------

    def event_written(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        self.events.labels(self._event_names(name)).inc()
        handler = self._handlers.get(name) if isinstance(name, str) else None
        if handler is not None:
            handler(event)

    def _report(self, e: dict[str, Any]) -> None:
        duplicate = e.get("duplicate") is True
        self.reports.labels("duplicate" if duplicate else "stored").inc()
        self._dkim(e)
        if not duplicate:
            org = self._org(e.get("organization_name") or "")
            self.last_report.labels(org).set(self._clock())

    def _dkim(self, e: dict[str, Any]) -> None:
        result = e.get("dkim_result")
        if isinstance(result, str):
            self.dkim.labels(result if len(result) <= 16 else OTHER).inc()

    def _policy(self, e: dict[str, Any]) -> None:
        ptype, domain = self._policy_type(e), self.domain_label(e.get("policy_domain"))
        self.sessions.labels(ptype, "success", domain).inc(
            _count(e.get("total_successful_session_count"))
        )
        self.sessions.labels(ptype, "failure", domain).inc(
            _count(e.get("total_failure_session_count"))
        )

    def _failure(self, e: dict[str, Any]) -> None:
        rt = e.get("result_type")
        result_type = rt if rt in RESULT_TYPES else OTHER
        domain = self.domain_label(e.get("policy_domain"))
        self.failed.labels(self._policy_type(e), result_type, domain).inc(
            _count(e.get("failed_session_count"))
        )

    def _invalid(self, e: dict[str, Any]) -> None:
        self.quarantined.labels(quarantine_class(str(e.get("reason") or ""))).inc()
        self._dkim(e)

    def _alert(self, e: dict[str, Any]) -> None:
        severity = e.get("severity")
        sev = severity if severity in ("info", "warning", "critical") else OTHER
        self.alerts.labels(sev, self._rule(e.get("rule") or "")).inc()

    @staticmethod
    def _policy_type(e: dict[str, Any]) -> str:
        ptype = e.get("policy_type")
        return ptype if ptype in POLICY_TYPES else OTHER

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
        now = datetime.now(UTC)
        for item in items:
            try:
                received = datetime.fromisoformat(item.received_at.replace("Z", "+00:00"))
            except ValueError:
                continue
            self.latency.observe(max((now - received).total_seconds(), 0.0))
        for result in results:
            self.processed.labels("report" if result.valid else "invalid").inc()

    # --- policy daemon --------------------------------------------------------------------

    def policy_answer(
        self, map_name: str, answer: Answer, enforce_testing: bool, hit: bool
    ) -> None:
        self.requests.add(self._map(map_name), answer_label(answer, enforce_testing), hit)


def answer_label(answer: Answer, enforce_testing: bool) -> str:
    """What the MTA was told: ``secure`` (an enforced policy), ``notfound``, ``dane`` (left
    to the MTA's DANE) or ``temp``."""
    kind = str(answer.kind)
    if kind in ("dane", "temp"):
        return kind
    return "secure" if answer.enforced(enforce_testing=enforce_testing) else "notfound"


class PolicyRequests(Collector):
    """The policy daemon's hot path counts into a plain dict (one asyncio thread; an
    increment costs a dict update, not a lock), read at scrape time."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, str], int] = {}
        self._cache = [0, 0]  # misses, hits

    def add(self, map_name: str, answer: str, hit: bool) -> None:
        key = (map_name, answer)
        self._answers[key] = self._answers.get(key, 0) + 1
        self._cache[hit] += 1

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "tlsrpt_policy_requests", "Policy lookups answered", labels=["map", "answer"]
        )
        for (name, answer), n in sorted(dict(self._answers).items()):
            requests.add_metric([name, answer], n)
        misses, hits = self._cache
        yield requests
        yield CounterMetricFamily(
            "tlsrpt_policy_cache_hits", "Lookups answered from memory, without I/O", value=hits
        )
        yield CounterMetricFamily(
            "tlsrpt_policy_cache_misses", "Lookups that needed DNS, HTTPS or the disk", value=misses
        )
