"""The fast MIME reader gives what the email package gives, or steps aside."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.samples import shared_dir
from tlsrpt_lmtp.core.mime import header_text
from tlsrpt_lmtp.core.mimeparts import Parts, fast_parts, stdlib_parts

SAMPLES = shared_dir() / "samples" / "real"
EMLS = sorted(SAMPLES.glob("*.eml")) if SAMPLES.is_dir() else []


def comparable(p: Parts) -> tuple[object, ...]:
    leaves = tuple(
        (leaf.content_type, leaf.filename, leaf.payload.rstrip(b"\r\n")) for leaf in p.leaves
    )
    keys = ("from", "subject", "message-id", "tls-report-domain", "tls-report-submitter")
    return (
        p.content_type,
        p.params.get("report-type"),
        {k: header_text(p.headers.get(k)) for k in keys},
        leaves,
        p.close_boundary_missing,
    )


@pytest.mark.parametrize("path", EMLS, ids=[p.name for p in EMLS])
def test_real_mail_takes_the_fast_path_with_the_same_result(path: Path) -> None:
    raw = path.read_bytes()
    fast = fast_parts(raw)
    assert fast is not None, "every real report mail should be read without the fallback"
    assert comparable(fast) == comparable(stdlib_parts(raw))


@pytest.mark.parametrize(
    "raw",
    [
        # RFC 2231 continuation in a file name
        b"Content-Type: multipart/report; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: application/json; name*0=a; name*1=b.json\r\n\r\n{}\r\n--b--\r\n",
        # a nested message
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\nhi\r\n--b--\r\n",
        # the boundary never occurs
        b"Content-Type: multipart/report; boundary=zzz\r\n\r\nno parts here\r\n",
        # an unknown transfer encoding
        b"Content-Type: application/json\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n{}\r\n",
    ],
)
def test_unusual_mail_is_left_to_the_email_package(raw: bytes) -> None:
    assert fast_parts(raw) is None
    assert stdlib_parts(raw).content_type.startswith(("multipart/", "application/"))


def test_unclosed_multipart_and_crlf_like_mail_ru() -> None:
    raw = (
        b'Content-Type: multipart/report; report-type=tlsrpt; boundary="x y"\r\n\r\n'
        b"preamble\r\n--x y\r\nContent-Type: text/plain\r\n\r\nhuman\r\n--x y\r\n"
        b'Content-Type: application/tlsrpt+json\r\n\r\n{"a": 1}\r\n'
    )
    fast = fast_parts(raw)
    assert fast is not None
    assert fast.close_boundary_missing
    assert comparable(fast) == comparable(stdlib_parts(raw))
