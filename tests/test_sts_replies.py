"""sts.server.Replies: a cache hit's framed reply is built once per policy answer and kept
with it, so that it lives exactly as long as the cache entry and counts in its bounds."""

from __future__ import annotations

import gc
import sys

from tlsrpt_lmtp.sts.cache import MEMO_COST, Entry, PolicyCache, entry_cost
from tlsrpt_lmtp.sts.netstring import Decoder
from tlsrpt_lmtp.sts.policy import StsPolicy, parse_policy
from tlsrpt_lmtp.sts.reply import Answer, Kind, postfix_reply
from tlsrpt_lmtp.sts.server import Replies, ReplyOptions

BODY = b"version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\nmax_age: 86400\n"


def answer(body: bytes = BODY, domain: str = "example.com") -> Answer:
    return Answer(Kind.POLICY, domain, parse_policy(body), "id1")


def text(data: bytes) -> str:
    (payload,) = Decoder().feed(data)
    return payload.decode()


def test_a_policy_answer_is_framed_once_per_reply_kind_and_reads_as_built() -> None:
    replies = Replies(ReplyOptions())
    hit = answer()
    data = replies.framed("sts-tlsrpt", hit)
    assert replies.framed("sts-tlsrpt", hit) is data
    assert text(data) == postfix_reply(hit, tlsrpt=True, enforce_testing=False)
    plain = replies.framed("sts", hit)  # another map, other attributes
    assert text(plain) == postfix_reply(hit, tlsrpt=False, enforce_testing=False)
    assert "policy_type=sts" in text(data) and "policy_type" not in text(plain)
    assert len(hit.framed) == 2


def test_another_answer_is_another_reply() -> None:
    replies = Replies(ReplyOptions())
    old = replies.framed("sts", answer())
    changed = replies.framed("sts", answer(BODY.replace(b"mx1.", b"mx2.")))
    assert text(changed).startswith("OK secure match=mx2.example.com:")
    assert text(old).startswith("OK secure match=mx1.example.com:")


def test_options_decide_as_without_the_memo() -> None:
    testing = answer(BODY.replace(b"enforce", b"testing"))
    assert text(Replies(ReplyOptions()).framed("sts", testing)) == "NOTFOUND "
    enforcing = Replies(ReplyOptions(enforce_testing=True)).framed("sts", testing)
    assert text(enforcing).startswith("OK secure match=")


def test_answers_without_a_policy_and_long_replies_are_not_kept() -> None:
    replies = Replies(ReplyOptions())
    for other in (Answer(Kind.NO_POLICY, "example.org"), Answer(Kind.TEMP, reason="DNS down")):
        assert text(replies.framed("sts", other)) in ("NOTFOUND ", "TEMP DNS down")
        assert not other.framed
    many_mx = b"version: STSv1\nmode: enforce\n" + b"".join(
        b"mx: mx%d.example.com\n" % i for i in range(60)
    )
    big = answer(many_mx + b"max_age: 86400\n", domain="big.example")
    assert len(replies.framed("sts-tlsrpt", big)) > Replies.KEEP_SIZE
    assert not big.framed


def _entry(domain: str, policy: StsPolicy) -> Entry:
    return Entry(domain, "id1", policy, b"", 1e9, 1e9)


def test_the_memo_goes_with_the_cache_entry_and_counts_in_its_cost() -> None:
    """A memo outside the cache kept 10,000 attacker policies (64 KiB each) alive after the
    cache had evicted them: 620 MiB in the benchmark's attacker row. It lives on the entry."""
    cache = PolicyCache(None, size=2)
    replies = Replies(ReplyOptions())
    policy = parse_policy(BODY)
    first = _entry("a.example", policy)
    hit = first.answer
    replies.framed("sts", hit)
    cache.put(first)
    del first, hit

    def alive() -> bool:
        gc.collect()
        return any(isinstance(o, Answer) and o.domain == "a.example" for o in gc.get_objects())

    assert alive()
    for name in ("b.example", "c.example"):  # a.example is evicted
        cache.put(_entry(name, parse_policy(BODY)))
    assert cache.peek("a.example") is None and not alive()
    assert entry_cost(_entry("d.example", policy)) > MEMO_COST


def _memo_bytes(entry: Entry) -> int:
    answer_ = entry.answer
    total = sys.getsizeof(answer_) + sys.getsizeof(answer_.framed)
    return total + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in answer_.framed.items())


def test_what_the_memo_holds_stays_within_what_the_cache_counts_for_it() -> None:
    """MEMO_COST (in entry_cost) covers the memo whatever the policy: the replies kept are
    the small ones, the others are rebuilt."""
    replies = Replies(ReplyOptions())
    for mx_count in range(1, 40):
        lines = b"".join(b"mx: mail%d.example-domain.com\n" % i for i in range(mx_count))
        policy = parse_policy(b"version: STSv1\nmode: enforce\n" + lines + b"max_age: 86400\n")
        entry = _entry("example-domain.com", policy)
        hit = entry.answer
        for map_name in ("sts", "sts-tlsrpt"):
            replies.framed(map_name, hit)
        assert _memo_bytes(entry) <= MEMO_COST, mx_count
