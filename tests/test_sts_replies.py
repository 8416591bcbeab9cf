"""sts.server.Replies: a cache hit's framed reply is built once per policy object, and the
kept replies stay bounded."""

from __future__ import annotations

from tlsrpt_lmtp.sts.netstring import Decoder
from tlsrpt_lmtp.sts.policy import parse_policy
from tlsrpt_lmtp.sts.reply import Answer, Kind, postfix_reply
from tlsrpt_lmtp.sts.server import Replies, ReplyOptions

BODY = b"version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\nmax_age: 86400\n"


def answer(body: bytes = BODY, domain: str = "example.com") -> Answer:
    return Answer(Kind.POLICY, domain, parse_policy(body), "id1")


def text(data: bytes) -> str:
    (payload,) = Decoder().feed(data)
    return payload.decode()


def test_a_repeated_policy_answer_is_framed_once_and_reads_as_built() -> None:
    replies = Replies(ReplyOptions())
    first = answer()
    again = Answer(Kind.POLICY, "example.com", first.policy, "id1")  # as each hit makes one
    data = replies.framed("sts-tlsrpt", first)
    assert replies.framed("sts-tlsrpt", again) is data
    assert text(data) == postfix_reply(first, tlsrpt=True, enforce_testing=False)
    plain = replies.framed("sts", again)  # another map, other attributes
    assert text(plain) == postfix_reply(first, tlsrpt=False, enforce_testing=False)
    assert "policy_type=sts" in text(data) and "policy_type" not in text(plain)


def test_a_new_policy_object_is_a_new_reply() -> None:
    replies = Replies(ReplyOptions())
    old = replies.framed("sts", answer())
    changed = answer(BODY.replace(b"mx1.", b"mx2."))
    assert text(replies.framed("sts", changed)).startswith("OK secure match=mx2.example.com:")
    assert text(old).startswith("OK secure match=mx1.example.com:")


def test_options_decide_as_without_the_memo() -> None:
    testing = answer(BODY.replace(b"enforce", b"testing"))
    assert text(Replies(ReplyOptions()).framed("sts", testing)) == "NOTFOUND "
    enforcing = Replies(ReplyOptions(enforce_testing=True)).framed("sts", testing)
    assert text(enforcing).startswith("OK secure match=")


def test_answers_without_a_policy_are_not_kept() -> None:
    replies = Replies(ReplyOptions())
    for other in (Answer(Kind.NO_POLICY, "example.org"), Answer(Kind.TEMP, reason="DNS down")):
        replies.framed("sts", other)
    assert not replies._kept
    assert text(replies.framed("sts", Answer(Kind.TEMP, reason="x"))) == "TEMP x"


def test_kept_replies_are_bounded_in_number_and_size() -> None:
    replies = Replies(ReplyOptions(), limit=3)
    for i in range(10):
        replies.framed("sts", answer(domain=f"d{i}.example"))
        assert len(replies._kept) <= 3
    many_mx = b"version: STSv1\nmode: enforce\n" + b"".join(
        b"mx: mx%d.example.com\n" % i for i in range(60)
    )
    big = answer(many_mx + b"max_age: 86400\n", domain="big.example")
    data = replies.framed("sts-tlsrpt", big)
    assert len(data) > Replies.KEEP_SIZE
    assert ("sts-tlsrpt", "big.example") not in replies._kept
