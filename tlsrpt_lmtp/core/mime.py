"""Find the report(s) in a raw message (sans-I/O: bytes in, an Extracted value out).

RFC 8460 §5.3 describes a multipart/report with an application/tlsrpt+gzip part, but real
senders vary (QUIRKS.md §13-20), so candidate parts are chosen by type, file name and, when
nothing else matches, by sniffing their bytes. A bare JSON, gzip or zip file is accepted as
the report itself, which lets file import share this code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

from tlsrpt_lmtp.core.aggregate import DEFAULT_MAX_FAILURE_DETAILS
from tlsrpt_lmtp.core.decompress import (
    DEFAULT_LIMIT,
    LaterMemberBroken,
    PayloadError,
    PayloadStream,
    open_payload,
    sniff,
)
from tlsrpt_lmtp.core.mimeparts import Leaf, Parts, parts
from tlsrpt_lmtp.core.model import Attachment, Extracted, MailMeta, Report
from tlsrpt_lmtp.core.names import mail_domain
from tlsrpt_lmtp.core.report import ReportError, parse_report_chunks
from tlsrpt_lmtp.core.rfc2047 import decode_words
from tlsrpt_lmtp.core.sanitize import clean_text, safe_text

REPORT_TYPES = frozenset(
    {
        "application/tlsrpt+gzip",
        "application/tlsrpt+json",
        "application/tlsrpt+zip",
        "application/tlsrpt",
    }
)
_GENERIC_TYPES = frozenset(
    {
        "application/json",
        "application/gzip",
        "application/x-gzip",
        "application/zip",
        "application/x-zip-compressed",
        "application/octet-stream",
    }
)
_REPORT_SUFFIXES = (".json", ".json.gz", ".gz", ".zip")
_FOLD = re.compile(r"\r?\n[ \t]+")
# Report mail carries one report; a few more are read, the rest refused (with the shared
# decompression limit, this bounds the work per message).
MAX_REPORT_ATTACHMENTS = 4
# Raw header text read before decoding; after decoding, sanitize.MAX_TEXT characters are kept.
MAX_HEADER_CHARS = 16 * 1024


def extract(
    raw: bytes,
    *,
    limit: int = DEFAULT_LIMIT,
    max_failure_details: int = DEFAULT_MAX_FAILURE_DETAILS,
) -> Extracted:
    """Read one message (or one bare report file) into its reports and errors.

    ``limit`` bounds the decompressed size of the message's report attachments (together:
    the first gets all of it, the next what is left), ``max_failure_details`` the
    failure details kept per report (the rest are aggregated, see aggregate.py). Every
    text in the result is safe to encode; when a header had to be changed for that, its
    warning (``text-replaced``, ``text-truncated``) is in ``Extracted.warnings`` and so on
    every report of the message.
    """
    if sniff(raw) is not None:
        bare = Attachment("application/octet-stream", None, raw)
        return _from_attachments(MailMeta(), [bare], (), limit, max_failure_details)
    msg = parts(raw)
    warnings: list[str] = []
    meta = _sanitised_meta(msg, warnings)
    if not msg.headers:
        return Extracted(meta, (), ("not an email message and not a report file",))
    if not meta.report_domain:
        warnings.append("tls-report-domain-header-missing")
    if not meta.submitter:
        warnings.append("tls-report-submitter-header-missing")
    if msg.content_type != "multipart/report":
        warnings.append("not-multipart-report")
    elif msg.params.get("report-type", "").lower() != "tlsrpt":
        warnings.append("report-type-not-tlsrpt")
    if msg.close_boundary_missing:
        warnings.append("mime-close-boundary-missing")
    found = find_attachments(msg)
    return _from_attachments(meta, found, tuple(warnings), limit, max_failure_details)


def find_attachments(msg: Parts) -> list[Attachment]:
    """Parts that claim to be a report; failing that, any part whose bytes look like one."""
    claimed = [leaf for leaf in msg.leaves if _claims_report(leaf)]
    found = []
    for leaf in claimed or msg.leaves:
        if not leaf.payload:
            continue
        if not claimed and sniff(leaf.payload) is None:
            continue
        found.append(Attachment(leaf.content_type, leaf.filename, leaf.payload))
    return found


def _claims_report(leaf: Leaf) -> bool:
    if leaf.content_type in REPORT_TYPES:
        return True
    name = (leaf.filename or "").lower()
    return name.endswith(_REPORT_SUFFIXES) and (leaf.content_type in _GENERIC_TYPES or "!" in name)


def _from_attachments(
    meta: MailMeta,
    attachments: list[Attachment],
    warnings: tuple[str, ...],
    limit: int,
    max_failure_details: int,
) -> Extracted:
    if not attachments:
        return Extracted(meta, (), ("no report attachment found",), warnings)
    reports: list[Report] = []
    errors: list[str] = []
    if len(attachments) > MAX_REPORT_ATTACHMENTS:
        errors.append(
            f"{len(attachments)} report attachments: only the first"
            f" {MAX_REPORT_ATTACHMENTS} were read"
        )
    spent = [0]  # decompressed bytes of this message so far: all its attachments share limit
    for att in attachments[:MAX_REPORT_ATTACHMENTS]:
        label = f" {att.filename}" if att.filename else ""
        if spent[0] >= limit:
            errors.append(
                safe_text(
                    f"attachment{label}: not read: the message's report attachments"
                    f" already decompress to the {limit}-byte limit"
                )
            )
            continue
        try:
            report, payload_warnings = _read(
                att, meta, limit - spent[0], max_failure_details, spent
            )
        except (PayloadError, ReportError) as exc:
            errors.append(safe_text(f"attachment{label}: {exc}"))
            continue
        extra = (*warnings, *payload_warnings, *_submitter_check(meta, report))
        if extra:
            report = _with_warnings(report, extra)
        reports.append(report)
    return Extracted(meta, tuple(reports), tuple(errors), warnings)


def _read(
    att: Attachment, meta: MailMeta, limit: int, max_failure_details: int, spent: list[int]
) -> tuple[Report, list[str]]:
    """Decompress and parse one attachment as a stream (never the whole JSON in memory);
    ``spent[0]`` grows by the bytes decompressed, whether or not the report is usable."""

    def parse(stream: PayloadStream) -> Report:
        def counted() -> Iterator[bytes]:
            for chunk in stream.chunks:
                spent[0] += len(chunk)
                yield chunk

        return parse_report_chunks(
            counted(), header_domain=meta.report_domain, max_failure_details=max_failure_details
        )

    stream = open_payload(att.data, limit=limit)
    try:
        return parse(stream), stream.warnings
    except LaterMemberBroken:
        # A broken later gzip member must not cost the report the first one holds.
        stream = open_payload(att.data, limit=limit, first_only=True)
        try:
            return parse(stream), stream.warnings
        except LaterMemberBroken as exc:
            raise PayloadError(str(exc)) from None


def _submitter_check(meta: MailMeta, report: Report) -> tuple[str, ...]:
    """RFC 8460 §5.3: the submitter MUST be the contact-info domain (a subdomain either way
    is accepted: Mail.ru writes corp.mail.ru and mail.ru)."""
    contact = mail_domain(report.contact_info)
    if not meta.submitter or not contact:
        return ()
    if related_domains(meta.submitter, contact):
        return ()
    return ("submitter-contact-mismatch",)


def related_domains(a: str, b: str) -> bool:
    """Equal, or one a subdomain of the other."""
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def _with_warnings(report: Report, extra: tuple[str, ...]) -> Report:
    merged = dict.fromkeys((*report.warnings, *extra))
    return replace(report, warnings=tuple(merged))


def mail_meta(msg: Parts) -> MailMeta:
    """The headers the events show, sanitised (warning codes dropped; see extract)."""
    return _sanitised_meta(msg, [])


def _sanitised_meta(msg: Parts, warnings: list[str]) -> MailMeta:
    h = msg.headers

    def field(name: str, domain: bool = False) -> str | None:
        text = header_text(h.get(name))
        if domain:
            text = mail_domain(text)
        if text is None:
            return None
        text, codes = clean_text(text)
        warnings.extend(c for c in codes if c not in warnings)
        return text

    return MailMeta(
        from_=field("from"),
        subject=field("subject"),
        message_id=field("message-id"),
        report_domain=field("tls-report-domain", domain=True),
        submitter=field("tls-report-submitter", domain=True),
    )


def header_text(value: str | None) -> str | None:
    """Unfolded, with RFC 2047 encoded-words decoded (not yet sanitised)."""
    if value is None:
        return None
    text = _FOLD.sub(" ", value[:MAX_HEADER_CHARS])
    text = decode_words(text)
    return text.strip() or None
