"""Text from the network made safe to show on a terminal (sans-I/O).

Values such as an MX's SMTP reply, a TXT record or a report's free text are the sender's words:
written raw to a terminal, ``ESC ] 52 ; … BEL`` sets the clipboard, ``ESC [ 2 J`` clears the
screen, a bare CR overwrites a line. ``printable`` shows every such character as a visible
escape instead of passing it on or dropping it silently, so what was sent can still be read.

Escaped: C0 controls (U+0000-U+001F, TAB and LF included, unless ``newlines`` keeps LF), DEL,
C1 controls (U+0080-U+009F: U+009B is a one-character CSI on some terminals), the Unicode line
and paragraph separators, bidirectional formatting characters (they reorder what follows on
the line) and lone surrogates (undecodable bytes, which would make the write fail).
"""

from __future__ import annotations

import re

_FORMAT = "\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_RE = re.compile(f"[\x00-\x1f{_FORMAT}]")
_UNSAFE_KEEP_LF_RE = re.compile(f"[\x00-\x09\x0b-\x1f{_FORMAT}]")
_C1_OR_DEL = re.compile("[\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control and format character above shown as ``\\xNN`` or
    ``\\uNNNN``; ``newlines=True`` keeps LF (for text made of several lines)."""
    pattern = _UNSAFE_KEEP_LF_RE if newlines else _UNSAFE_RE
    return pattern.sub(_escape, text)


def json_escaped(document: str) -> str:
    """A JSON text (``json.dumps(..., ensure_ascii=False)``) with DEL, C1 controls and the line
    separators written as ``\\uNNNN`` escapes: json leaves them raw, and they can only occur
    inside strings, where the escape means the same character."""
    return _C1_OR_DEL.sub(lambda m: f"\\u{ord(m.group()):04x}", document)
