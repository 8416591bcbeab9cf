"""Fuzz target: the MTA-STS daemon's parsers of untrusted text.

The first byte picks the parser, the rest is its input:
0 policy file (``parse_policy``, documented PolicyError) and the Postfix/Exim replies built
  from it, which must stay one line; 1 TXT record set (``parse_txt``, never raises);
2 socketmap netstrings fed in pieces (``Decoder``, documented NetstringError), then each
  request as the server reads it; 3 a lookup key (``policy_domain``, never raises);
4 ``_smtp._tls`` TLSRPT TXT records as ``check`` reads them (never raises); 5 a record read
from the shared policy cache (``decode``, never raises; its body through ``checked_policy``,
documented PolicyError); 6 a policy host's HTTP reply in two pieces, then the connection's end
(``ResponseReader``, documented HttpError), its body within the bound.
"""

from __future__ import annotations

import harness

with harness.instrumented():
    from tlsrpt_lmtp.check import tlsrpt_record
    from tlsrpt_lmtp.sts.domain import policy_domain
    from tlsrpt_lmtp.sts.httpreply import HttpError, ResponseReader
    from tlsrpt_lmtp.sts.netstring import Decoder, NetstringError, encode
    from tlsrpt_lmtp.sts.policy import MAX_POLICY_SIZE, PolicyError, checked_policy, parse_policy
    from tlsrpt_lmtp.sts.record import parse_txt
    from tlsrpt_lmtp.sts.reply import Answer, Kind, exim_line, postfix_reply
    from tlsrpt_lmtp.sts.server import _request
    from tlsrpt_lmtp.sts.shared import base as shared

LIMIT = 1000


def _one_line(text: str) -> None:
    assert "\n" not in text and "\r" not in text, text
    text.encode("utf-8")


def policy(data: bytes) -> None:
    parsed = parse_policy(data)
    assert parsed.max_age >= 0
    answer = Answer(Kind.POLICY, "example.com", parsed, "id1")
    for tlsrpt in (False, True):
        _one_line(postfix_reply(answer, tlsrpt=tlsrpt, enforce_testing=True))
    _one_line(exim_line(answer, enforce_testing=False))
    for pattern in parsed.mx:  # every pattern matches the host it names
        assert parsed.matches("a." + pattern[2:] if pattern.startswith("*.") else pattern)


def txt(data: bytes) -> None:
    result = parse_txt(data.split(b"\x00"))
    assert (result.record is None) != (result.reason is None)


def netstrings(data: bytes) -> None:
    decoder = Decoder(limit=LIMIT)
    cut = data[0] if data else 0
    for piece in (data[1 : 1 + cut], data[1 + cut :]):
        for request in decoder.feed(piece):
            assert len(request) <= LIMIT
            parsed = _request(request)
            if isinstance(parsed, str):
                encode(parsed)


def key(data: bytes) -> None:
    domain = policy_domain(data.decode("utf-8", "replace"))
    assert domain is None or (domain.isascii() and domain == domain.lower())


def tlsrpt_txt(data: bytes) -> None:
    result = tlsrpt_record.parse_txt(data.split(b"\x00"))
    assert (result.record is None) != (result.error is None)
    if result.record is not None:
        assert result.record.rua and all(u.scheme in ("mailto", "https") for u in result.record.rua)


def shared_record(data: bytes) -> None:
    record = shared.decode("example.com", data)
    if record is None:
        return
    assert shared.POLICY_ID.fullmatch(record.policy_id) and len(record.body) <= MAX_POLICY_SIZE
    assert 0 < record.fetched_at <= record.expires_at < float("inf")
    assert shared.decode("example.com", shared.encode(record)) == record  # written, read back
    checked_policy(record.body)


def http_reply(data: bytes) -> None:
    heads = []
    reader = ResponseReader(LIMIT, heads.append)
    cut = data[0] if data else 0
    for piece in (data[1 : 1 + cut], data[1 + cut :]):
        reader.feed(piece)
        assert len(reader.body) <= LIMIT
    reader.eof()
    assert reader.done and len(heads) == 1 and not 100 <= heads[0].status < 200


PARSERS = (policy, txt, netstrings, key, tlsrpt_txt, shared_record, http_reply)


def check(data: bytes) -> None:
    if data:
        PARSERS[data[0] % len(PARSERS)](data[1:])


def seeds() -> list[bytes]:
    return [
        b"\x00version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
        b"max_age: 604800\r\n",
        b"\x00version: STSv1\nmode: none\nmax_age: 86400\n",
        b"\x01v=STSv1; id=20240101T000000;\x00v=spf1 -all",
        b"\x01v=STSv1;id=abc;ext=val;",
        b"\x02\x05" + encode("sts example.com") + encode("sts-tlsrpt [mx.example.net]:25"),
        b"\x03[192.0.2.1]:25",
        b"\x03b\xc3\xbccher.example",
        b"\x03.example.com",
        b"\x04v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://r.example/v1\x00v=spf1",
        b"\x04v=TLSRPTv1;rua=mailto:a%2Cb@example.com;ext=1",
        b"\x051 1800000000.25 1800086400.25 20240101\nversion: STSv1\nmode: enforce\n"
        b"mx: mx1.example.com\nmax_age: 86400\n",
        b"\x051 1e9 1e9 a\nversion: STSv1\nmode: none\nmax_age: 0\n",
        b"\x06\x30HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n"
        b"version: STSv1",
        b"\x06\x10HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
        b"\x06\x05HTTP/1.0 404 Not Found\r\n\r\nclose-delimited",
    ]


if __name__ == "__main__":
    harness.main("sts", check, (PolicyError, NetstringError, HttpError), seeds)
