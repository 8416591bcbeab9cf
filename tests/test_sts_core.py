"""RFC 8461 checklist items of the sans-I/O core (docs: ../shared/docs/MTA-STS.md §4a).

Test names carry the checklist number (item_NN) they prove.
"""

from __future__ import annotations

import pytest

from tlsrpt_lmtp.core.dnstext import join_rr
from tlsrpt_lmtp.sts.domain import policy_domain
from tlsrpt_lmtp.sts.netstring import Decoder, NetstringError, encode
from tlsrpt_lmtp.sts.policy import MAX_AGE_LIMIT, Mode, PolicyError, mx_matches, parse_policy
from tlsrpt_lmtp.sts.record import parse_txt
from tlsrpt_lmtp.sts.reply import Answer, Kind, exim_line, postfix_reply

GOOD = b"version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\nmax_age: 86400\n"


# --- Discovery: the TXT record (items 2-5) -------------------------------------------------


def test_item_02_strings_of_one_rr_are_joined_without_spaces() -> None:
    assert join_rr([b"v=STSv1; id=2016", b"0831085700Z;"]) == b"v=STSv1; id=20160831085700Z;"
    assert parse_txt([join_rr([b"v=STSv1; id=abc", b"def"])]).record.id == "abcdef"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "records",
    [
        [b"v=spf1 -all"],
        [b"V=STSv1; id=1"],  # case-sensitive
        [b"v=STSv2; id=1"],
        [b"id=1; v=STSv1"],  # v= must come first
        [b"v=STSv1; id=1", b"v=STSv1; id=2"],  # more than one
    ],
)
def test_item_03_no_single_v_stsv1_record_means_no_policy(records: list[bytes]) -> None:
    result = parse_txt(records)
    assert result.record is None and result.reason


def test_item_03_other_records_are_discarded() -> None:
    result = parse_txt([b"v=spf1 -all", b"v=STSv1; id=20190429T010101"])
    assert result.record is not None and result.record.id == "20190429T010101"


@pytest.mark.parametrize(
    ("raw", "record_id"),
    [
        (b"v=STSv1; id=20160831085700Z;", "20160831085700Z"),
        (b"v=STSv1;id=abc", "abc"),
        (b"v=STSv1 ;\tid=abc ; ", "abc"),
        (b"v=STSv1; id=" + b"a" * 32, "a" * 32),
        (b"v=STSv1; id=abc; ext-1.x=value!", "abc"),
    ],
)
def test_item_04_grammar_accepts(raw: bytes, record_id: str) -> None:
    result = parse_txt([raw])
    assert result.record is not None and result.record.id == record_id


@pytest.mark.parametrize(
    "raw",
    [
        b"v=STSv1;",  # no id
        b"v=STSv1; id=",  # empty id
        b"v=STSv1; id=" + b"a" * 33,  # id too long
        b"v=STSv1; id=abc-def",  # id not alnum
        b"v=STSv1; id=abc; ext=va;ue",
        b"v=STSv1; id=abc; _ext=1",  # extension name must start alnum
        b"v=STSv1; id=abc; ext=a=b",  # '=' not allowed in extension value
        b"v=STSv1; id=abc\xc3\xa9",  # not US-ASCII
        b"v=STSv1; id=abc; noequals",
    ],
)
def test_item_04_invalid_record_means_no_policy(raw: bytes) -> None:
    assert parse_txt([raw]).record is None


def test_item_05_unknown_fields_ignored_and_first_duplicate_wins() -> None:
    result = parse_txt([b"v=STSv1; foo=bar; id=first; id=second"])
    assert result.record is not None
    assert result.record.id == "first"
    assert result.record.extensions == (("foo", "bar"),)


# --- Keys (item 7 and the key rules) -------------------------------------------------


@pytest.mark.parametrize(
    ("key", "domain"),
    [
        ("Example.COM.", "example.com"),
        ("sub.example.com", "sub.example.com"),  # never the parent (item 7)
        ("bücher.example", "xn--bcher-kva.example"),  # IDN keys → A-labels
        ("[relay.example.net]:587", "relay.example.net"),  # smart host: its own domain
        ("relay.example.net:25", "relay.example.net"),
        (".example.com", None),  # Postfix parent-domain lookup
        ("[192.0.2.1]", None),  # address literal (item 7)
        ("[IPv6:2001:db8::1]", None),
        ("192.0.2.1", None),
        ("localhost", None),
        ("bad..example", None),
        ("", None),
    ],
)
def test_item_07_policy_domain_of_a_key(key: str, domain: str | None) -> None:
    assert policy_domain(key) == domain


# --- The policy file (items 14-16) -----------------------------------------------------------


def test_item_14_lf_and_crlf_line_ends() -> None:
    lf = parse_policy(GOOD)
    crlf = parse_policy(GOOD.replace(b"\n", b"\r\n"))
    assert lf == crlf
    assert lf.mode is Mode.ENFORCE and lf.max_age == 86400
    assert lf.mx == ("mx1.example.com", "*.example.net")


def test_item_14_whitespace_after_colon_and_trailing() -> None:
    p = parse_policy(b"version:STSv1\nmode:\tenforce  \nmx:   mx.example.com\nmax_age:60")
    assert (p.mode, p.mx, p.max_age) == (Mode.ENFORCE, ("mx.example.com",), 60)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (GOOD.replace(b"version: STSv1", b"version: STSv2"), "version"),
        (GOOD.replace(b"mode: enforce", b"mode: strict"), "mode"),
        (GOOD.replace(b"max_age: 86400", b"max_age: 12345678901"), "max_age"),
        (GOOD.replace(b"max_age: 86400", b"max_age: -1"), "max_age"),
        (GOOD.replace(b"max_age: 86400\n", b""), "max_age"),
        (b"version: STSv1\nmode: enforce\nmax_age: 60\n", "no mx"),
        (GOOD + b"this is not a field\n", "invalid policy line"),
        (GOOD + b"mx: 192.0.2.1\n", "invalid mx"),
        (GOOD + b"mx: *.*.example.com\n", "invalid mx"),
        (GOOD + b"ext: \x01\n", "control character"),
        (b"\xff" + GOOD, "UTF-8"),
        (GOOD + b"x" * 70000, "larger"),
    ],
)
def test_item_15_invalid_policies_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(body)


def test_item_15_max_age_is_capped_and_mode_none_needs_no_mx() -> None:
    assert parse_policy(GOOD.replace(b"86400", b"9999999999")).max_age == MAX_AGE_LIMIT
    none = parse_policy(b"version: STSv1\nmode: none\nmax_age: 86400\n")
    assert none.mode is Mode.NONE and none.mx == ()


def test_item_15_idn_mx_becomes_a_label_and_first_duplicate_wins() -> None:
    p = parse_policy(GOOD + "mode: testing\nmx: mx.bücher.example\n".encode())
    assert p.mode is Mode.ENFORCE
    assert "mx.xn--bcher-kva.example" in p.mx


def test_item_16_unknown_extension_keys_ignored() -> None:
    p = parse_policy(GOOD + "x-note: héllo wörld\n".encode())
    assert p.mode is Mode.ENFORCE and "x-note: héllo wörld" in p.lines


# --- MX matching (item 24) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "ok"),
    [
        ("mx1.example.com", "MX1.Example.com.", True),
        ("mx1.example.com", "mx2.example.com", False),
        ("*.example.net", "a.example.net", True),
        ("*.example.net", "example.net", False),
        ("*.example.net", "a.b.example.net", False),
        ("*.example.net", ".example.net", False),
    ],
)
def test_item_24_mx_matching(pattern: str, host: str, ok: bool) -> None:
    assert mx_matches(pattern, host) is ok


# --- Replies (issue: replies Postfix and Exim can use) ---------------------------------------


def _answer(mode: str = "enforce") -> Answer:
    policy = parse_policy(GOOD.replace(b"enforce", mode.encode()))
    return Answer(Kind.POLICY, "example.com", policy, "id1")


def test_enforce_gives_secure_with_match_and_servername() -> None:
    reply = postfix_reply(_answer(), tlsrpt=False, enforce_testing=False)
    assert reply == "OK secure match=mx1.example.com:.example.net servername=hostname"


def test_tlsrpt_attributes_only_when_asked() -> None:
    reply = postfix_reply(_answer(), tlsrpt=True, enforce_testing=False)
    assert reply.startswith("OK secure match=mx1.example.com:.example.net servername=hostname ")
    assert "policy_type=sts policy_domain=example.com" in reply
    assert "mx_host_pattern=mx1.example.com mx_host_pattern=*.example.net" in reply
    assert "{ policy_string = mode: enforce }" in reply


@pytest.mark.parametrize("mode", ["testing", "none"])
def test_items_27_28_testing_and_none_are_notfound(mode: str) -> None:
    assert postfix_reply(_answer(mode), tlsrpt=True, enforce_testing=False) == "NOTFOUND "


def test_testing_can_be_enforced_by_option() -> None:
    assert postfix_reply(_answer("testing"), tlsrpt=False, enforce_testing=True).startswith(
        "OK secure"
    )
    assert postfix_reply(_answer("none"), tlsrpt=False, enforce_testing=True) == "NOTFOUND "


def test_item_30_dane_and_no_policy_are_notfound_temp_is_temp() -> None:
    dane = Answer(Kind.DANE, "example.com", _answer().policy, "id1")
    assert postfix_reply(dane, tlsrpt=True, enforce_testing=True) == "NOTFOUND "
    assert postfix_reply(Answer(Kind.NO_POLICY), tlsrpt=False, enforce_testing=False) == (
        "NOTFOUND "
    )
    temp = Answer(Kind.TEMP, "example.com", reason="DNSSEC status unknown")
    assert postfix_reply(temp, tlsrpt=False, enforce_testing=False) == "TEMP DNSSEC status unknown"


def test_exim_lines() -> None:
    assert exim_line(_answer(), enforce_testing=False) == (
        'mode=enforce domain=example.com mx="mx1.example.com:*.example.net" max_age=86400 id=id1'
    )
    assert exim_line(_answer("testing"), enforce_testing=False).startswith("mode=testing ")
    assert exim_line(Answer(Kind.NO_POLICY), enforce_testing=False) == "mode=none"
    assert exim_line(Answer(Kind.TEMP, reason='a "b"'), enforce_testing=False) == (
        'mode=temp reason="a \\"b\\""'
    )


# --- Netstrings (socketmap framing) ----------------------------------------------------------


def test_netstrings_split_across_reads_and_pipelined() -> None:
    d = Decoder()
    wire = encode("postfix example.com") + encode("postfix .com")
    assert d.feed(wire[:5]) == []
    assert d.feed(wire[5:]) == [b"postfix example.com", b"postfix .com"]


@pytest.mark.parametrize("wire", [b"x:abc,", b"3:abcX", b"01:a,", b"99999999999999:"])
def test_malformed_netstrings_are_errors(wire: bytes) -> None:
    with pytest.raises(NetstringError):
        Decoder().feed(wire)


def test_oversized_request_is_refused() -> None:
    with pytest.raises(NetstringError, match="longer than"):
        Decoder().feed(b"10001:")
