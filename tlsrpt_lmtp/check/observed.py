"""What the network said about a domain: the input of the (pure) evaluation in checks.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from tlsrpt_lmtp.sts.dnsclient import TxtLookup

__all__ = ["MxHost", "MxLookup", "Observations", "PolicyFetch", "Probe", "ProbeStatus", "TxtLookup"]


@dataclass(frozen=True, slots=True)
class PolicyFetch:
    url: str
    body: bytes | None  # None: the fetch failed
    error: str | None = None
    result_type: str | None = None  # sts-policy-fetch-error, sts-webpki-invalid


class ProbeStatus(StrEnum):
    OK = "ok"  # STARTTLS and a certificate valid for the MX name
    NO_STARTTLS = "no-starttls"
    CERT_INVALID = "cert-invalid"
    TLS_FAILED = "tls-failed"  # the handshake failed for another reason
    UNREACHABLE = "unreachable"  # no TCP connection, or no answer in time
    SMTP_ERROR = "smtp-error"  # the server refused the session (greeting, EHLO)
    SKIPPED = "skipped"  # an IPv6 address, and this host has no IPv6 route


@dataclass(frozen=True, slots=True)
class Probe:
    """One STARTTLS probe of one address of one MX host (port 25)."""

    host: str
    address: str
    status: ProbeStatus
    detail: str = ""
    result_type: str | None = None  # RFC 8460 §4.3 result type for a failure
    not_after: datetime | None = None  # of a valid certificate
    tls_version: str | None = None


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str
    preference: int
    addresses: tuple[str, ...] = ()
    error: str | None = None  # the name does not resolve
    probes: tuple[Probe, ...] = ()


@dataclass(frozen=True, slots=True)
class MxLookup:
    hosts: tuple[MxHost, ...] = ()
    implicit: bool = False  # no MX records: mail goes to the domain's own address
    null_mx: bool = False  # "0 ." (RFC 7505): the domain accepts no mail
    error: str | None = None  # the MX lookup itself failed


@dataclass(frozen=True, slots=True)
class Observations:
    domain: str
    tlsrpt: TxtLookup
    sts: TxtLookup
    policy: PolicyFetch
    mx: MxLookup
