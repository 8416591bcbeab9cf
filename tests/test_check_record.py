"""The `_smtp._tls` TXT record parser (RFC 8460 §3), sans-I/O."""

from __future__ import annotations

import pytest

from tlsrpt_lmtp.check.tlsrpt_record import (
    ReportUri,
    TlsrptRecord,
    UriError,
    format_record,
    parse_record,
    parse_rua,
    parse_txt,
)


def one(text: str) -> TlsrptRecord:
    result = parse_txt([text.encode()])
    assert result.error is None, result.error
    assert result.record is not None
    return result.record


def reason(*texts: str | bytes) -> str:
    result = parse_txt([t.encode() if isinstance(t, str) else t for t in texts])
    assert result.record is None
    assert result.error is not None
    return result.error


def test_minimal_mailto_record() -> None:
    record = one("v=TLSRPTv1; rua=mailto:tlsrpt@example.org")
    assert record.rua == (ReportUri("mailto:tlsrpt@example.org", "mailto", "tlsrpt@example.org"),)
    assert record.extensions == ()


@pytest.mark.parametrize(
    "text",
    [
        "v=TLSRPTv1;rua=mailto:a@example.org",
        "v=TLSRPTv1 ;  rua=mailto:a@example.org ;",
        "v=TLSRPTv1;\trua=mailto:a@example.org;",
    ],
)
def test_field_delimiters_allow_whitespace_and_a_trailing_semicolon(text: str) -> None:
    assert one(text).rua[0].target == "a@example.org"


def test_several_uris_comma_separated_with_whitespace() -> None:
    record = one("v=TLSRPTv1; rua=mailto:a@example.org , https://reports.example.net/tlsrpt")
    assert [u.scheme for u in record.rua] == ["mailto", "https"]
    assert record.rua[1].target == "reports.example.net"


def test_percent_encoded_delimiters_inside_a_uri_are_fine_and_decoded() -> None:
    record = one("v=TLSRPTv1; rua=mailto:a%2Cb%21c%3Bd@example.org")
    assert record.rua[0].target == "a,b!c;d@example.org"
    assert record.rua[0].uri == "mailto:a%2Cb%21c%3Bd@example.org"


def test_unknown_fields_are_ignored_but_kept() -> None:
    record = one("v=TLSRPTv1; foo=bar; rua=mailto:a@example.org; x.y_z-1=42")
    assert record.extensions == (("foo", "bar"), ("x.y_z-1", "42"))


def test_multi_string_record_is_concatenated_by_the_caller() -> None:
    from tlsrpt_lmtp.core.dnstext import join_rr

    joined = join_rr([b"v=TLSRPTv1; rua=mailto:tlsrpt@exa", b"mple.org"])
    assert one(joined.decode()).rua[0].target == "tlsrpt@example.org"


def test_records_not_starting_with_the_version_are_discarded() -> None:
    result = parse_txt([b"google-site-verification=abc", b"v=TLSRPTv1; rua=mailto:a@example.org"])
    assert result.record is not None


def test_no_record() -> None:
    assert reason("v=spf1 -all") == "no v=TLSRPTv1 TXT record"
    assert reason() == "no v=TLSRPTv1 TXT record"


@pytest.mark.parametrize(
    "text", ["v=TLSRPTV1; rua=mailto:a@example.org", "v=TLSRPTv1 rua=mailto:a@example.org"]
)
def test_near_misses_are_named(text: str) -> None:
    result = parse_txt([text.encode()])
    assert result.record is None and result.discarded == (text,)
    assert "does not begin with 'v=TLSRPTv1;'" in (result.error or "")


def test_two_records_mean_no_reports() -> None:
    assert "2 v=TLSRPTv1 TXT records" in reason(
        "v=TLSRPTv1; rua=mailto:a@example.org", "v=TLSRPTv1; rua=mailto:b@example.org"
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("v=TLSRPTv1;", "start with v=TLSRPTv1 and a field"),
        ("v=TLSRPTv1; foo=bar", "no rua="),
        ("v=TLSRPTv1; rua=mailto:a@example.org; rua=mailto:b@example.org", "twice"),
        ("v=TLSRPTv1; rua=", "empty"),
        ("v=TLSRPTv1; rua=mailto:a@example.org;; foo=bar", "not name=value"),
        ("v=TLSRPTv1; rua=mailto:a@example.org; novalue", "not name=value"),
        ("v=TLSRPTv1; rua=mailto:a@example.org; foo=a=b", "invalid value"),
        ("v=TLSRPTv1; rua=mailto:a@example.org; foo=a b", "invalid value"),
        ("v=TLSRPTv1; rua=mailto:a@example.org!10m", "DMARC size limit '!10m'"),
        ("v=TLSRPTv1; rua=mailto:a!b@example.org", "'!' (write %21)"),
        ("v=TLSRPTv1; rua=mailto:a@example.org,b@example.org", "no scheme"),
        ("v=TLSRPTv1; rua=mailto:a@example.org,", "empty URI"),
        ("v=TLSRPTv1; rua=ftp://example.org/x", "neither mailto nor https"),
        ("v=TLSRPTv1; rua=http://example.org/x", "neither mailto nor https"),
        ("v=TLSRPTv1; rua=mailto:not-an-address", "not an e-mail address"),
        ("v=TLSRPTv1; rua=mailto:a@example.org%2", "2 hex digits"),
        ("v=TLSRPTv1; rua=https:/nohost", "no host"),
        ("v=TLSRPTv1; rua=https://example.org/a b", "' '"),
    ],
)
def test_invalid_records(text: str, why: str) -> None:
    assert why in reason(text)


def test_non_ascii_record() -> None:
    assert parse_record("v=TLSRPTv1; rua=mailto:ä@example.org".encode()).error == (
        "TXT record is not US-ASCII"
    )


def test_version_is_case_sensitive() -> None:
    assert "does not begin with 'v=TLSRPTv1;'" in reason("V=TLSRPTv1; rua=mailto:a@example.org")


def test_parse_rua_and_format_record_round_trip() -> None:
    uris = [u.uri for u in parse_rua("mailto:a@example.org,https://r.example.net/x?y=1")]
    assert one(format_record(uris)).rua == parse_rua(",".join(uris))
    with pytest.raises(UriError):
        parse_rua("mailto:a@example.org;x")
