"""Find the report(s) in a raw message (sans-I/O: bytes in, an Extracted value out).

RFC 8460 §5.3 describes a multipart/report with an application/tlsrpt+gzip part, but real
senders vary (QUIRKS.md §13-20), so candidate parts are chosen by type, file name and, when
nothing else matches, by sniffing their bytes. A bare JSON, gzip or zip file is accepted as
the report itself, which lets file import share this code.
"""

from __future__ import annotations

import contextlib
import email.parser
import re
from dataclasses import replace
from email.header import Header, decode_header, make_header
from email.message import Message

from tlsrpt_lmtp.decompress import DEFAULT_LIMIT, PayloadError, decode_payload, sniff
from tlsrpt_lmtp.model import Attachment, Extracted, MailMeta, Report
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
_parser = email.parser.BytesParser()


def extract(raw: bytes, *, limit: int = DEFAULT_LIMIT) -> Extracted:
    """Read one message (or one bare report file) into its reports and errors."""
    if sniff(raw) is not None:
        return _from_attachments(
            MailMeta(), [Attachment("application/octet-stream", None, raw)], (), limit
        )
    msg = _parser.parsebytes(raw)
    meta = mail_meta(msg)
    if not msg.keys():
        return Extracted(meta, (), ("not an email message and not a report file",))
    warnings: list[str] = []
    if not meta.report_domain:
        warnings.append("tls-report-domain-header-missing")
    if not meta.submitter:
        warnings.append("tls-report-submitter-header-missing")
    if msg.get_content_type() != "multipart/report":
        warnings.append("not-multipart-report")
    elif str(msg.get_param("report-type") or "").lower() != "tlsrpt":
        warnings.append("report-type-not-tlsrpt")
    defects = (d for part in msg.walk() for d in part.defects)
    if any(type(d).__name__ == "CloseBoundaryNotFoundDefect" for d in defects):
        warnings.append("mime-close-boundary-missing")
    return _from_attachments(meta, find_attachments(msg), tuple(warnings), limit)


def find_attachments(msg: Message) -> list[Attachment]:
    """Parts that claim to be a report; failing that, any part whose bytes look like one."""
    leaves = [p for p in msg.walk() if not p.is_multipart()]
    claimed = [p for p in leaves if _claims_report(p)]
    chosen = claimed or leaves
    found = []
    for part in chosen:
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes) or not data:
            continue
        if not claimed and sniff(data) is None:
            continue
        found.append(Attachment(part.get_content_type(), part.get_filename(), data))
    return found


def _claims_report(part: Message) -> bool:
    ctype = part.get_content_type()
    if ctype in REPORT_TYPES:
        return True
    name = (part.get_filename() or "").lower()
    return name.endswith(_REPORT_SUFFIXES) and (ctype in _GENERIC_TYPES or "!" in name)


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
        extra = (*warnings, *payload.warnings)
        if extra:
            report = _with_warnings(report, extra)
        reports.append(report)
    return Extracted(meta, tuple(reports), tuple(errors), warnings)


def _with_warnings(report: Report, extra: tuple[str, ...]) -> Report:
    merged = dict.fromkeys((*report.warnings, *extra))
    return replace(report, warnings=tuple(merged))


def mail_meta(msg: Message) -> MailMeta:
    return MailMeta(
        from_=header_text(msg, "From"),
        subject=header_text(msg, "Subject"),
        message_id=header_text(msg, "Message-ID"),
        report_domain=_domain_header(msg, "TLS-Report-Domain"),
        submitter=_domain_header(msg, "TLS-Report-Submitter"),
    )


def header_text(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    text = _FOLD.sub(" ", _header_str(value))
    with contextlib.suppress(UnicodeError, LookupError, ValueError):
        text = str(make_header(decode_header(text)))
    return text.strip() or None


def _header_str(value: object) -> str:
    """Raw 8-bit header bytes (RFC 6532 allows UTF-8) come back as a Header that would print
    them as U+FFFD; read them as UTF-8 instead."""
    if not isinstance(value, Header):
        return str(value)
    return "".join(
        chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
        for chunk, _charset in decode_header(value)
    )


def _domain_header(msg: Message, name: str) -> str | None:
    text = header_text(msg, name)
    return text.strip(" <>").rstrip(".").lower() if text else None
