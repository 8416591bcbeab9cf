"""Properties of MIME extraction (tlsrpt_lmtp.core.mime) over generated and damaged messages.

Documented behaviour: ``extract`` never raises; what it cannot use is in ``errors``.
"""

from __future__ import annotations

import base64
import binascii
import gzip

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.support import factories as f
from tests.support import properties as p
from tlsrpt_lmtp.core.mime import extract, header_text
from tlsrpt_lmtp.core.mimeparts import fast_parts, stdlib_parts
from tlsrpt_lmtp.core.mimeparts import parts as mime_parts
from tlsrpt_lmtp.core.model import Extracted

REPORT = f.to_json(f.report_dict())
CHARSETS = ("utf-8", "iso-8859-1", "utf-7", "us-ascii", "windows-1252", "utf-16")
TYPES = (
    "application/tlsrpt+gzip",
    "application/tlsrpt+json",
    "application/octet-stream",
    "application/zip",
    "text/plain",
)


def word(text: str, charset: str, b_encoding: bool) -> str:
    raw = text.encode(charset, "replace")
    if b_encoding:
        return f"=?{charset}?b?{base64.b64encode(raw).decode()}?="
    return f"=?{charset}?q?{binascii.b2a_qp(raw, header=True).decode().replace('?', '=3F')}?="


words = st.builds(word, p.plain_text, st.sampled_from(CHARSETS), st.booleans())
header_values = st.lists(
    st.one_of(words, p.plain_text.map(lambda t: t.replace("\n", " "))), max_size=4
).map(" ".join)


@st.composite
def parts(draw: st.DrawFn) -> f.Part:
    body = draw(p.containers(REPORT) | st.binary(max_size=40))
    ctype = draw(st.sampled_from(TYPES))
    name = draw(st.sampled_from([None, "r.json", "r.json.gz", "r.zip", "x!y.gz", "notes.txt"]))
    cte = draw(st.sampled_from(["base64", "quoted-printable", "7bit"]))
    headers = [f"Content-Type: {ctype}"]
    if name is not None:
        headers.append(f'Content-Disposition: attachment;\n\tfilename="{name}"')
    headers.append(f"Content-Transfer-Encoding: {cte}")
    if cte == "base64":
        text = f.b64_lines(body)
    elif cte == "quoted-printable":
        text = binascii.b2a_qp(body).decode("ascii")
    else:
        text = body.decode("latin-1").replace("\r", "")
    return f.Part(headers, text)


_ANY_BOOL = st.booleans()


@st.composite
def messages(draw: st.DrawFn, close_boundary: st.SearchStrategy[bool] = _ANY_BOOL) -> bytes:
    headers = [
        f"From: {draw(header_values)} <noreply@reporter.example>",
        f"Subject: {draw(header_values)}",
        f"TLS-Report-Domain: {draw(st.sampled_from(['example.com', 'Example.COM.', '']))}",
        f"TLS-Report-Submitter: {draw(header_values)}",
    ]
    options = {
        "close_boundary": draw(close_boundary),
        "crlf": draw(st.booleans()),
        "boundary": draw(st.sampled_from(["b1", "----=_Part_42", "a'(b)+_,-./:=?"])),
    }
    content_type = draw(st.sampled_from([None, 'multipart/mixed; boundary="{b}"']))
    if content_type:
        options["content_type"] = content_type.format(b=options["boundary"])
    return f.raw_email(*draw(st.lists(parts(), min_size=1, max_size=3)), headers=headers, **options)


def check(raw: bytes) -> Extracted:
    """extract's result: a report or an error per candidate part, at most one per leaf."""
    extracted = extract(raw)
    assert all(isinstance(e, str) and e for e in extracted.errors)
    assert all(r.report_id for r in extracted.reports)
    leaves = len(mime_parts(raw).leaves)
    assert len(extracted.reports) + len(extracted.errors) <= max(1, leaves)
    return extracted


@given(messages())
def test_generated_messages_never_raise(raw: bytes) -> None:
    extracted = check(raw)
    assert len(extracted.reports) + len(extracted.errors) >= 1


def check_same_parts(raw: bytes) -> None:
    fast = fast_parts(raw)
    if fast is not None:
        slow = stdlib_parts(raw)
        assert [leaf.payload for leaf in fast.leaves] == [leaf.payload for leaf in slow.leaves]
        assert fast.content_type == slow.content_type


@given(messages(close_boundary=st.just(True)))
def test_fast_reader_agrees_with_the_email_package(raw: bytes) -> None:
    """mimeparts: whenever the fast reader accepts a message, it reads it as the stdlib does."""
    check_same_parts(raw)


_UNCLOSED = f.raw_email(f.Part(["Content-Type: application/json"], "{}"), close_boundary=False)


@pytest.mark.xfail(strict=True, reason="issue 8 item 9: found by fuzzing, open in mimeparts.py")
@given(messages(close_boundary=st.just(False)))
@example(_UNCLOSED)
def test_fast_reader_agrees_with_the_email_package_without_close_boundary(raw: bytes) -> None:
    """Without a closing boundary the fast reader keeps the last part's final line break,
    which the email package drops (a 7bit gzip part then gains trailing data)."""
    check_same_parts(raw)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    check(raw)


@given(
    st.sampled_from(
        [
            f.tlsrpt_email(gzip.compress(REPORT)),
            f.raw_email(f.attachment_part(gzip.compress(REPORT)), close_boundary=False),
        ]
    ).flatmap(p.mutated)
)
def test_damaged_gzip_report_mails_never_raise(raw: bytes) -> None:
    check(raw)


@given(header_values)
def test_encoded_words_in_known_charsets_decode(value: str) -> None:
    text = header_text(value)
    assert text is None or (isinstance(text, str) and text == text.strip())


@given(
    st.builds(lambda cs, t: f"=?{cs}?q?{t}?=", p.plain_text, st.from_regex(r"\A[A-Za-z]{0,5}\Z"))
)
@example("=?\xff\xfe8859-1?q?R=E9port?=")
def test_encoded_words_in_any_charset_decode_or_stay(value: str) -> None:
    """A charset name that is not ASCII makes email.header raise CharsetError."""
    text = header_text(value)
    assert text is None or isinstance(text, str)


_ZIP = f.zip_archive([("r.json", REPORT)])


def _zip_mail(archive: bytes) -> bytes:
    # raw_email: the stdlib generator would draw a random boundary inside the strategy
    return f.raw_email(f.attachment_part(archive, content_type="application/zip", filename="r.zip"))


@given(st.just(_ZIP).flatmap(p.mutated).map(_zip_mail))
@example(_zip_mail(_ZIP[:40] + _ZIP[43:]))  # three bytes gone: "negative seek value -3"
def test_damaged_zip_report_mails_never_raise(raw: bytes) -> None:
    """A damaged zip attachment makes zipfile raise more than BadZipFile; extract let it out."""
    check(raw)
