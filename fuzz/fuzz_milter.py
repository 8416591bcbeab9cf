"""Fuzz target: the milter core fed what an MTA passes (recipients, header fields, body).

Input: the first byte picks the mode and how the header values arrive; then lines until an
empty one are header fields (``name:value``), the rest is the body. Ingest is the real MIME
extraction and report parser. Checked: no exception, and the reply fits an SMTP reply line
and a header field (one line, ASCII).
"""

from __future__ import annotations

import hashlib

import harness
import seeds

with harness.instrumented():
    from tlsrpt_lmtp.core.mime import extract
    from tlsrpt_lmtp.ingest.milter.config import MilterConfig, Mode
    from tlsrpt_lmtp.ingest.milter.core import Action, MessageFilter
    from tlsrpt_lmtp.ingest.pipeline import IngestResult

MODES = tuple(Mode)
RCPT = "<tlsrpt@example.com>"


def ingest(raw: bytes) -> IngestResult:
    extracted = extract(raw, limit=256 * 1024)
    failures = sum(r.total_failure_session_count for r in extracted.reports)
    archive_id = hashlib.sha256(raw).hexdigest()
    return IngestResult(archive_id, len(extracted.reports), 0, extracted.errors, failures)


def _ascii_line(text: str) -> None:
    assert text.isascii() and "\n" not in text and "\r" not in text, text


def check(data: bytes) -> None:
    flags = data[0] if data else 0
    config = MilterConfig(
        mode=MODES[flags % len(MODES)],
        recipients=("tlsrpt@example.com",),
        max_message_size=64 * 1024,
    )
    message = MessageFilter(config, ingest)
    message.recipient(RCPT)
    if flags & 0x10:
        message.recipient("<other@example.org>")
    head, _, body = data[1:].partition(b"\n\n")
    for line in head.split(b"\n"):
        name, _, value = line.partition(b":")
        if flags & 0x20:
            message.header(
                name.decode("utf-8", "surrogateescape"),
                value.decode("utf-8", "surrogateescape"),
                leading_space=True,
            )
        else:
            message.header(name, value.lstrip(b" "), leading_space=False)
    message.end_of_headers()
    message.body(body)
    reply = message.end_of_message()
    if reply.text is not None:
        _ascii_line(reply.text)
    if reply.add_header is not None:
        _ascii_line(reply.add_header[1])
    assert list(reply.delete_headers) == sorted(reply.delete_headers, reverse=True)
    assert reply.action is not Action.ACCEPT


def milter_seeds() -> list[bytes]:
    out = []
    for i, mail in enumerate(seeds.mails()[-6:]):
        out.append(bytes([i | 0x20]) + mail.replace(b"\r\n", b"\n"))
    return out


if __name__ == "__main__":
    harness.main("milter", check, (), milter_seeds)
