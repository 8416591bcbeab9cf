"""Alerts by mail through the local submission program: ``sendmail -t -i``.

The recipients are in the To: header (``-t``); ``-i`` keeps a line with a single dot from
ending the message. Every header value is one cleaned line, so a report cannot inject
headers. What the report's sender wrote (organization, report id, reason codes) is shown
only as quoted data in labelled lines, bounded, never as part of a sentence.
"""

from __future__ import annotations

import email.policy
import email.utils
import socket
import subprocess
import threading
from email.message import EmailMessage

from tlsrpt_lmtp.alerts.advice import name, quoted, safe
from tlsrpt_lmtp.alerts.outbox import Payload

# (key, label, how): "name" shows a host name as is (else quoted), "data" always quotes:
# these values are the report sender's own text.
_BODY_FIELDS = (
    ("severity", "Severity", ""),
    ("rule", "Rule", ""),
    ("domain", "Domain", "name"),
    ("result_type", "Result type", "name"),
    ("failed_session_count", "Failed sessions", ""),
    ("held_count", "Alerts held back", ""),
    ("held_domains", "Their domains", "name"),
    ("receiving_mx", "Receiving MX", "name"),
    ("organization_name", "Reported by (as the report says)", "data"),
    ("report_id", "Report ID (as the report says)", "data"),
    ("failure_reason_codes", "Failure reason codes (as the report says)", "data"),
    ("date_range_start", "Period start", ""),
    ("date_range_end", "Period end", ""),
    ("archive_id", "Archived as", ""),
    ("repeats_suppressed", "Repeats held back before this one", ""),
)


def _shown(value: object, how: str) -> str:
    items = list(value) if isinstance(value, list | tuple) else [value]
    if how == "name":
        return ", ".join(name(safe(str(v), 100)) for v in items[:20])
    if how == "data":
        return ", ".join(quoted(str(v), 100) for v in items[:5])
    return safe(", ".join(map(str, items)), 300)


def default_sender() -> str:
    return f"tlsrpt-lmtp@{socket.getfqdn() or 'localhost'}"


class Mailer:
    def __init__(self, sendmail: str, *, to: tuple[str, ...], sender: str, timeout: float) -> None:
        self.sendmail = sendmail
        self.to = to
        self.sender = sender or default_sender()
        self.timeout = timeout

    def message(self, payload: Payload) -> bytes:
        msg = EmailMessage(policy=email.policy.default)
        severity = str(payload.get("severity", "")).upper()
        what = name(safe(str(payload.get("result_type") or payload.get("rule") or "alert"), 60))
        domain = payload.get("domain")
        where = f" {name(safe(str(domain), 100))}:" if domain else ":"
        msg["Subject"] = safe(f"[tlsrpt] {severity}{where} {what}", 150)
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = email.utils.make_msgid("tlsrpt-alert")
        msg["Auto-Submitted"] = "auto-generated"
        lines = [safe(str(payload.get("message", "")), 2000), ""]
        for key, label, how in _BODY_FIELDS:
            value = payload.get(key)
            if value not in (None, "", [], ()):
                lines.append(f"{label}: {_shown(value, how)}")
        lines += ["", "-- ", "tlsrpt-lmtp alerts ([alerts] in the config file)"]
        msg.set_content("\n".join(lines) + "\n")
        return msg.as_bytes()

    def deliver(self, payload: Payload, stop: threading.Event) -> str | None:
        try:
            done = subprocess.run(
                [self.sendmail, "-t", "-i"],
                input=self.message(payload),
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"{self.sendmail} did not finish within {self.timeout:g}s"
        except OSError as exc:
            return f"cannot run {self.sendmail}: {exc.strerror}"
        if done.returncode != 0:
            err = safe(done.stderr.decode("utf-8", "replace"), 300)
            return f"{self.sendmail} exited with {done.returncode}: {err}"
        return None
