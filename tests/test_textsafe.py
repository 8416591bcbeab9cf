"""Control characters from the network never reach a terminal raw (tlsrpt_lmtp.core.textsafe)."""

from __future__ import annotations

import json

import pytest

from tlsrpt_lmtp.core.textsafe import json_escaped, printable

OSC52 = "\x1b]52;c;ZXZpbA==\x07"  # set the clipboard to "evil"
CLEAR = "\x1b[2J"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, äöü, 例え", "plain text, äöü, 例え"),
        (f"250 {OSC52}{CLEAR}ok", "250 \\x1b]52;c;ZXZpbA==\\x07\\x1b[2Jok"),
        ("a\rb\nc\td\x00e\x08f", "a\\x0db\\x0ac\\x09d\\x00e\\x08f"),
        ("del\x7f", "del\\x7f"),
        ("c1 csi \x9b2J nel \x85 end", "c1 csi \\x9b2J nel \\x85 end"),
        ("line\u2028sep\u2029par", "line\\u2028sep\\u2029par"),
        ("rtl \u202egnp.exe lri \u2066x\u2069 alm \u061c", None),
        ("lone surrogate \udcff", "lone surrogate \\udcff"),
    ],
)
def test_printable(text: str, shown: str | None) -> None:
    out = printable(text)
    if shown is not None:
        assert out == shown
    assert out.isprintable()
    assert not any(0x80 <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in out)


def test_printable_bidi_controls_are_shown() -> None:
    assert printable("\u202e\u2066\u2069\u200e\u200f\u061c") == (
        "\\u202e\\u2066\\u2069\\u200e\\u200f\\u061c"
    )


def test_printable_keeps_newlines_when_asked() -> None:
    assert printable("one\ntwo\r\n\x1b[2J", newlines=True) == "one\ntwo\\x0d\n\\x1b[2J"


def test_printable_output_encodes_strictly() -> None:
    out = printable("x\udc9b\x9b\x1b")
    assert out.encode("utf-8") == b"x\\udc9b\\x9b\\x1b"


def test_json_escaped_keeps_the_document_and_escapes_c1() -> None:
    doc = {"reply": f"550 {OSC52}\x9b2J\x7f\u2028é", "n": 1}
    text = json_escaped(json.dumps(doc, ensure_ascii=False))
    assert json.loads(text) == doc
    assert "é" in text  # other non-ASCII stays readable
    assert all(c in "\n" or c.isprintable() for c in text)
    assert "\\u009b" in text and "\\u001b" in text and "\\u007f" in text
