"""Fuzz target: domain names as senders, DNS and MTAs write them -> tlsrpt_lmtp.core.names.

Documented: none (invalid names give None, or their stripped lower-case text). Checked: the
A-label form is ASCII, at most 253 octets and a fixed point; ``canonical`` is idempotent (it
is the form names are stored and compared in); a valid name survives the round trip through
its display form; alignment is symmetric.
"""

from __future__ import annotations

import harness

with harness.instrumented():
    from tlsrpt_lmtp.core import names


def check(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    first, _, second = text.partition("\x00")
    for name in (first, second):
        ascii_name = names.to_ascii(name)
        if ascii_name is not None:
            assert ascii_name.isascii() and len(ascii_name) <= names.MAX_NAME, ascii_name
            again = names.to_ascii(ascii_name)
            assert again == ascii_name, f"to_ascii not a fixed point: {name!r} {ascii_name!r}"
            back = names.to_ascii(names.to_unicode(ascii_name))
            assert back == ascii_name, f"to_unicode round trip: {name!r} {ascii_name!r} {back!r}"
            names.organizational_domain(name)
        stored = names.canonical(name)
        again = names.canonical(stored)
        assert again == stored, f"canonical not idempotent: {name!r} {stored!r} {again!r}"
    assert names.aligned(first, second) == names.aligned(second, first)


def seeds() -> list[bytes]:
    return [
        b"mail.example.com\x00example.com",
        "stra\u00dfe.de\x00xn--strae-oqa.de".encode(),
        "B\u00fccher.Example.\x00*.b\u00fccher.example".encode(),
        b"r3--sn-abc.googlevideo.com\x00co.uk",
        b"evil.co.uk\x00attacker.github.io",
        b"xn--zz.example\x00[192.0.2.1]",
        "\u0627\u0644\u0639\u0631\u0628\u064a\u0629.example\x00\u2488.example".encode(),
    ]


if __name__ == "__main__":
    harness.main("names", check, (), seeds)
