"""Decode RFC 2047 encoded-words in a header value, in one linear pass (sans-I/O).

``email.header.decode_header`` + ``make_header`` take time quadratic in the number of
encoded-words; a header is attacker-controlled, so this reader makes one regex pass, decodes
each run of adjacent words of one charset once (a multi-byte character may be split across
words), and joins the pieces once. Whitespace between two encoded-words is dropped (RFC 2047
§6.2). A word whose charset is unknown, or whose payload does not decode, is kept as written.
Decoding errors inside a known charset become U+FFFD; lone surrogates (UTF-7 can produce
them) are left for sanitize.clean_text.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable

_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")

Decode = Callable[[bytes, str], str | None]


def codec_decode(data: bytes, charset: str) -> str | None:
    """``data`` in ``charset`` (None if Python has no such text codec, or it fails)."""
    try:  # LookupError also for bytes codecs (base64, rot13); ValueError: NUL in the name
        return data.decode(charset, "replace")
    except (LookupError, ValueError, TypeError):
        return None


def decode_words(text: str, decode: Decode = codec_decode) -> str:
    """``text`` with its encoded-words decoded. ``decode`` is called once per run of
    adjacent words in one charset, with the run's bytes (tests count the work through it)."""
    if "=?" not in text:
        return text
    out: list[str] = []
    run: list[bytes] = []  # payload bytes of the current run of adjacent words
    run_raw: list[str] = []  # the same words as written, kept if the charset is unknown
    run_charset = ""
    pos = 0

    def flush() -> None:
        if run:
            decoded = decode(b"".join(run), run_charset)
            out.append(decoded if decoded is not None else "".join(run_raw))
            run.clear()
            run_raw.clear()

    for m in _WORD.finditer(text):
        between = text[pos : m.start()]
        adjacent = bool(run) and not between.strip(" \t\r\n")
        payload = _payload(m[2], m[3])
        charset = m[1].partition("*")[0].lower()  # RFC 2231 adds *language
        if payload is None:
            flush()
            out.append(between + m[0])
        else:
            if not adjacent or charset != run_charset:
                flush()
                if not adjacent:
                    out.append(between)
                run_charset = charset
            run.append(payload)
            run_raw.append(m[0])
        pos = m.end()
    flush()
    out.append(text[pos:])
    return "".join(out)


def _payload(encoding: str, data: str) -> bytes | None:
    try:
        raw = data.encode("ascii")
        if encoding in "bB":
            return binascii.a2b_base64(raw + b"=" * (-len(raw) % 4))
        return binascii.a2b_qp(raw, header=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
