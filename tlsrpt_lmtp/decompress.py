"""Turn an attachment's bytes into report JSON bytes (sans-I/O).

The media type is a hint at best (QUIRKS.md §14): the bytes are sniffed. Decompression is
streamed with a cap so that a decompression bomb is refused in bounded memory: output is
kept only while it stays small; past that, the rest is counted and thrown away, and only a
stream that turned out to fit under the cap is decompressed a second time to keep it.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

DEFAULT_LIMIT = 64 * 1024 * 1024
_CHUNK = 64 * 1024
_KEEP_IN_FIRST_PASS = 4 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"


class PayloadError(ValueError):
    """The attachment cannot be turned into report JSON; the message says why."""


@dataclass(frozen=True, slots=True)
class Payload:
    json_bytes: bytes
    warnings: tuple[str, ...]


def sniff(data: bytes) -> str | None:
    """'gzip', 'zip', 'json' or None, from the first bytes."""
    if data.startswith(_GZIP_MAGIC):
        return "gzip"
    if data.startswith(_ZIP_MAGIC):
        return "zip"
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith((b"{", b"[")):
        return "json"
    return None


def decode_payload(data: bytes, *, limit: int = DEFAULT_LIMIT) -> Payload:
    kind = sniff(data)
    if kind == "gzip":
        body, warnings = _gunzip(data, limit)
    elif kind == "zip":
        body, warnings = _unzip(data, limit)
    elif kind == "json":
        if len(data) > limit:
            raise PayloadError(f"report is larger than the {limit}-byte limit")
        body, warnings = data, []
    else:
        raise PayloadError("attachment is neither gzip, zip nor JSON")
    if sniff(body) == "gzip":
        # Seen: a .json.gz inside a .zip, or gzip applied twice.
        inner = decode_payload(body, limit=limit)
        return Payload(inner.json_bytes, (*warnings, "nested-compression", *inner.warnings))
    if sniff(body) != "json":
        raise PayloadError("decompressed attachment is not JSON")
    return Payload(body, tuple(warnings))


def _gunzip(data: bytes, limit: int) -> tuple[bytes, list[str]]:
    try:
        return _capped(lambda: _gzip_chunks(data), limit, "gzip")
    except PayloadError as exc:
        if "corrupt" not in str(exc) and "truncated" not in str(exc):
            raise
        # A broken later member must not cost the report the first one holds.
        body, warnings = _capped(lambda: _gzip_chunks(data, first_only=True), limit, "gzip")
        return body, [*warnings, "gzip-trailing-data"]


def _gzip_chunks(data: bytes, *, first_only: bool = False) -> Iterator[bytes | str]:
    """Decompress gzip members in order; yields bytes, or a warning code as a str."""
    rest = data
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = d.decompress(rest, _CHUNK)
            while True:
                if chunk:
                    yield chunk
                if d.eof or not d.unconsumed_tail:
                    break
                chunk = d.decompress(d.unconsumed_tail, _CHUNK)
            tail = d.flush() if not d.eof else b""
        except zlib.error as exc:
            raise PayloadError(f"gzip data is corrupt: {exc}") from None
        if tail:
            yield tail
        if not d.eof:
            raise PayloadError("gzip data is truncated")
        rest = d.unused_data
        if first_only:
            return
        if rest and not rest.startswith(_GZIP_MAGIC):
            # QUIRKS.md §18: bytes after the stream broke other parsers; they carry nothing.
            yield "gzip-trailing-data"
            return


def _unzip(data: bytes, limit: int) -> tuple[bytes, list[str]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise PayloadError(f"zip data is corrupt: {exc}") from None
    if not members:
        raise PayloadError("zip archive is empty")
    preferred = [i for i in members if i.filename.lower().endswith((".json", ".json.gz"))]
    member = (preferred or members)[0]
    warnings = ["zip-several-members"] if len(members) > 1 else []

    def chunks() -> Iterator[bytes | str]:
        try:
            with archive.open(member) as f:
                while chunk := f.read(_CHUNK):
                    yield chunk
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise PayloadError(f"zip member {member.filename!r} is unreadable: {exc}") from None

    body, more = _capped(chunks, limit, "zip")
    return body, warnings + more


def _capped(
    open_stream: Callable[[], Iterator[bytes | str]], limit: int, what: str
) -> tuple[bytes, list[str]]:
    kept: list[bytes] | None = []
    warnings: list[str] = []
    total = 0
    for item in open_stream():
        if isinstance(item, str):
            warnings.append(item)
            continue
        total += len(item)
        if total > limit:
            raise PayloadError(
                f"{what} data decompresses to more than the {limit}-byte limit (bomb refused)"
            )
        if kept is not None:
            kept.append(item)
            if total > _KEEP_IN_FIRST_PASS:
                kept = None
    if kept is None:
        # Large but within the limit: now that it is known to fit, keep it.
        kept = [i for i in open_stream() if isinstance(i, bytes)]
    return b"".join(kept), warnings
