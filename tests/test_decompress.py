"""decode_payload: sniffing, gzip/zip decompression under a cap, bombs refused in bounded memory."""

from __future__ import annotations

import gzip
import io
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.factories import (
    MiB,
    detail,
    gzip_bomb,
    gzip_member,
    report_dict,
    sts_policy,
    to_json,
    zip_archive,
    zip_bomb,
)
from tlsrpt_lmtp.core.decompress import DEFAULT_LIMIT, PayloadError, decode_payload, sniff
from tlsrpt_lmtp.core.report import parse_report

REPORT = to_json(report_dict(report_id="decompress-1"))
BOMB_SIZE = 256 * MiB
PEAK_BUDGET = 16 * MiB


def peak_allocation(action: Callable[[], object]) -> int:
    """Peak bytes allocated by Python while ``action`` runs (tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------------------------
# sniffing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (gzip.compress(REPORT), "gzip"),
        (zip_archive([("r.json", REPORT)]), "zip"),
        (REPORT, "json"),
        (b"\xef\xbb\xbf" + REPORT, "json"),
        (b"\r\n  \t" + REPORT, "json"),
        (b"[" + REPORT + b"]", "json"),
        (b"Hello, this is text", None),
        (b"", None),
        (b"\x1f", None),
    ],
)
def test_sniff_reads_the_first_bytes_not_the_media_type(data: bytes, kind: str | None) -> None:
    assert sniff(data) == kind


def test_plain_json_passes_through_unchanged() -> None:
    payload = decode_payload(REPORT)
    assert payload.json_bytes == REPORT
    assert payload.warnings == ()


def test_neither_gzip_zip_nor_json_is_refused() -> None:
    with pytest.raises(PayloadError, match="neither gzip, zip nor JSON"):
        decode_payload(b"%PDF-1.7 not a report")


# --------------------------------------------------------------------------------------------
# gzip (QUIRKS.md 18)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"os_byte": 3, "xfl": 2, "mtime": 0},  # Unix, best compression, Google
        {"os_byte": 0, "xfl": 4, "mtime": 0},  # FAT, fastest
        {"os_byte": 11, "xfl": 0, "mtime": 1_770_508_800},  # NTFS, mtime set
        {"os_byte": 255, "mtime": 0, "fname": b"google.com!example.com!1!2!001.json"},
        {"fname": b"rpt01.json.1", "mtime": 1_672_824_106, "os_byte": 3},  # mail-auth rpt01
        {"fcomment": b"TLS report", "fextra": b"AB\x02\x00hi", "fhcrc": True},
    ],
    ids=["unix", "fat", "ntfs-mtime", "fname", "fname-mtime", "comment-extra-hcrc"],
)
def test_quirk_18_gzip_header_variants_all_decode(options: dict[str, Any]) -> None:
    member = gzip_member(REPORT, **options)
    assert gzip.decompress(member) == REPORT  # the stdlib agrees the member is valid
    payload = decode_payload(member)
    assert payload.json_bytes == REPORT
    assert payload.warnings == ()


@pytest.mark.parametrize(
    "trailer",
    [b"\x00" * 8, b"\n", b"garbage after the stream", b"\x1f"],
    ids=["zero-padding", "newline", "text", "half-magic"],
)
def test_quirk_18_trailing_bytes_after_the_gzip_stream_are_ignored_and_flagged(
    trailer: bytes,
) -> None:
    payload = decode_payload(gzip_member(REPORT, os_byte=3) + trailer)
    assert payload.json_bytes == REPORT
    assert payload.warnings == ("gzip-trailing-data",)
    assert parse_report(payload.json_bytes).report_id == "decompress-1"


def test_concatenated_gzip_members_decode_as_one_stream() -> None:
    half = len(REPORT) // 2
    data = gzip_member(REPORT[:half], os_byte=3) + gzip_member(REPORT[half:], os_byte=0)
    payload = decode_payload(data)
    assert payload.json_bytes == REPORT
    assert payload.warnings == ()


def test_stdlib_gzip_output_decodes() -> None:
    payload = decode_payload(gzip.compress(REPORT, mtime=0))
    assert payload.json_bytes == REPORT


def test_gzip_applied_twice_is_unwrapped_and_flagged() -> None:
    payload = decode_payload(gzip.compress(gzip.compress(REPORT)))
    assert payload.json_bytes == REPORT
    assert payload.warnings == ("nested-compression",)


def test_gzip_of_something_that_is_not_json_is_refused() -> None:
    with pytest.raises(PayloadError, match="decompressed attachment is not JSON"):
        decode_payload(gzip.compress(b"<html>hello</html>"))


def test_utf8_bom_inside_gzip_reaches_the_parser_and_is_flagged() -> None:
    payload = decode_payload(gzip.compress(b"\xef\xbb\xbf" + REPORT))
    assert payload.json_bytes == b"\xef\xbb\xbf" + REPORT
    report = parse_report(payload.json_bytes)
    assert report.report_id == "decompress-1"
    assert report.warnings == ("utf8-bom",)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda g: _flip(g, len(g) - 6), "gzip data is corrupt"),  # CRC-32 of the data
        (lambda g: _flip(g, len(g) - 2), "gzip data is corrupt"),  # ISIZE
        (lambda g: g[:2] + b"\x07" + g[3:], "gzip data is corrupt"),  # not deflate
        (lambda g: g[:10] + b"\xff" * 16 + g[26:], "gzip data is corrupt"),  # deflate garbage
        (lambda g: g[: len(g) // 2], "gzip data is truncated"),
        (lambda g: g[:-4], "gzip data is truncated"),
        (lambda g: g[:10], "gzip data is truncated"),
        (lambda g: g[:2], "gzip data is truncated"),
    ],
    ids=["crc", "isize", "method", "deflate", "half", "no-isize", "header-only", "magic-only"],
)
def test_corrupt_or_truncated_gzip_is_refused_clearly(
    make: Callable[[bytes], bytes], reason: str
) -> None:
    data = make(gzip_member(REPORT, os_byte=3))
    with pytest.raises(PayloadError, match=reason):
        decode_payload(data)


@pytest.mark.parametrize(
    "broken",
    [gzip_member(b"{}")[:12], gzip_member(b"{}")[:10] + b"\xff" * 20],
    ids=["truncated", "corrupt"],
)
def test_broken_second_gzip_member_keeps_the_first_members_report(broken: bytes) -> None:
    payload = decode_payload(gzip_member(REPORT) + broken)
    assert payload.json_bytes == REPORT
    assert payload.warnings == ("gzip-trailing-data",)


def test_truncated_only_member_is_refused() -> None:
    with pytest.raises(PayloadError, match="truncated"):
        decode_payload(gzip_member(REPORT)[:-12])


# --------------------------------------------------------------------------------------------
# zip
# --------------------------------------------------------------------------------------------


def test_every_one_byte_damage_to_a_zip_is_refused_as_a_payload_error() -> None:
    """zipfile raises ValueError (negative seek), zlib.error, IndexError (empty name) ..."""
    data = zip_archive([("r.json", REPORT + b" " * 300)])
    outcomes = set()
    for at in range(len(data)):
        for value in (0x00, 0x80, 0xFF):
            damaged = data[:at] + bytes([value]) + data[at + 1 :]
            try:
                decode_payload(damaged)
                outcomes.add("read")
            except PayloadError:
                outcomes.add("refused")
    assert outcomes == {"read", "refused"}


def test_zip_with_a_huge_directory_is_refused_before_zipfile_reads_it() -> None:
    """zipfile builds an object per directory entry: 17 MB of them took 100 MiB."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for i in range(30_000):
            archive.writestr(zipfile.ZipInfo(f"member-{i:08d}.txt"), b"")
    with pytest.raises(PayloadError, match=r"zip directory of \d+ bytes is larger than"):
        decode_payload(buf.getvalue())


def test_zip64_end_record_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # makes zipfile write zip64 records
    data = zip_archive([("r.json", REPORT), ("s.json", REPORT)])
    monkeypatch.undo()
    with pytest.raises(PayloadError, match="zip64"):
        decode_payload(data)


def test_zip_with_a_comment_is_read() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("r.json", REPORT)
        archive.comment = b"x" * 60_000
    assert decode_payload(buf.getvalue()).json_bytes == REPORT


def test_zip_member_with_an_empty_name_is_read() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(zipfile.ZipInfo(""), REPORT)
    assert decode_payload(buf.getvalue()).json_bytes == REPORT


@pytest.mark.parametrize("deflate", [True, False], ids=["deflated", "stored"])
def test_zip_with_a_json_member(deflate: bool) -> None:
    data = zip_archive([("google.com!example.com!1!2.json", REPORT)], deflate=deflate)
    payload = decode_payload(data)
    assert payload.json_bytes == REPORT
    assert payload.warnings == ()


def test_zip_with_several_members_prefers_the_json_one_and_flags() -> None:
    data = zip_archive(
        [
            ("README.txt", b"not the report"),
            ("report.json", REPORT),
            ("other.json", b'{"report-id": "second"}'),
        ]
    )
    payload = decode_payload(data)
    assert payload.json_bytes == REPORT
    assert payload.warnings == ("zip-several-members",)


def test_zip_member_without_json_name_is_still_read() -> None:
    payload = decode_payload(zip_archive([("report.txt", REPORT)]))
    assert payload.json_bytes == REPORT
    assert payload.warnings == ()


def test_zip_directory_entries_are_not_members() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("reports/", b"")
        archive.writestr("reports/r.json", REPORT)
    payload = decode_payload(buf.getvalue())
    assert payload.json_bytes == REPORT
    assert payload.warnings == ()


def test_json_gz_inside_zip_is_unwrapped_and_flagged() -> None:
    data = zip_archive([("r.json.gz", gzip.compress(REPORT))], deflate=False)
    payload = decode_payload(data)
    assert payload.json_bytes == REPORT
    assert payload.warnings == ("nested-compression",)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PK\x03\x04" + b"\x00" * 40, "zip data is corrupt"),
        (zip_archive([("r.json", REPORT)])[:60], "zip data is corrupt"),
    ],
    ids=["garbage", "truncated"],
)
def test_corrupt_zip_is_refused_clearly(data: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        decode_payload(data)


def test_empty_zip_is_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("dir/", b"")
    with pytest.raises(PayloadError, match="zip archive is empty"):
        decode_payload(buf.getvalue())


def test_zip_member_with_bad_crc_is_refused_clearly() -> None:
    data = zip_archive([("r.json", REPORT)], deflate=False)
    index = data.index(REPORT) + 5
    with pytest.raises(PayloadError, match=r"zip member 'r.json' is unreadable: Bad CRC-32"):
        decode_payload(_flip(data, index))


# --------------------------------------------------------------------------------------------
# size cap and decompression bombs
# --------------------------------------------------------------------------------------------


def test_gzip_bomb_factory_is_a_real_gzip_stream() -> None:
    assert gzip.decompress(gzip_bomb(4 * MiB)) == bytes(4 * MiB)
    assert len(gzip_bomb(BOMB_SIZE)) < BOMB_SIZE // 500


def test_zip_bomb_factory_is_a_real_zip() -> None:
    with zipfile.ZipFile(io.BytesIO(zip_bomb(4 * MiB))) as archive:
        assert archive.testzip() is None
        assert archive.read("report.json") == bytes(4 * MiB)


def test_gzip_bomb_is_refused_in_bounded_memory() -> None:
    bomb = gzip_bomb(BOMB_SIZE)
    errors: list[PayloadError] = []

    def refuse() -> None:
        with pytest.raises(PayloadError) as caught:
            decode_payload(bomb)
        errors.append(caught.value)

    peak = peak_allocation(refuse)
    message = str(errors[0])
    assert f"more than the {DEFAULT_LIMIT}-byte limit" in message
    assert "bomb refused" in message
    assert message.startswith("gzip data")
    assert peak < PEAK_BUDGET, f"peak {peak} bytes while refusing a {BOMB_SIZE}-byte bomb"


def test_zip_bomb_is_refused_in_bounded_memory() -> None:
    bomb = zip_bomb(BOMB_SIZE)
    errors: list[PayloadError] = []

    def refuse() -> None:
        with pytest.raises(PayloadError) as caught:
            decode_payload(bomb)
        errors.append(caught.value)

    peak = peak_allocation(refuse)
    message = str(errors[0])
    assert f"more than the {DEFAULT_LIMIT}-byte limit" in message
    assert message.startswith("zip data")
    assert peak < PEAK_BUDGET, f"peak {peak} bytes while refusing a {BOMB_SIZE}-byte bomb"


def test_bomb_inside_a_second_layer_of_gzip_is_refused() -> None:
    wrapped = gzip.compress(gzip_bomb(BOMB_SIZE))
    errors: list[PayloadError] = []

    def refuse() -> None:
        with pytest.raises(PayloadError) as caught:
            decode_payload(wrapped)
        errors.append(caught.value)

    peak = peak_allocation(refuse)
    assert f"more than the {DEFAULT_LIMIT}-byte limit" in str(errors[0])
    assert peak < PEAK_BUDGET


def test_limit_is_exact_and_configurable() -> None:
    body = REPORT + b" " * (1000 - len(REPORT))
    assert len(body) == 1000
    for data in (gzip.compress(body), zip_archive([("r.json", body)])):
        assert decode_payload(data, limit=1000).json_bytes == body
        with pytest.raises(PayloadError, match="999-byte limit"):
            decode_payload(data, limit=999)
    assert decode_payload(body, limit=1000).json_bytes == body
    with pytest.raises(PayloadError, match="larger than the 999-byte limit"):
        decode_payload(body, limit=999)


def _large_report(size: int) -> bytes:
    """A real report of at least ``size`` bytes: one policy with many failure details."""
    one = len(to_json(detail("validation-failure", 1, sending_ip="192.0.2.1")))
    count = size // one + 1
    details = [
        detail("validation-failure", 1, sending_ip=f"192.0.{i // 256 % 256}.{i % 256}")
        for i in range(count)
    ]
    return to_json(report_dict(sts_policy(success=1, failure=count, details=details)))


def test_large_but_allowed_payload_decodes_exactly() -> None:
    body = _large_report(6 * MiB)
    assert 6 * MiB < len(body) < DEFAULT_LIMIT
    for data in (gzip.compress(body, compresslevel=1), zip_archive([("big.json", body)])):
        payload = decode_payload(data)
        assert payload.json_bytes == body
        assert payload.warnings == ()
    json_bytes = decode_payload(gzip.compress(body, compresslevel=1)).json_bytes
    report = parse_report(json_bytes, max_failure_details=10**6)
    assert report.total_failure_session_count == len(report.policies[0].failure_details)
    assert report.warnings == ()
    capped = parse_report(json_bytes)  # the default keeps 10,000 and aggregates the rest
    details = capped.policies[0].failure_details
    assert sum(d.failed_session_count for d in details) == report.total_failure_session_count
    assert capped.warnings == ("failure-details-aggregated",)


def test_large_payload_with_trailing_data_keeps_its_warning_once() -> None:
    body = _large_report(5 * MiB)
    payload = decode_payload(gzip.compress(body, compresslevel=1) + b"\x00\x00")
    assert payload.json_bytes == body
    assert payload.warnings == ("gzip-trailing-data",)


def test_deflate_stream_without_gzip_wrapper_is_not_accepted() -> None:
    raw = zlib.compress(REPORT)
    with pytest.raises(PayloadError, match="neither gzip, zip nor JSON"):
        decode_payload(raw)
