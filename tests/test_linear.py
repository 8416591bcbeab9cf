"""Linear time for many gzip members and many RFC 2047 encoded-words, shown by counting work
(bytes handed to zlib or to the charset decoder, Python lines run) at n and 2n, never time."""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from tests.support.factories import gzip_member, report_dict, to_json
from tlsrpt_lmtp.core import decompress
from tlsrpt_lmtp.core.decompress import decode_payload, open_payload
from tlsrpt_lmtp.core.mime import MAX_HEADER_CHARS, header_text
from tlsrpt_lmtp.core.rfc2047 import codec_decode, decode_words

REPORT = to_json(report_dict())


class _Counter:
    def __init__(self) -> None:
        self.bytes_in = 0
        self.calls = 0


def _counting_zlib(monkeypatch: pytest.MonkeyPatch) -> _Counter:
    counter = _Counter()
    real = zlib.decompressobj

    class Counting:
        def __init__(self, wbits: int) -> None:
            self._d = real(wbits)

        def decompress(self, data: Any, max_length: int = 0) -> bytes:
            counter.bytes_in += len(data)
            counter.calls += 1
            return self._d.decompress(data, max_length)

        def flush(self) -> bytes:
            counter.calls += 1
            return self._d.flush()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._d, name)

    monkeypatch.setattr(decompress.zlib, "decompressobj", Counting)
    return counter


def _members(n: int) -> bytes:
    """The report split into n gzip members (one byte each, then padding members)."""
    body = REPORT + b" " * max(0, n - len(REPORT))
    return b"".join(gzip_member(body[i : i + 1]) for i in range(n))


def _gzip_work(n: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, int]:
    with monkeypatch.context() as m:
        counter = _counting_zlib(m)
        stream = open_payload(_members(n))
        chunks = list(stream.chunks)
    assert b"".join(chunks).rstrip() == REPORT
    return counter.bytes_in, counter.calls, len(chunks)


@pytest.mark.parametrize("n", [2_000, 8_000])
def test_many_gzip_members_cost_linear_work(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    bytes_n, calls_n, chunks_n = _gzip_work(n, monkeypatch)
    bytes_2n, calls_2n, chunks_2n = _gzip_work(2 * n, monkeypatch)
    # Each member is fed at most a small window: the bytes handed to zlib grow like the input
    # (a reader that hands zlib "the rest of the data" for each member would grow 4x here).
    assert 1.8 < bytes_2n / bytes_n < 2.2
    assert 1.8 < calls_2n / calls_n < 2.2
    assert bytes_n < 300 * len(_members(n))
    # Tiny outputs are coalesced: the parser gets few pieces, not one per member.
    assert chunks_n == chunks_2n == 1


def test_one_large_member_is_fed_in_bounded_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    body = REPORT + b" " * (3 * 1024 * 1024)
    data = gzip_member(body)
    counter = _counting_zlib(monkeypatch)
    assert decode_payload(data).json_bytes == body
    # the capped reader decompresses twice (count first, keep second) past 4 MiB only
    assert counter.bytes_in <= 2 * len(data) + 2 * 64 * 1024


def _traced_lines(run: Callable[[], Any]) -> int:
    lines = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal lines
        if event == "line":
            lines += 1
        return tracer

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(old)
    return lines


def _words(n: int) -> str:
    return " ".join(["=?utf-8?q?caf=C3=A9?=", "plain", "=?iso-8859-1?b?6Q==?="] * n)


def _decode_work(n: int) -> tuple[int, int, int, str]:
    counted = _Counter()

    def decode(data: bytes, charset: str) -> str | None:
        counted.bytes_in += len(data)
        counted.calls += 1
        return codec_decode(data, charset)

    text = _words(n)
    out: list[str] = []
    lines = _traced_lines(lambda: out.append(decode_words(text, decode)))
    return counted.bytes_in, counted.calls, lines, out[0]


@pytest.mark.parametrize("n", [1_000, 4_000])
def test_many_encoded_words_cost_linear_work(n: int) -> None:
    bytes_n, calls_n, lines_n, text_n = _decode_work(n)
    bytes_2n, calls_2n, lines_2n, text_2n = _decode_work(2 * n)
    assert text_n.startswith("café plain écafé plain")  # space between words dropped
    assert text_2n == text_n * 2
    for small, large in ((bytes_n, bytes_2n), (calls_n, calls_2n), (lines_n, lines_2n)):
        assert 1.9 < large / small < 2.1


def test_adjacent_words_are_decoded_as_one_run() -> None:
    """A multi-byte character split across two words (and whitespace between words dropped)."""
    calls: list[bytes] = []

    def decode(data: bytes, charset: str) -> str | None:
        calls.append(data)
        return codec_decode(data, charset)

    assert decode_words("=?utf-8?q?caf=C3?=\r\n =?utf-8?q?=A9?= x", decode) == "café x"
    assert calls == [b"caf\xc3\xa9"]


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("=?utf-7?q?+2AA-?=", "\ud800"),  # sanitised later, by clean_text
        ("=?x-unknown?q?abc?= d", "=?x-unknown?q?abc?= d"),
        ("=?utf-8?b?not base64?=", "=?utf-8?b?not base64?="),
        ("a =?UTF-8?Q?b_c?= d", "a b c d"),
        ("=?utf-8*en?q?x?=", "x"),
        ("=?u\x00tf-8?q?x?=", "=?u\x00tf-8?q?x?="),
        ("=?base64?q?eA==?=", "=?base64?q?eA==?="),
        ("=?idna?q?=FF=FE?=", "=?idna?q?=FF=FE?="),
    ],
)
def test_decode_words_edge_cases(raw: str, decoded: str) -> None:
    assert decode_words(raw) == decoded


def test_header_text_reads_a_bounded_prefix() -> None:
    word = "=?utf-8?q?a?= "
    long = word * (4 * MAX_HEADER_CHARS // len(word))
    text = header_text(long)
    assert text == header_text(long[:MAX_HEADER_CHARS])
    assert text is not None and text.startswith("a" * 1000)
