"""Small builders for the core's tests: report dicts, gzip/zip containers and report emails.

Report dicts start RFC-correct (RFC 8460 §4.4); a test breaks exactly the field it is about by
editing the returned dict. Emails come in two kinds: ``tlsrpt_email`` builds an RFC 8460 §5.3
message with the stdlib ``email`` package, and ``raw_email`` assembles literal bytes for the
shapes real senders produce (no closing boundary, CRLF, odd header layouts).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

MiB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# report JSON
# --------------------------------------------------------------------------------------------


def detail(
    result_type: str = "certificate-expired",
    count: int = 1,
    *,
    sending_ip: str = "192.0.2.10",
    mx: str = "mx1.example.com",
    receiving_ip: str = "198.51.100.25",
    **extra: Any,
) -> dict[str, Any]:
    """One failure-details entry with every common field; ``extra`` adds raw keys."""
    return {
        "result-type": result_type,
        "sending-mta-ip": sending_ip,
        "receiving-mx-hostname": mx,
        "receiving-ip": receiving_ip,
        "failed-session-count": count,
        **extra,
    }


def sts_policy(
    domain: str = "example.com",
    *,
    success: int = 100,
    failure: int = 0,
    details: Sequence[dict[str, Any]] | None = None,
    mx: Sequence[str] = ("mx1.example.com", "mx2.example.com"),
) -> dict[str, Any]:
    """A ``policies`` entry for an STS policy (mx-host as an array, per erratum 6241)."""
    entry: dict[str, Any] = {
        "policy": {
            "policy-type": "sts",
            "policy-string": [
                "version: STSv1",
                "mode: enforce",
                *(f"mx: {m}" for m in mx),
                "max_age: 86400",
            ],
            "policy-domain": domain,
            "mx-host": list(mx),
        },
        "summary": {
            "total-successful-session-count": success,
            "total-failure-session-count": failure,
        },
    }
    if details is not None:
        entry["failure-details"] = list(details)
    return entry


def tlsa_policy(
    domain: str = "example.com",
    records: Sequence[str] = ("3 1 1 0123456789ABCDEF",),
    *,
    success: int = 10,
    failure: int = 0,
) -> dict[str, Any]:
    return {
        "policy": {
            "policy-type": "tlsa",
            "policy-string": list(records),
            "policy-domain": domain,
        },
        "summary": {
            "total-successful-session-count": success,
            "total-failure-session-count": failure,
        },
    }


def no_policy(domain: str = "example.com", *, success: int = 5) -> dict[str, Any]:
    return {
        "policy": {"policy-type": "no-policy-found", "policy-domain": domain},
        "summary": {"total-successful-session-count": success, "total-failure-session-count": 0},
    }


def report_dict(
    *policies: dict[str, Any],
    org: str = "Example Reporter Inc.",
    report_id: str = "2024-01-09T00:00:00Z_example.com",
    start: str = "2024-01-09T00:00:00Z",
    end: str = "2024-01-09T23:59:59Z",
    contact: str | None = "smtp-tls-reporting@reporter.example",
) -> dict[str, Any]:
    """An RFC 8460 report; one STS policy for example.com unless policies are given."""
    return {
        "organization-name": org,
        "date-range": {"start-datetime": start, "end-datetime": end},
        "contact-info": contact,
        "report-id": report_id,
        "policies": list(policies) if policies else [sts_policy()],
    }


def to_json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def first_policy(doc: dict[str, Any]) -> dict[str, Any]:
    """The inner ``policy`` object of the first policies entry (to edit in place)."""
    policy: dict[str, Any] = doc["policies"][0]["policy"]
    return policy


# --------------------------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------------------------


def gzip_member(
    data: bytes,
    *,
    mtime: int = 0,
    xfl: int = 0,
    os_byte: int = 255,
    fname: bytes | None = None,
    fcomment: bytes | None = None,
    fextra: bytes | None = None,
    fhcrc: bool = False,
    level: int = 9,
) -> bytes:
    """One gzip member (RFC 1952) with the header fields chosen by the caller."""
    flags = (2 if fhcrc else 0) | (4 if fextra is not None else 0)
    flags |= (8 if fname is not None else 0) | (16 if fcomment is not None else 0)
    header = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", mtime) + bytes([xfl, os_byte])
    if fextra is not None:
        header += struct.pack("<H", len(fextra)) + fextra
    if fname is not None:
        header += fname + b"\x00"
    if fcomment is not None:
        header += fcomment + b"\x00"
    if fhcrc:
        header += struct.pack("<H", zlib.crc32(header) & 0xFFFF)
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(data) + compressor.flush()
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def zip_archive(members: Iterable[tuple[str, bytes]], *, deflate: bool = True) -> bytes:
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buf.getvalue()


@functools.lru_cache(maxsize=4)
def deflated_zeros(size: int, unit: int = MiB) -> tuple[bytes, int]:
    """A raw deflate stream of ``size`` zero bytes and the CRC-32 of those bytes.

    Built without ever holding the zeros: one ``unit`` is compressed and ended with a full
    flush (which resets the compressor), so the same bytes can be repeated; a final empty
    block closes the stream. 256 MiB of zeros come out at about 260 KiB.
    """
    if size % unit:
        raise ValueError("size must be a multiple of unit")
    zeros = bytes(unit)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(size // unit):
        crc = zlib.crc32(zeros, crc)
    return block * (size // unit) + end, crc


def gzip_bomb(size: int) -> bytes:
    """A valid single-member gzip stream that inflates to ``size`` zero bytes."""
    body, crc = deflated_zeros(size)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"
    return header + body + struct.pack("<II", crc, size & 0xFFFFFFFF)


def zip_bomb(size: int, name: str = "report.json") -> bytes:
    """A valid one-member zip whose deflated member inflates to ``size`` zero bytes."""
    body, crc = deflated_zeros(size)
    if size >= 0xFFFFFFFF:
        raise ValueError("zip_bomb does not write zip64 records")
    raw_name = name.encode()
    local = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(body), size, len(raw_name), 0
    )
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50,
        20,
        20,
        0,
        8,
        0,
        0x21,
        crc,
        len(body),
        size,
        len(raw_name),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    entries = local + raw_name + body
    directory = central + raw_name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(directory), len(entries), 0)
    return entries + directory + end


# --------------------------------------------------------------------------------------------
# emails
# --------------------------------------------------------------------------------------------

SUBJECT = "Report Domain: example.com Submitter: reporter.example Report-ID: <2024.01.09@r.example>"


def tlsrpt_email(
    *payloads: bytes,
    report_domain: str | None = "example.com",
    submitter: str | None = "reporter.example",
    subject: str = SUBJECT,
    content_type: str = "application/tlsrpt+gzip",
    filenames: Sequence[str] | None = None,
) -> bytes:
    """An RFC 8460 §5.3 report mail built with the stdlib: multipart/report, a text part,
    then one base64 attachment per payload (gzip it first for application/tlsrpt+gzip)."""
    msg = MIMEMultipart("report", report_type="tlsrpt")
    msg["From"] = "noreply-smtp-tls-reporting@reporter.example"
    msg["To"] = "tlsrpt@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = "<tlsrpt-1@reporter.example>"
    if report_domain is not None:
        msg["TLS-Report-Domain"] = report_domain
    if submitter is not None:
        msg["TLS-Report-Submitter"] = submitter
    msg.attach(MIMEText("This is an aggregate TLS report from reporter.example\n"))
    for i, payload in enumerate(payloads):
        part = MIMEApplication(payload, content_type.partition("/")[2])
        name = (
            filenames[i]
            if filenames is not None
            else f"reporter.example!example.com!1704758400!1704844799!{i:03d}.json.gz"
        )
        part.add_header("Content-Disposition", "attachment", filename=name)
        msg.attach(part)
    return msg.as_bytes()


@dataclass(frozen=True)
class Part:
    """One MIME body part as literal text: header lines and an already-encoded body."""

    headers: Sequence[str]
    body: str


def b64_lines(data: bytes) -> str:
    return base64.encodebytes(data).decode().rstrip("\n")


def attachment_part(
    data: bytes,
    *,
    content_type: str = "application/tlsrpt+gzip",
    filename: str | None = "reporter.example!example.com!1704758400!1704844799.json.gz",
    extra_headers: Sequence[str] = (),
) -> Part:
    headers = [f"Content-Type: {content_type}", *extra_headers]
    if filename is not None:
        headers.append(f'Content-Disposition: attachment;\n\tfilename="{filename}"')
    headers.append("Content-Transfer-Encoding: base64")
    return Part(headers, b64_lines(data))


def text_part(text: str = "This is an aggregate TLS report.") -> Part:
    return Part(["Content-Type: text/plain; charset=us-ascii"], text)


@dataclass(frozen=True)
class RawEmail:
    """A report mail as literal lines, for shapes the stdlib generator never writes."""

    headers: Sequence[str]
    parts: Sequence[Part] = ()
    body: str = ""
    boundary: str = "----=_Part_42_0123456789"
    content_type: str | None = None  # default: multipart/report; report-type=tlsrpt; boundary
    close_boundary: bool = True
    crlf: bool = False
    preamble: str = "This is a multi-part message in MIME format."

    def to_bytes(self) -> bytes:
        lines = list(self.headers)
        if self.parts:
            ctype = self.content_type or (
                f'multipart/report; report-type=tlsrpt; boundary="{self.boundary}"'
            )
            lines += ["MIME-Version: 1.0", f"Content-Type: {ctype}", "", self.preamble, ""]
            for part in self.parts:
                lines += [f"--{self.boundary}", *part.headers, "", part.body, ""]
            if self.close_boundary:
                lines.append(f"--{self.boundary}--")
        else:
            if self.content_type:
                lines += ["MIME-Version: 1.0", f"Content-Type: {self.content_type}"]
            lines += ["", self.body]
        text = "\n".join(lines) + "\n"
        if self.crlf:
            text = text.replace("\n", "\r\n")
        return text.encode()


def raw_email(
    *parts: Part,
    headers: Sequence[str] | None = None,
    **options: Any,
) -> bytes:
    """Literal report mail bytes; ``headers`` default to a Google-like set."""
    if headers is None:
        headers = [
            "From: noreply-smtp-tls-reporting@reporter.example",
            "To: tlsrpt@example.com",
            f"Subject: {SUBJECT}",
            "Message-ID: <raw-1@reporter.example>",
            "TLS-Report-Domain: example.com",
            "TLS-Report-Submitter: reporter.example",
        ]
    return RawEmail(headers=headers, parts=parts, **options).to_bytes()
