"""Values produced by the sans-I/O core: a normalised report and the mail it came in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from tlsrpt_lmtp.core.sanitize import clamped_sum

KNOWN_POLICY_TYPES = frozenset({"sts", "tlsa", "no-policy-found"})
# IANA "STARTTLS Validation Result Types" (RFC 8460 §6.6); the registry may grow.
KNOWN_RESULT_TYPES = frozenset(
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


class FailureDetail(NamedTuple):
    """A named tuple, not a dataclass: reports carry up to tens of thousands of these, and
    a tuple is built three times faster than a frozen dataclass."""

    result_type: str
    sending_mta_ip: str | None
    receiving_mx_hostname: str | None
    receiving_mx_helo: str | None
    receiving_ip: str | None
    failed_session_count: int
    additional_information: str | None
    failure_reason_code: str | None


@dataclass(frozen=True, slots=True)
class Policy:
    policy_type: str
    policy_domain: str | None
    policy_string: tuple[str, ...]
    mx_host: tuple[str, ...]
    total_successful_session_count: int
    total_failure_session_count: int
    failure_details: tuple[FailureDetail, ...]


@dataclass(frozen=True, slots=True)
class Report:
    organization_name: str
    report_id: str
    date_range_start: datetime
    date_range_end: datetime
    contact_info: str | None
    policies: tuple[Policy, ...]
    warnings: tuple[str, ...]

    # Sums never pass sanitize.MAX_COUNT (2**53 - 1), so every SIEM and SQLite can hold them.
    @property
    def total_successful_session_count(self) -> int:
        return clamped_sum(p.total_successful_session_count for p in self.policies)

    @property
    def total_failure_session_count(self) -> int:
        return clamped_sum(p.total_failure_session_count for p in self.policies)

    @property
    def dedup_key(self) -> tuple[str, str, str, str]:
        """RFC 8460 §5.3 names the report-id; real senders reuse ids, so the key is wider."""
        return (
            self.organization_name,
            self.report_id,
            self.date_range_start.isoformat(),
            self.date_range_end.isoformat(),
        )


@dataclass(frozen=True, slots=True)
class MailMeta:
    """What the envelope headers say; every field is optional (bare JSON has none)."""

    from_: str | None = None
    subject: str | None = None
    message_id: str | None = None
    report_domain: str | None = None
    submitter: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A candidate report found in a message, before decoding."""

    content_type: str
    filename: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Extracted:
    """The outcome of reading one message: its reports and why any part was unusable."""

    meta: MailMeta
    reports: tuple[Report, ...]
    errors: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def size_hint(self) -> int:
        """An upper bound of the bytes this value holds: the measure to batch parsed messages
        by (a 100 KB mail can hold 20,000 failure details even after aggregation)."""
        total = 2048 + sum(_size(e) for e in self.errors)
        for r in self.reports:
            total += 1024 + _size(r.report_id) + _size(r.organization_name)
            total += _size(r.contact_info) + 80 * len(r.warnings)
            for p in r.policies:
                total += 512 + sum(map(_size, p.policy_string)) + sum(map(_size, p.mx_host))
                for d in p.failure_details:
                    total += 200 + sum(_size(x) for x in d if type(x) is str)
        return total


def _size(text: str | None) -> int:
    """A str's memory, rounded up: header, and 1 byte per character (4 unless ASCII)."""
    if text is None:
        return 0
    return 80 + len(text) * (1 if text.isascii() else 4)
