"""What `tlsrpt-lmtp check` found: one finding per thing checked, with what to do about it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Severity(StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but should be changed
    ERROR = "error"  # senders will not report, not use the policy, or not deliver securely


class Check(StrEnum):
    """What a finding is about (stable names: scripts read them from --json)."""

    TLSRPT_RECORD = "tlsrpt-record"
    STS_RECORD = "sts-record"
    STS_POLICY = "sts-policy"
    STS_MODE = "sts-mode"
    STS_MAX_AGE = "sts-max-age"
    MX = "mx"
    MX_POLICY = "mx-policy"  # an MX host is matched by no policy pattern
    MX_PATTERN = "mx-pattern"  # a policy pattern matches no MX host
    MX_TLS = "mx-tls"
    MX_CERT_EXPIRY = "mx-cert-expiry"


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    check: Check
    subject: str  # the DNS name, URL or "host [address]" it is about
    message: str
    fix: str = ""  # empty when there is nothing to do
    result_type: str | None = None  # the RFC 8460 result type senders would report

    def as_dict(self) -> dict[str, str | None]:
        return {
            "severity": str(self.severity),
            "check": str(self.check),
            "subject": self.subject,
            "message": self.message,
            "fix": self.fix or None,
            "result_type": self.result_type,
        }


def ok(check: Check, subject: str, message: str) -> Finding:
    return Finding(Severity.OK, check, subject, message)


def warn(check: Check, subject: str, message: str, fix: str, rt: str | None = None) -> Finding:
    return Finding(Severity.WARN, check, subject, message, fix, rt)


def error(check: Check, subject: str, message: str, fix: str, rt: str | None = None) -> Finding:
    return Finding(Severity.ERROR, check, subject, message, fix, rt)


@dataclass(frozen=True, slots=True)
class Report:
    domain: str
    checked_at: datetime
    findings: tuple[Finding, ...]

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)

    @property
    def exit_code(self) -> int:
        """0: nothing wrong (warnings allowed); 1: at least one error."""
        return 1 if self.count(Severity.ERROR) else 0
