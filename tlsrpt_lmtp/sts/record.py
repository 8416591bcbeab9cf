"""The `_mta-sts` TXT record (RFC 8461 §3.1), sans-I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DELIM = re.compile(r"[ \t]*;[ \t]*")
_VERSION = re.compile(r"v=STSv1[ \t]*;")
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")


@dataclass(frozen=True, slots=True)
class StsRecord:
    id: str
    extensions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TxtResult:
    """A record, or why there is none (which RFC 8461 treats as 'no policy')."""

    record: StsRecord | None
    reason: str | None = None


def join_rr(strings: list[bytes]) -> bytes:
    """One TXT RR's character-strings, concatenated without spaces (§3.1)."""
    return b"".join(strings)


def parse_txt(records: list[bytes]) -> TxtResult:
    """Pick the one v=STSv1 record among a name's TXT records and parse it."""
    candidates = [r for r in records if _VERSION.match(r.decode("latin-1"))]
    if not candidates:
        return TxtResult(None, "no v=STSv1 TXT record")
    if len(candidates) > 1:
        return TxtResult(None, f"{len(candidates)} v=STSv1 TXT records (exactly one allowed)")
    return parse_record(candidates[0])


def parse_record(raw: bytes) -> TxtResult:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return TxtResult(None, "TXT record is not US-ASCII")
    fields = _DELIM.split(text.rstrip(" \t"))
    if fields and fields[-1] == "":
        fields.pop()  # the optional trailing ";"
    if not fields or fields[0] != "v=STSv1" or len(fields) < 2:
        return TxtResult(None, "TXT record does not start with v=STSv1 and a field")
    record_id: str | None = None
    extensions: list[tuple[str, str]] = []
    seen: set[str] = set()
    for field in fields[1:]:
        name, eq, value = field.partition("=")
        if not eq:
            return TxtResult(None, f"TXT field {field!r} is not name=value")
        if name == "id":
            if not _ID.fullmatch(value):
                return TxtResult(None, f"TXT id {value!r} is not 1-32 letters and digits")
        elif not (_EXT_NAME.fullmatch(name) and _EXT_VALUE.fullmatch(value)):
            return TxtResult(None, f"TXT field {field!r} is not a valid extension")
        if name in seen:
            continue  # §3.2: the first of duplicated fields wins
        seen.add(name)
        if name == "id":
            record_id = value
        else:
            extensions.append((name, value))
    if record_id is None:
        return TxtResult(None, "TXT record has no id")
    return TxtResult(StsRecord(record_id, tuple(extensions)))
