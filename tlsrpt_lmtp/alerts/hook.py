"""``build_hook``: the alerts as a pipeline hook, ``(Report, MailMeta, archive_id) -> events``.

Wiring (tlsrpt_lmtp/cli.py, serve)::

    from tlsrpt_lmtp.alerts.hook import build_hook
    hook = build_hook(args.config, pipeline.store, emitter)    # may raise ConfigError
    pipeline.hooks.append(hook)
    ...
    hook.close()                                                # after the server stopped

The hook never raises (a bug in alerting must not turn a delivery into a 451): it logs and
returns no event. Webhook and mail go through bounded queues in background threads. Which
reports may alert, and how many alerts, is guard.py's: the hook takes the report's DKIM
verdict as an optional ``dkim`` argument (``require_dkim_aligned`` and the per-period buckets
need it; without it a report counts as not DKIM-aligned).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tlsrpt_lmtp.alerts.config import SEVERITIES, AlertsConfig, load_alerts
from tlsrpt_lmtp.alerts.events import AlertRaised, AlertUndelivered
from tlsrpt_lmtp.alerts.guard import Held, bucket, by_priority, held_event, screen, summary_event
from tlsrpt_lmtp.alerts.mail import Mailer
from tlsrpt_lmtp.alerts.outbox import Outbox, Payload
from tlsrpt_lmtp.alerts.rules import Alert, evaluate
from tlsrpt_lmtp.alerts.state import (
    FIRST_OVER_BUDGET,
    HELD_REPEAT,
    AlertState,
    Budget,
    period_start,
)
from tlsrpt_lmtp.alerts.webhook import Webhook
from tlsrpt_lmtp.config import ConfigError
from tlsrpt_lmtp.core.events import Event, ReportRef, iso, report_ref, stamp
from tlsrpt_lmtp.core.model import MailMeta, Report
from tlsrpt_lmtp.store import DB_NAME, Store

if TYPE_CHECKING:
    from tlsrpt_lmtp.core.dkim import DkimVerdict

log = logging.getLogger("tlsrpt_lmtp.alerts")

Emit = Callable[[Event], None]
Clock = Callable[[], datetime]


def alert_event(
    alert: Alert, report: Report, archive_id: str, *, source: str, repeats_suppressed: int = 0
) -> AlertRaised:
    """A tlsrpt.alert event: the common fields of every event, then the alert's."""
    return AlertRaised(
        report=report_ref(report, archive_id, source),
        severity=alert.severity,
        rule=alert.rule,
        rules=tuple(alert.rules),
        domain=alert.domain,
        result_type=alert.result_type,
        message=alert.message,
        failed_session_count=alert.failed_session_count,
        receiving_mx=tuple(alert.receiving_mx),
        policy_type=alert.policy_type or None,
        policy_mode=alert.policy_mode,
        failure_reason_codes=tuple(alert.reasons),
        repeats_suppressed=repeats_suppressed,
    )


class AlertHook:
    """Callable as a pipeline ReportHook; ``close()`` when the server stops."""

    def __init__(
        self,
        config: AlertsConfig,
        state: AlertState | None,
        emit: Emit,
        *,
        clock: Clock,
        source: str,
    ) -> None:
        self.config = config
        self.state = state
        self.emit = emit
        self.clock = clock
        self.source = source
        self.outboxes: list[tuple[Outbox, str]] = []
        if config.enabled and config.webhook_url:
            hook = Webhook(
                config.webhook_url,
                timeout=config.webhook_timeout,
                retries=config.webhook_retries,
                backoff=config.webhook_backoff,
                headers=config.webhook_headers,
            )
            box = Outbox("webhook", hook.deliver, size=config.queue_size, on_drop=self._dropped)
            self.outboxes.append((box, config.webhook_min_severity))
        if config.enabled and config.mail_to:
            mailer = Mailer(
                config.sendmail,
                to=config.mail_to,
                sender=config.mail_from,
                timeout=config.mail_timeout,
            )
            box = Outbox("mail", mailer.deliver, size=config.queue_size, on_drop=self._dropped)
            self.outboxes.append((box, config.mail_min_severity))

    def __call__(
        self, report: Report, meta: MailMeta, archive_id: str, dkim: DkimVerdict | None = None
    ) -> list[Event]:
        if not self.config.enabled or self.state is None:
            return []
        try:
            return self._alerts(report, archive_id, dkim)
        except Exception:
            log.exception("alert evaluation failed for report %r", report.report_id)
            return []

    def _alerts(self, report: Report, archive_id: str, dkim: DkimVerdict | None) -> list[Event]:
        assert self.state is not None
        config = self.config
        screened = screen(report, config, dkim)
        held = Held(screened.not_ours, screened.not_aligned)
        events: list[Event] = []
        if screened.report.policies:
            candidates = evaluate(screened.report, self.state.history(screened.report), config)
            now = self.clock()
            start = period_start(now, config.alert_period)
            budget = Budget(bucket(dkim), start, config.max_alerts_per_period)
            first_over = False
            for alert in by_priority(candidates):
                if len(events) >= config.max_alerts_per_report:
                    held.over_report_cap.append(alert)
                    continue
                if held.over_period_cap:  # the budget is spent: no need to ask again
                    held.over_period_cap.append(alert)
                    continue
                outcome = self.state.claim_within(alert, now, config.repeat_window, budget)
                if outcome == HELD_REPEAT:
                    continue
                if isinstance(outcome, str):  # OVER_BUDGET or FIRST_OVER_BUDGET
                    held.over_period_cap.append(alert)
                    first_over = first_over or outcome == FIRST_OVER_BUDGET
                    continue
                event = alert_event(
                    alert, report, archive_id, source=self.source, repeats_suppressed=outcome
                )
                events.append(self._queue(event, now))
            # One summary per cap reached: per report while alerts still go out, per period
            # (and bucket) the first time it holds one back.
            if (held.over_report_cap and events) or first_over:
                kind = "DKIM-aligned" if budget.bucket == "dkim-aligned" else "not DKIM-aligned"
                summary = summary_event(
                    report,
                    archive_id,
                    self.source,
                    held,
                    config,
                    kind=kind,
                    period_end=start + config.alert_period,
                )
                events.append(self._queue(summary, now))
        if held:
            events.append(held_event(report, archive_id, self.source, held, dkim))
        return events

    def _queue(self, event: AlertRaised, now: datetime) -> AlertRaised:
        """Hand the alert to the delivery channels its severity reaches; returns it, with the
        event_id the event log will show (so a webhook receiver can match the two)."""
        (event,) = stamp(
            [event],
            event.report.archive_id,
            event.report.report_id,
            event.rule,
            event.domain,
            event.result_type,
        )
        self.deliver(event, now)
        return event

    def deliver(self, event: AlertRaised, now: datetime) -> None:
        """Queue ``event`` on the channels its severity reaches (its JSON object, with the
        time it was raised)."""
        payload: Payload = event.to_dict(iso(now))
        severity = SEVERITIES.index(event.severity)
        for box, minimum in self.outboxes:
            if severity >= SEVERITIES.index(minimum):
                box.put(payload)

    def _dropped(self, channel: str, payload: Payload, reason: str) -> None:
        log.warning(
            "alert for %s (%s) not delivered by %s: %s",
            payload.get("domain"),
            payload.get("result_type") or payload.get("rule"),
            channel,
            reason,
        )
        try:
            self.emit(
                AlertUndelivered(
                    report=ReportRef(
                        payload.get("report_id"),
                        payload.get("organization_name"),
                        payload.get("date_range_start"),
                        payload.get("date_range_end"),
                        payload.get("archive_id"),
                        str(payload.get("source", "")),
                    ),
                    severity=payload.get("severity", ""),
                    rule=payload.get("rule", ""),
                    domain=payload.get("domain"),
                    result_type=payload.get("result_type"),
                    channel=channel,
                    reason=reason,
                )
            )
        except Exception:
            log.exception("cannot log the undelivered alert")

    def join(self, timeout: float = 10.0) -> bool:
        """Wait until every queued alert is delivered or given up (tests, shutdown)."""
        return all(box.join(timeout) for box, _ in self.outboxes)

    def close(self, timeout: float = 5.0) -> None:
        for box, _ in self.outboxes:
            box.close(timeout)
        if self.state is not None:
            self.state.close()


def build_hook(
    config_path: Path | None,
    store: Path | Store,
    emit: Emit,
    *,
    clock: Clock | None = None,
    source: str = "lmtp",
) -> AlertHook:
    """Read [alerts] from ``config_path`` (None: the defaults) and keep the alert state in
    ``store`` (or in the SQLite store of that data directory). Raises ConfigError for a bad
    [alerts] table or a missing sendmail."""
    return hook_from_config(load_alerts(config_path), store, emit, clock=clock, source=source)


def hook_from_config(
    config: AlertsConfig,
    store: Path | Store,
    emit: Emit,
    *,
    clock: Clock | None = None,
    source: str = "lmtp",
) -> AlertHook:
    """``build_hook`` for an [alerts] table already read (stage 2 gets it from ``serve``)."""
    check_sendmail(config)
    if isinstance(store, Path):
        store = store / DB_NAME
    state = AlertState(store) if config.enabled else None
    return AlertHook(config, state, emit, clock=clock or (lambda: datetime.now(UTC)), source=source)


def check_sendmail(config: AlertsConfig) -> None:
    """ConfigError when alerts are to be mailed and ``sendmail`` is not a program."""
    if config.enabled and config.mail_to and not _executable(config.sendmail):
        raise ConfigError(
            f"[alerts] sendmail: {config.sendmail!r} is not an executable program"
            ' (set sendmail = "/path/to/sendmail" or remove mail_to)'
        )


def _executable(program: str) -> bool:
    if os.sep in program:
        return os.access(program, os.X_OK) and Path(program).is_file()
    return shutil.which(program) is not None
