"""sts.httpreply: the policy host's reply, read in any pieces, bounded, strict."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlsrpt_lmtp.sts.httpreply import MAX_HEAD, Head, HttpError, ResponseReader, request

BODY = b"version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 86400\n"


def read(pieces: list[bytes], max_body: int = 65536, *, eof: bool = True) -> ResponseReader:
    heads: list[Head] = []
    reader = ResponseReader(max_body, heads.append)
    for piece in pieces:
        reader.feed(piece)
    if eof:
        reader.eof()
    assert len(heads) <= 1
    return reader


def head(*lines: str) -> bytes:
    text = "\r\n".join(["HTTP/1.1 200 OK", "Content-Type: text/plain", *lines])
    return (text + "\r\n\r\n").encode()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        if at >= len(body):
            break
        piece = body[at : at + size]
        out += b"%x;ext=1\r\n%s\r\n" % (len(piece), piece)
        at += size
    if at < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - at, body[at:])
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


framing = st.sampled_from(["length", "chunked", "close"])


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=3000),
    how=framing,
    interim=st.integers(0, 3),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=8),
)
def test_a_well_formed_reply_in_any_pieces_gives_back_its_body(
    body: bytes, how: str, interim: int, cuts: list[int], sizes: list[int]
) -> None:
    wire = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" * interim
    if how == "length":
        wire += head(f"Content-Length: {len(body)}") + body
    elif how == "chunked":
        wire += head("Transfer-Encoding: chunked") + chunked(body, sizes)
    else:
        wire += head("Connection: close") + body
    heads: list[Head] = []
    reader = ResponseReader(65536, heads.append)
    for piece in split(wire, cuts):
        reader.feed(piece)
    assert reader.done == (how != "close")
    reader.eof()
    assert reader.done and bytes(reader.body) == body
    assert [h.status for h in heads] == [200]
    assert (b"content-type", b"text/plain") in heads[0].headers


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_any_bytes_give_a_body_within_bounds_or_an_http_error(data: bytes, cuts: list[int]) -> None:
    try:
        reader = read(split(b"HTTP/1.1 200 OK\r\n" + data, cuts), max_body=500)
    except HttpError as exc:
        assert exc.kind in ("http", "closed", "size")
        return
    assert reader.done and len(reader.body) <= 500


def test_what_follows_the_reply_is_not_read() -> None:
    second = head("Content-Length: 5") + b"EVIL!"
    reader = read([head(f"Content-Length: {len(BODY)}") + BODY + second + b"garbage\r\n"])
    assert bytes(reader.body) == BODY


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (head("Content-Length: 2", "Content-Length: 3") + b"ab", "Content-Length"),
        (head("Content-Length: 2", "Transfer-Encoding: chunked") + b"2\r\nab\r\n0\r\n\r\n", ""),
        (head("Transfer-Encoding: gzip") + b"ab", "not chunked"),
        (head("Transfer-Encoding: gzip, chunked") + b"2\r\nab\r\n0\r\n\r\n", "not chunked"),
        (head("X-Folded: a", " b") + b"", ""),
        (head("Bad Name: x"), ""),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nab", ""),
        (head("Transfer-Encoding: chunked") + b"zz\r\nab\r\n", ""),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", ""),
        (b"HTTP/2 200\r\n\r\n", ""),
        (b"garbage\r\n\r\n", ""),
    ],
)
def test_malformed_replies_are_refused(wire: bytes, why: str) -> None:
    with pytest.raises(HttpError, match=f"malformed HTTP response.*{why}") as caught:
        read([wire])
    assert caught.value.kind == "http"


def test_a_body_cut_short_is_not_a_body() -> None:
    for wire in (
        head(f"Content-Length: {len(BODY)}") + BODY[:10],
        head("Transfer-Encoding: chunked") + b"40\r\n" + BODY[:10],
    ):
        with pytest.raises(HttpError, match="mid-response") as caught:
            read([wire])
        assert caught.value.kind == "closed"
    with pytest.raises(HttpError, match="before the response"):
        read([b"HTTP/1.1 200 OK\r\nContent-Ty"])


def test_the_head_is_bounded_across_interim_replies() -> None:
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    pieces = [interim] * (MAX_HEAD // len(interim) + 2)
    with pytest.raises(HttpError, match=f"head over {MAX_HEAD} bytes"):
        read(pieces, eof=False)
    with pytest.raises(HttpError, match="head over"):
        read([b"HTTP/1.1 200 OK\r\nX-Fill: " + b"a" * 4096] * 5, eof=False)


def test_the_body_is_bounded_while_it_arrives() -> None:
    for framing_line in ("Connection: close", "Transfer-Encoding: chunked"):
        reader = ResponseReader(100, lambda _: None)
        reader.feed(head(framing_line))
        block = b"x" * 64
        with pytest.raises(HttpError, match="more than 100 bytes") as caught:
            for _ in range(4):
                reader.feed(b"40\r\n" + block + b"\r\n" if "chunked" in framing_line else block)
        assert caught.value.kind == "size"
        assert len(reader.body) <= 100 + 64


def test_what_check_raises_comes_out_of_feed_with_no_body_taken() -> None:
    class Refused(Exception):
        pass

    def check(got: Head) -> None:
        raise Refused(str(got.status))

    reader = ResponseReader(65536, check)
    with pytest.raises(Refused, match="302"):
        reader.feed(b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 3\r\n\r\nabc")
    assert not reader.done and not reader.body


def test_the_request_is_one_get_and_refuses_a_name_that_could_inject() -> None:
    wire = request("mta-sts.example.com", "/.well-known/mta-sts.txt", "agent/1")
    first = b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\n"
    assert wire.startswith(first)
    assert wire.endswith(b"Connection: close\r\n\r\n") and wire.count(b"\r\n\r\n") == 1
    for bad in ("a.example\r\nX: y", "a b.example", "exa\x00mple.com", "bücher.example"):
        with pytest.raises(ValueError, match="not a host name"):
            request(bad, "/", "agent/1")
