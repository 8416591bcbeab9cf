"""`check --print-records`: the DNS records and the policy file to publish, sans-I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tlsrpt_lmtp.check.tlsrpt_record import format_record, parse_rua
from tlsrpt_lmtp.sts.domain import DomainError, mx_pattern
from tlsrpt_lmtp.sts.fetch import WELL_KNOWN
from tlsrpt_lmtp.sts.policy import Mode, parse_policy

DEFAULT_MAX_AGE = 14 * 86400  # RFC 8461 §3.2 suggests weeks
TTL = 3600


@dataclass(frozen=True, slots=True)
class Records:
    domain: str
    tlsrpt: str  # the _smtp._tls TXT value
    sts: str  # the _mta-sts TXT value
    policy: str  # the policy file

    @property
    def policy_url(self) -> str:
        return f"https://mta-sts.{self.domain}{WELL_KNOWN}"

    def as_dict(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "dns": [
                {"name": f"_smtp._tls.{self.domain}", "type": "TXT", "value": self.tlsrpt},
                {"name": f"_mta-sts.{self.domain}", "type": "TXT", "value": self.sts},
            ],
            "policy_url": self.policy_url,
            "policy": self.policy,
        }

    def text(self) -> str:
        d = self.domain
        return "\n".join(
            [
                f"; DNS records for {d} (zone file syntax)",
                f'_smtp._tls.{d}. {TTL} IN TXT "{self.tlsrpt}"',
                f'_mta-sts.{d}. {TTL} IN TXT "{self.sts}"',
                f"; mta-sts.{d} needs an A/AAAA record (or a CNAME) of an HTTPS server with",
                f"; a certificate valid for mta-sts.{d}. Change the id whenever the policy",
                "; changes.",
                "",
                f"; The policy file: {self.policy_url}",
                "; served with HTTP 200, Content-Type: text/plain, no redirect",
                self.policy.rstrip("\n"),
                "",
            ]
        )


def policy_id(now: datetime) -> str:
    """A fresh id (RFC 8461 §3.1: 1-32 letters and digits): the UTC time to the second."""
    return now.strftime("%Y%m%d%H%M%S")


def make_records(
    domain: str,
    rua: Sequence[str],
    mx: Sequence[str],
    mode: Mode,
    max_age: int,
    now: datetime,
) -> Records:
    """The records for ``domain``; raises ValueError (UriError, DomainError) for bad input."""
    uris = [u.uri for value in rua for u in parse_rua(value)]
    patterns = [_pattern(m) for m in mx]
    if not patterns and mode is not Mode.NONE:
        raise ValueError(f"no MX host for {domain}: give them with --mx")
    if not 0 <= max_age <= 31557600:
        raise ValueError("max_age must be 0 to 31557600 seconds")
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {p}" for p in dict.fromkeys(patterns)]
    lines.append(f"max_age: {max_age}")
    policy = "\n".join(lines) + "\n"
    parse_policy(policy.encode())  # what is printed must be valid
    return Records(domain, format_record(uris), f"v=STSv1; id={policy_id(now)}", policy)


def _pattern(value: str) -> str:
    try:
        return mx_pattern(value)
    except DomainError as exc:
        raise ValueError(f"--mx {value!r}: {exc}") from None
