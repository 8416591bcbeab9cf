"""Inputs the fuzzers (fuzz/, tests/test_properties_*.py) found that broke a parser.

Each test rebuilds the crashing input from its cause (no fuzzer output is committed) and
asserts the documented outcome: a value, or the parser's own error. Most were fixed by the
issue 8 work merged from w8core; the ones still marked xfail are open in a module this branch
does not own. fuzz/known.py lists those so a fuzz run counts them instead of stopping; the
mark and the entry go together when the fix is merged.
"""

from __future__ import annotations

import gzip
import json

import pytest

from tests.support import factories as f
from tlsrpt_lmtp.check import tlsrpt_record
from tlsrpt_lmtp.core import names
from tlsrpt_lmtp.core.decompress import PayloadError, decode_payload
from tlsrpt_lmtp.core.mime import extract, header_text
from tlsrpt_lmtp.core.model import Report
from tlsrpt_lmtp.core.report import ReportError, parse_report
from tlsrpt_lmtp.sts.policy import MAX_POLICY_SIZE, parse_policy

OPEN = "issue 8 item 9: found by fuzzing, open in {}"


def report_or_refusal(body: bytes) -> Report | None:
    try:
        return parse_report(body)
    except ReportError:
        return None


def with_success_count(raw_count: str) -> bytes:
    doc = f.report_dict()
    doc["policies"][0]["summary"]["total-successful-session-count"] = "@COUNT@"
    return f.to_json(doc).replace(b'"@COUNT@"', raw_count.encode())


def test_count_with_non_ascii_digits() -> None:
    """'²'.isdigit() is True but int('²') raises ValueError, which escaped parse_report."""
    report = report_or_refusal(with_success_count('"\u00b2"'))
    assert report is not None
    assert report.policies[0].total_successful_session_count == 0
    assert "count-invalid" in report.warnings


@pytest.mark.parametrize("count", ["1" * 5000, '"' + "1" * 5000 + '"'])
def test_integer_longer_than_python_allows(count: str) -> None:
    """A count of more than 4300 digits: the stdlib JSON fallback (or int()) raised ValueError."""
    report = report_or_refusal(with_success_count(count))
    if report is not None:
        assert isinstance(report.policies[0].total_successful_session_count, int)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T00:00:00+01:00", "2024-01-01T00:00:00Z"),
        ("2024-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00"),
    ],
)
def test_date_at_the_edge_of_the_calendar(start: str, end: str) -> None:
    """A valid RFC 3339 date-time that has no UTC equivalent: astimezone raised OverflowError."""
    report = report_or_refusal(f.to_json(f.report_dict(start=start, end=end)))
    if report is not None:
        assert report.date_range_start.utcoffset() == report.date_range_end.utcoffset()


def test_deeply_nested_gzip() -> None:
    """gzip in gzip, 1,100 deep (25 KB): the recursion for nested compression overflowed."""
    data = f.to_json(f.report_dict())
    for _ in range(1100):
        data = gzip.compress(data, compresslevel=1)
    try:
        payload = decode_payload(data)
    except PayloadError:
        return
    assert json.loads(payload.json_bytes)["report-id"]


def _stored_zip_as_deflated(garbage: bytes) -> bytes:
    """A one-member zip whose member claims deflate but holds ``garbage``."""
    stored = bytearray(f.zip_archive([("report.json", b"{" + b" " * 30 + b"}")], deflate=False))
    stored[8] = 8  # local header: compression method
    central = stored.index(b"PK\x01\x02")
    stored[central + 10] = 8  # central directory: compression method
    data_at = stored.index(b"report.json") + len("report.json")
    stored[data_at : data_at + len(garbage)] = garbage
    return bytes(stored)


def test_zip_member_with_corrupt_deflate_data() -> None:
    """zlib.error from inside zipfile was not among the exceptions turned into PayloadError."""
    with pytest.raises(PayloadError):
        decode_payload(_stored_zip_as_deflated(b"\xff\xff\xff\xff"))


def test_zip_with_bytes_missing() -> None:
    """Three bytes cut from the member data shift the directory: zipfile seeks to -3 and
    raises ValueError('negative seek value -3')."""
    archive = f.zip_archive([("report.json", f.to_json(f.report_dict()))])
    with pytest.raises(PayloadError):
        decode_payload(archive[:40] + archive[43:])


def test_damaged_zip_attachment_is_an_error_of_the_mail() -> None:
    """The same damaged zip as a mail attachment: extract raised instead of listing an error."""
    archive = f.zip_archive([("report.json", f.to_json(f.report_dict()))])
    mail = f.tlsrpt_email(
        archive[:40] + archive[43:], content_type="application/zip", filenames=["r.zip"]
    )
    extracted = extract(mail)
    assert not extracted.reports and extracted.errors


def test_encoded_word_with_a_non_ascii_charset() -> None:
    """email.header.make_header raises CharsetError (an email.errors.MessageError, not one of
    the UnicodeError/LookupError/ValueError header_text suppresses)."""
    assert header_text("=?\xff\xfe8859-1?q?R=E9port?=") is not None
    mail = b"From: a@b.example\nSubject: =?\xff\xfe8859-1?q?R=E9port?=\n\n{}\n"
    assert extract(mail).meta.subject is not None


def test_policy_line_of_blanks_before_a_character_parses_in_one_pass() -> None:
    """Found while writing fuzz/fuzz_sts.py: the policy line pattern "(.*?)[ \\t]*" backtracked
    quadratically over blanks followed by a character; a 64 KiB policy took 40 s of the policy
    daemon's CPU. The value keeps its inner blanks and loses its trailing ones."""
    blanks = " " * (MAX_POLICY_SIZE - 100)
    body = f"version: STSv1\nmode: enforce\nmx: a.example\nnote: x{blanks}y \t\nmax_age: 1\n"
    policy = parse_policy(body.encode())
    assert policy.lines[3] == f"note: x{blanks}y"
    assert policy.mx == ("a.example",)


def test_tlsrpt_record_with_an_unclosed_ipv6_bracket_is_an_error() -> None:
    """Found by fuzz/fuzz_sts.py (TLSRPT record input) in seconds: urlsplit raised
    ValueError ("Invalid IPv6 URL") out of ``check``'s record parser for rua=https://[..."""
    result = tlsrpt_record.parse_txt([b"v=TLSRPTv1; rua=https://[2001:db8::1/v1"])
    assert result.record is None
    assert result.error is not None and "Invalid IPv6 URL" in result.error


@pytest.mark.parametrize(
    "name", ["B\u00fccher.Example..", "x.example\x1c.", "-le\t.\x00*\x15\x00\t.\t.\t.\t."]
)
def test_canonical_name_is_a_fixed_point(name: str) -> None:
    """Found by fuzz/fuzz_names.py: the fallback for an invalid name (strip, drop trailing
    dots, lower-case) can produce a valid name, whose canonical form differs: 'Bücher.Example..'
    is stored as 'bücher.example' while 'bücher.example' is stored as 'xn--bcher-kva.example',
    so one domain is counted and filtered as two."""
    stored = names.canonical(name)
    assert names.canonical(stored) == stored
