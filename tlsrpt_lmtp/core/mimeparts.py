"""A message's headers and leaf parts, read two ways (sans-I/O).

``fast_parts`` is a narrow MIME reader for what report mail looks like: plain headers,
multipart with a boundary, base64 / quoted-printable / 7bit leaves. The stdlib parser
spends most of a small report's time compiling a regular expression per boundary; this
reader only splits bytes. Whenever it meets anything it does not handle exactly (RFC 2231
parameters, encoded-words in parameters, nested messages, a missing boundary), it returns
None and ``stdlib_parts`` (the email package) reads the message instead. Both give the same
``Parts`` value, and a test holds them equal over every sample.
"""

from __future__ import annotations

import binascii
import email.parser
import re
from dataclasses import dataclass
from email.header import Header, decode_header
from email.message import Message

_MAX_DEPTH = 4
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(rb"\r?\n[ \t]+")
_PARAM = re.compile(r';\s*([A-Za-z0-9_.!#$%&\'*+^`{|}~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s"]*)')
_stdlib = email.parser.BytesParser()


@dataclass(frozen=True, slots=True)
class Leaf:
    content_type: str
    filename: str | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class Parts:
    headers: dict[str, str]  # top-level headers, lower-case names, first occurrence
    content_type: str
    params: dict[str, str]
    leaves: tuple[Leaf, ...]
    close_boundary_missing: bool


class _Unsupported(Exception):
    pass


def fast_parts(raw: bytes) -> Parts | None:
    try:
        headers, body = _split(raw)
        if not headers:
            return None
        ctype, params = _content_type(headers.get("content-type"))
        leaves: list[Leaf] = []
        unclosed = _walk(headers, ctype, params, body, leaves, 0)
    except (_Unsupported, ValueError, binascii.Error):
        return None
    return Parts(headers, ctype, params, tuple(leaves), unclosed)


def _split(raw: bytes) -> tuple[dict[str, str], bytes]:
    m = _HEADER_END.search(raw)
    head, body = (raw[: m.start()], raw[m.end() :]) if m else (raw, b"")
    headers: dict[str, str] = {}
    for line in _FOLD.sub(b" ", head).splitlines():
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name:
            if line.startswith(b"From "):
                continue  # an mbox separator
            raise _Unsupported
        key = name.decode("ascii").lower()
        if key not in headers:
            headers[key] = value.strip().decode("utf-8", "replace")
    return headers, body


def _content_type(value: str | None) -> tuple[str, dict[str, str]]:
    if not value:
        return "text/plain", {}
    media, _, rest = value.partition(";")
    media = media.strip().lower()
    if "/" not in media or " " in media:
        raise _Unsupported
    return media, _params(";" + rest)


def _params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in _PARAM.findall(text):
        if name.endswith("*") or "*" in name or "=?" in value:
            raise _Unsupported  # RFC 2231 or encoded-words: leave it to the email package
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(name.lower(), value)
    return params


def _walk(
    headers: dict[str, str],
    ctype: str,
    params: dict[str, str],
    body: bytes,
    leaves: list[Leaf],
    depth: int,
) -> bool:
    """Collect the leaves under one entity; True if a closing boundary was missing."""
    if ctype.startswith("multipart/"):
        if depth >= _MAX_DEPTH:
            raise _Unsupported
        boundary = params.get("boundary")
        if not boundary:
            raise _Unsupported
        parts, closed = _split_multipart(body, boundary.encode("utf-8", "surrogateescape"))
        unclosed = not closed
        for part in parts:
            sub_headers, sub_body = _split(part)
            sub_type, sub_params = _content_type(sub_headers.get("content-type"))
            unclosed |= _walk(sub_headers, sub_type, sub_params, sub_body, leaves, depth + 1)
        return unclosed
    if ctype.startswith("message/"):
        raise _Unsupported
    leaves.append(Leaf(ctype, _filename(headers, params), _decode(headers, body)))
    return False


def _split_multipart(body: bytes, boundary: bytes) -> tuple[list[bytes], bool]:
    delimiter = b"--" + boundary
    if not body.startswith(delimiter):
        at = body.find(b"\n" + delimiter)
        if at < 0:
            raise _Unsupported
        body = body[at + 1 :]
    chunks = body.split(b"\n" + delimiter)
    chunks[0] = chunks[0][len(delimiter) :]
    parts: list[bytes] = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            return parts, True
        line_end = chunk.find(b"\n")
        if line_end < 0 or chunk[:line_end].strip():
            raise _Unsupported  # text after a boundary on its line
        part = chunk[line_end + 1 :]
        parts.append(part[:-1] if part.endswith(b"\r") else part)
    return parts, False


def _filename(headers: dict[str, str], params: dict[str, str]) -> str | None:
    disposition = headers.get("content-disposition")
    if disposition:
        name = _params(";" + disposition.partition(";")[2]).get("filename")
        if name:
            return name
    return params.get("name")


def _decode(headers: dict[str, str], body: bytes) -> bytes:
    cte = headers.get("content-transfer-encoding", "7bit").strip().lower()
    if cte == "base64":
        return binascii.a2b_base64(body)
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    if cte in ("7bit", "8bit", "binary"):
        return body
    raise _Unsupported


def stdlib_parts(raw: bytes) -> Parts:
    msg = _stdlib.parsebytes(raw)
    headers: dict[str, str] = {}
    for name, value in msg.items():
        headers.setdefault(name.lower(), _header_str(value))
    leaves = tuple(
        Leaf(part.get_content_type(), part.get_filename(), _payload(part))
        for part in msg.walk()
        if not part.is_multipart()
    )
    params = {k.lower(): str(v) for k, v in msg.get_params([])[1:]}
    unclosed = any(
        type(d).__name__ == "CloseBoundaryNotFoundDefect" for p in msg.walk() for d in p.defects
    )
    return Parts(headers, msg.get_content_type(), params, leaves, unclosed)


def parts(raw: bytes) -> Parts:
    return fast_parts(raw) or stdlib_parts(raw)


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _header_str(value: object) -> str:
    """Raw 8-bit header bytes (RFC 6532 allows UTF-8) come back as a Header that would print
    them as U+FFFD; read them as UTF-8 instead."""
    if not isinstance(value, Header):
        return str(value)
    return "".join(
        chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
        for chunk, _charset in decode_header(value)
    )
