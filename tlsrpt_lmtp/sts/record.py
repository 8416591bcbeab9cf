"""The `_mta-sts` TXT record (RFC 8461 §3.1), sans-I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tlsrpt_lmtp.core.dnstext import EXT_NAME, EXT_VALUE, fields, versioned

_ID = re.compile(r"[A-Za-z0-9]{1,32}")


@dataclass(frozen=True, slots=True)
class StsRecord:
    id: str
    extensions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TxtResult:
    """A record, or why there is none (which RFC 8461 treats as 'no policy')."""

    record: StsRecord | None
    reason: str | None = None


def parse_txt(records: list[bytes]) -> TxtResult:
    """Pick the one v=STSv1 record among a name's TXT records and parse it."""
    candidates = versioned(records, "v=STSv1")
    if not candidates:
        return TxtResult(None, "no v=STSv1 TXT record")
    if len(candidates) > 1:
        return TxtResult(None, f"{len(candidates)} v=STSv1 TXT records (exactly one allowed)")
    return parse_record(candidates[0])


def parse_record(raw: bytes) -> TxtResult:
    found = fields(raw, "v=STSv1")
    if isinstance(found, str):
        return TxtResult(None, found)
    record_id: str | None = None
    extensions: list[tuple[str, str]] = []
    seen: set[str] = set()
    for field in found:
        name, eq, value = field.partition("=")
        if not eq:
            return TxtResult(None, f"TXT field {field!r} is not name=value")
        if name == "id":
            if not _ID.fullmatch(value):
                return TxtResult(None, f"TXT id {value!r} is not 1-32 letters and digits")
        elif not (EXT_NAME.fullmatch(name) and EXT_VALUE.fullmatch(value)):
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
