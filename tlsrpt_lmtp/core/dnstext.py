"""The `v=…; name=value` TXT records of RFC 8460 §3 and RFC 8461 §3.1, sans-I/O.

Both records share one grammar: a version field, then fields separated by ``*WSP ";" *WSP``,
an optional trailing ";", extension names of 1-32 characters and values of printable ASCII
without "=" and ";". What each record's own fields mean stays with the record's parser
(``sts.record``, ``check.tlsrpt_record``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_DELIM = re.compile(r"[ \t]*;[ \t]*")
EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")


def join_rr(strings: Sequence[bytes]) -> bytes:
    """One TXT RR's character-strings, concatenated without spaces (RFC 8461 §3.1)."""
    return b"".join(strings)


def versioned(records: Sequence[bytes], version: str) -> list[bytes]:
    """The records that begin with ``version`` and a field delimiter (``v=STSv1;``): the
    others are not meant for this protocol and are discarded."""
    start = re.compile(rf"{re.escape(version)}[ \t]*;")
    return [r for r in records if start.match(r.decode("latin-1"))]


def fields(raw: bytes, version: str) -> list[str] | str:
    """The fields after the version field of one record, or why the record has none."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return "TXT record is not US-ASCII"
    parts = _DELIM.split(text.rstrip(" \t"))
    if parts and parts[-1] == "":
        parts.pop()  # the optional trailing ";"
    if not parts or parts[0] != version or len(parts) < 2:
        return f"TXT record does not start with {version} and a field"
    return parts[1:]
