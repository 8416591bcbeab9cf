"""The `_smtp._tls` TXT record (RFC 8460 §3), sans-I/O.

    tlsrpt-record    = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
    field-delim      = *WSP ";" *WSP
    tlsrpt-version   = %s"v=TLSRPTv1"
    tlsrpt-rua       = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)   ; exactly once
    tlsrpt-uri       = URI   ; "," "!" ";" MUST be percent-encoded
    tlsrpt-extension = tlsrpt-ext-name "=" tlsrpt-ext-value

Of a name's TXT records, those not beginning with "v=TLSRPTv1;" are discarded; unless exactly
one is left, and it is valid, senders assume the domain does not want reports. Unknown fields
are ignored. A record's character-strings are concatenated (``core.dnstext.join_rr``) before
they get here. Stricter than a sender needs to be: it is a checker, it says what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from tlsrpt_lmtp.core.dnstext import EXT_NAME, EXT_VALUE, fields, versioned

_URI_DELIM = re.compile(r"[ \t]*,[ \t]*")
# RFC 3986 characters (unreserved, reserved, pct-encoded) without the ",", "!", ";" RFC 8460
# wants encoded.
_URI = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@$&'()*+=]|%[0-9A-Fa-f]{2})+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_ADDRESS = re.compile(r"[^@\s]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.[A-Za-z0-9-]+")
_DMARC_SIZE = re.compile(r"![0-9]+[kmgtKMGT]?$")
SCHEMES = ("mailto", "https")


@dataclass(frozen=True, slots=True)
class ReportUri:
    uri: str  # as published
    scheme: str  # "mailto" or "https"
    target: str  # the address (percent-decoded) or the https host


@dataclass(frozen=True, slots=True)
class TlsrptRecord:
    rua: tuple[ReportUri, ...]
    extensions: tuple[tuple[str, str], ...] = ()  # unknown fields, ignored by senders


@dataclass(frozen=True, slots=True)
class TlsrptResult:
    """The record, or why senders will not use one (then ``record`` is None)."""

    record: TlsrptRecord | None
    error: str | None = None
    discarded: tuple[str, ...] = ()  # records that look meant for TLS-RPT but do not count


class UriError(ValueError):
    pass


def parse_txt(records: Sequence[bytes]) -> TlsrptResult:
    """Pick the one v=TLSRPTv1 record among a name's TXT records and parse it."""
    texts = [r.decode("latin-1") for r in records]
    candidates = [r.decode("latin-1") for r in versioned(records, "v=TLSRPTv1")]
    near = tuple(t for t in texts if t not in candidates and t.lower().startswith("v=tlsrpt"))
    if not candidates:
        if near:
            return TlsrptResult(
                None, f"TXT record {near[0]!r} does not begin with 'v=TLSRPTv1;'", near
            )
        return TlsrptResult(None, "no v=TLSRPTv1 TXT record")
    if len(candidates) > 1:
        return TlsrptResult(
            None, f"{len(candidates)} v=TLSRPTv1 TXT records (exactly one allowed)", near
        )
    result = parse_record(candidates[0].encode("latin-1"))
    return TlsrptResult(result.record, result.error, near)


def parse_record(raw: bytes) -> TlsrptResult:
    found = fields(raw, "v=TLSRPTv1")
    if isinstance(found, str):
        return TlsrptResult(None, found)
    rua: tuple[ReportUri, ...] | None = None
    extensions: list[tuple[str, str]] = []
    for field in found:
        name, eq, value = field.partition("=")
        if not eq or not EXT_NAME.fullmatch(name):
            return TlsrptResult(None, f"field {field!r} is not name=value")
        if name == "rua":
            if rua is not None:
                return TlsrptResult(None, "rua= appears twice (exactly once allowed)")
            try:
                rua = parse_rua(value)
            except UriError as exc:
                return TlsrptResult(None, str(exc))
        elif not EXT_VALUE.fullmatch(value):
            return TlsrptResult(None, f"field {field!r} has an invalid value")
        else:
            extensions.append((name, value))
    if rua is None:
        return TlsrptResult(None, "TXT record has no rua= field")
    return TlsrptResult(TlsrptRecord(rua, tuple(extensions)))


def parse_rua(value: str) -> tuple[ReportUri, ...]:
    """The comma-separated URIs of a rua= field; raises UriError for the first bad one."""
    if not value:
        raise UriError("rua= is empty")
    return tuple(parse_uri(uri) for uri in _URI_DELIM.split(value))


def parse_uri(uri: str) -> ReportUri:
    if not uri:
        raise UriError("rua= has an empty URI (a stray ',')")
    scheme_match = _SCHEME.match(uri)
    if scheme_match is None:
        raise UriError(f"rua URI {uri!r} has no scheme (a ',' inside a URI must be written %2C)")
    scheme = scheme_match.group(0)[:-1].lower()
    if scheme not in SCHEMES:
        raise UriError(f"rua URI {uri!r}: scheme {scheme!r} is neither mailto nor https")
    size_limit = _DMARC_SIZE.search(uri)
    if size_limit:
        raise UriError(
            f"rua URI {uri!r} ends in a DMARC size limit {size_limit.group(0)!r}, which"
            " TLS-RPT does not have (remove it)"
        )
    bad = sorted({c for c in uri if c != "%" and not _URI.fullmatch(c)})
    if bad:
        what = ", ".join(f"{c!r} (write {quote(c, safe='')})" for c in bad)
        raise UriError(f"rua URI {uri!r} contains {what}")
    if not _URI.fullmatch(uri):
        raise UriError(f"rua URI {uri!r} has a '%' not followed by 2 hex digits")
    rest = uri[len(scheme) + 1 :]
    if scheme == "mailto":
        address = unquote(rest.partition("?")[0])
        if not _ADDRESS.fullmatch(address):
            raise UriError(f"rua URI {uri!r}: {address!r} is not an e-mail address")
        return ReportUri(uri, scheme, address)
    try:
        host = urlsplit(uri).hostname
    except ValueError as exc:  # "Invalid IPv6 URL": a "[" without its "]"
        raise UriError(f"rua URI {uri!r}: {exc}") from None
    if not rest.startswith("//") or not host:
        raise UriError(f"rua URI {uri!r}: no host (https://host/path)")
    return ReportUri(uri, scheme, host)


def format_record(rua: Sequence[str]) -> str:
    """The record value to publish for these report URIs."""
    return f"v=TLSRPTv1; rua={','.join(rua)}"
