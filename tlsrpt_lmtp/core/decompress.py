"""Turn an attachment's bytes into report JSON bytes (sans-I/O).

The media type is a hint at best (QUIRKS.md §14): the bytes are sniffed. Decompression is
streamed with a cap so that a decompression bomb is refused in bounded memory: output is
kept only while it stays small; past that, the rest is counted and thrown away, and only a
stream that turned out to fit under the cap is decompressed a second time to keep it.
"""

from __future__ import annotations

import io
import itertools
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Real reports are far smaller (10,000 failure details: 2-4 MB). The cap bounds the time and
# memory of a hostile body (bench/hostile.py): a 32 MiB string costs ~70 MiB to read.
DEFAULT_LIMIT = 32 * 1024 * 1024
_CHUNK = 64 * 1024
_FIRST_WINDOW = 256
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
    """The whole report JSON (``open_payload`` gives it in pieces, in less memory)."""
    return _decode(data, limit, 0)


def _decode(data: bytes, limit: int, depth: int) -> Payload:
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
        # Seen: a .json.gz inside a .zip, or gzip applied twice; never deeper (as _open).
        if depth >= 2:
            raise PayloadError("compression is nested more than twice")
        inner = _decode(body, limit, depth + 1)
        return Payload(inner.json_bytes, (*warnings, "nested-compression", *inner.warnings))
    if sniff(body) != "json":
        raise PayloadError("decompressed attachment is not JSON")
    return Payload(body, tuple(warnings))


@dataclass(frozen=True, slots=True)
class PayloadStream:
    """Report JSON in pieces of at least 64 KiB (the last may be shorter). ``warnings`` is
    complete once ``chunks`` is exhausted; the iterator raises PayloadError past the limit or
    on corrupt data, and LaterMemberBroken when a gzip member after the first is broken (open
    again with ``first_only=True`` to keep the first member's report, as decode_payload does)."""

    chunks: Iterator[bytes]
    warnings: list[str]


class LaterMemberBroken(PayloadError):
    """A gzip member after the first is corrupt or truncated."""


def open_payload(
    data: bytes, *, limit: int = DEFAULT_LIMIT, first_only: bool = False
) -> PayloadStream:
    """Like decode_payload, but the JSON is never held whole: memory stays ~64 KiB."""
    warnings: list[str] = ["gzip-trailing-data"] if first_only else []
    return PayloadStream(_open(data, limit, first_only, warnings, 0), warnings)


def _open(
    data: bytes, limit: int, first_only: bool, warnings: list[str], depth: int
) -> Iterator[bytes]:
    kind = sniff(data)
    if kind == "gzip":
        raw: Iterator[bytes | str] = _gzip_chunks(data, first_only=first_only)
    elif kind == "zip":
        raw = _zip_chunks(data, warnings)
    elif kind == "json":
        if len(data) > limit:
            raise PayloadError(f"report is larger than the {limit}-byte limit")
        raw = iter((data,))
    else:
        raise PayloadError("attachment is neither gzip, zip nor JSON")
    chunks = _counted(raw, limit, kind, warnings)
    first = next(chunks, b"")
    if sniff(first) == "gzip":
        if depth >= 2:
            raise PayloadError("compression is nested more than twice")
        inner = b"".join((first, *chunks))  # compressed, so within the limit
        warnings.append("nested-compression")
        return _open(inner, limit, False, warnings, depth + 1)
    if sniff(first) != "json":
        raise PayloadError("decompressed attachment is not JSON")
    return itertools.chain((first,), chunks)


def _counted(
    raw: Iterator[bytes | str], limit: int, what: str, warnings: list[str]
) -> Iterator[bytes]:
    """Enforce the limit and coalesce small pieces (many tiny gzip members) into _CHUNK."""
    total = 0
    pending: list[bytes] = []
    size = 0
    for item in raw:
        if isinstance(item, str):
            warnings.append(item)
            continue
        total += len(item)
        if total > limit:
            if what == "json":
                raise PayloadError(f"report is larger than the {limit}-byte limit")
            raise PayloadError(
                f"{what} data decompresses to more than the {limit}-byte limit (bomb refused)"
            )
        pending.append(item)
        size += len(item)
        if size >= _CHUNK:
            yield pending[0] if len(pending) == 1 else b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _gunzip(data: bytes, limit: int) -> tuple[bytes, list[str]]:
    try:
        return _capped(lambda: _gzip_chunks(data), limit, "gzip")
    except LaterMemberBroken:
        # A broken later member must not cost the report the first one holds.
        body, warnings = _capped(lambda: _gzip_chunks(data, first_only=True), limit, "gzip")
        return body, [*warnings, "gzip-trailing-data"]


def _gzip_chunks(data: bytes, *, first_only: bool = False) -> Iterator[bytes | str]:
    """Decompress gzip members in order; yields bytes, or a warning code as a str.

    One pass, linear in the input and output: each member is fed windows of input that start
    small and double, so the input left over after a member ends (``unused_data``, a copy)
    is never longer than twice that member.
    """
    view = memoryview(data)
    pos, end, member = 0, len(data), 0
    while pos < end:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        window = _FIRST_WINDOW
        try:
            while not d.eof:
                if d.unconsumed_tail:
                    piece = d.decompress(d.unconsumed_tail, _CHUNK)
                elif pos < end:
                    feed = view[pos : pos + window]
                    pos += len(feed)
                    window = min(2 * window, _CHUNK)
                    piece = d.decompress(feed, _CHUNK)
                else:
                    piece = d.flush()
                    if piece:
                        yield piece
                    break
                if piece:
                    yield piece
        except zlib.error as exc:
            raise _broken(member, f"gzip data is corrupt: {exc}") from None
        if not d.eof:
            raise _broken(member, "gzip data is truncated")
        pos -= len(d.unused_data)
        member += 1
        if first_only:
            return
        if pos < end and not data.startswith(_GZIP_MAGIC, pos):
            # QUIRKS.md §18: bytes after the stream broke other parsers; they carry nothing.
            yield "gzip-trailing-data"
            return


def _broken(member: int, message: str) -> PayloadError:
    return LaterMemberBroken(message) if member else PayloadError(message)


# What zipfile raises for damaged archives: ValueError (negative seek), RuntimeError
# (encrypted member), zlib.error (damaged deflate data), struct.error (short headers) ...
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    NotImplementedError,
    ValueError,
    RuntimeError,
    zlib.error,
    struct.error,
)


# zipfile builds an object (~500 bytes) per central directory entry, read up to the size the
# end record gives: 17 MB of empty entries took 100 MiB. A report zip has one small entry.
_MAX_ZIP_DIRECTORY = 1024 * 1024
_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"


def _check_zip_directory(data: bytes) -> None:
    tail_start = max(0, len(data) - 22 - 65535)  # the end record, then a comment of <64 KiB
    at = data.rfind(_EOCD, tail_start)
    if at < 0 or len(data) - at < 22:
        return  # zipfile refuses it as not a zip file
    (directory_size,) = struct.unpack_from("<I", data, at + 12)
    if data.startswith(_ZIP64_LOCATOR, max(0, at - 20)) or directory_size == 0xFFFFFFFF:
        raise PayloadError("zip64 archives are not read (a report needs no zip64)")
    if directory_size > _MAX_ZIP_DIRECTORY:
        raise PayloadError(
            f"zip directory of {directory_size} bytes is larger than {_MAX_ZIP_DIRECTORY}"
        )


def _zip_member(data: bytes) -> tuple[zipfile.ZipFile, zipfile.ZipInfo, list[str]]:
    _check_zip_directory(data)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [i for i in archive.infolist() if not i.filename.endswith("/")]
    except _ZIP_ERRORS as exc:
        raise PayloadError(f"zip data is corrupt: {exc}") from None
    if not members:
        raise PayloadError("zip archive is empty")
    preferred = [i for i in members if i.filename.lower().endswith((".json", ".json.gz"))]
    warnings = ["zip-several-members"] if len(members) > 1 else []
    return archive, (preferred or members)[0], warnings


def _zip_chunks(data: bytes, warnings: list[str]) -> Iterator[bytes | str]:
    archive, member, more = _zip_member(data)
    warnings.extend(more)
    try:
        with archive.open(member) as f:
            while chunk := f.read(_CHUNK):
                yield chunk
    except _ZIP_ERRORS as exc:
        raise PayloadError(f"zip member {member.filename!r} is unreadable: {exc}") from None


def _unzip(data: bytes, limit: int) -> tuple[bytes, list[str]]:
    warnings: list[str] = []
    body, more = _capped(lambda: _zip_chunks(data, warnings), limit, "zip")
    return body, [*dict.fromkeys(warnings), *more]


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
