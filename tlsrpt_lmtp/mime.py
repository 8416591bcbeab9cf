"""Find the report(s) in a raw message (sans-I/O: bytes in, an Extracted value out).

RFC 8460 §5.3 describes a multipart/report with an application/tlsrpt+gzip part, but real
senders vary (QUIRKS.md §13-20), so candidate parts are chosen by type, file name and, when
nothing else matches, by sniffing their bytes. A bare JSON, gzip or zip file is accepted as
the report itself, which lets file import share this code.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import replace
from email.header import decode_header, make_header

from tlsrpt_lmtp.decompress import DEFAULT_LIMIT, PayloadError, decode_payload, sniff
from tlsrpt_lmtp.mimeparts import Leaf, Parts, parts
from tlsrpt_lmtp.model import Attachment, Extracted, MailMeta, Report
from tlsrpt_lmtp.names import canonical
from tlsrpt_lmtp.report import ReportError, parse_report

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


def extract(raw: bytes, *, limit: int = DEFAULT_LIMIT) -> Extracted:
    """Read one message (or one bare report file) into its reports and errors."""
    if sniff(raw) is not None:
        bare = Attachment("application/octet-stream", None, raw)
        return _from_attachments(MailMeta(), [bare], (), limit)
    msg = parts(raw)
    meta = mail_meta(msg)
    if not msg.headers:
        return Extracted(meta, (), ("not an email message and not a report file",))
    warnings: list[str] = []
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
    return _from_attachments(meta, find_attachments(msg), tuple(warnings), limit)


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
    meta: MailMeta, attachments: list[Attachment], warnings: tuple[str, ...], limit: int
) -> Extracted:
    if not attachments:
        return Extracted(meta, (), ("no report attachment found",), warnings)
    reports: list[Report] = []
    errors: list[str] = []
    for att in attachments:
        try:
            payload = decode_payload(att.data, limit=limit)
            report = parse_report(payload.json_bytes, header_domain=meta.report_domain)
        except (PayloadError, ReportError) as exc:
            label = f" {att.filename}" if att.filename else ""
            errors.append(f"attachment{label}: {exc}")
            continue
        extra = (*warnings, *payload.warnings, *_submitter_check(meta, report))
        if extra:
            report = _with_warnings(report, extra)
        reports.append(report)
    return Extracted(meta, tuple(reports), tuple(errors), warnings)


def _submitter_check(meta: MailMeta, report: Report) -> tuple[str, ...]:
    """RFC 8460 §5.3: the submitter MUST be the contact-info domain (a subdomain either way
    is accepted: Mail.ru writes corp.mail.ru and mail.ru)."""
    contact = canonical((report.contact_info or "").rpartition("@")[2].strip(" <>"))
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
    h = msg.headers
    return MailMeta(
        from_=header_text(h.get("from")),
        subject=header_text(h.get("subject")),
        message_id=header_text(h.get("message-id")),
        report_domain=_domain(header_text(h.get("tls-report-domain"))),
        submitter=_domain(header_text(h.get("tls-report-submitter"))),
    )


def header_text(value: str | None) -> str | None:
    """Unfolded, with RFC 2047 encoded-words decoded."""
    if value is None:
        return None
    text = _FOLD.sub(" ", value)
    if "=?" in text:
        with contextlib.suppress(UnicodeError, LookupError, ValueError):
            text = str(make_header(decode_header(text)))
    return text.strip() or None


def _domain(text: str | None) -> str | None:
    return canonical(text.strip(" <>")) if text else None
