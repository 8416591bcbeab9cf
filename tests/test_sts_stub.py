"""The lean DNS stub client (sts.stub): against the test internet's DNS server, and against a
hostile one on loopback that answers with wrong ids and wrong questions first."""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING

import dns.message
import dns.rrset
import pytest

from tlsrpt_lmtp.net.dns import parse_nameserver
from tlsrpt_lmtp.sts import stub

if TYPE_CHECKING:
    from tests.netsim.fixtures import NetSim

pytest_plugins = ["tests.netsim.fixtures"]


def client(netsim: NetSim, **kw: float) -> stub.Stub:
    return stub.Stub(
        [parse_nameserver(netsim.nameserver)],
        timeout=kw.get("timeout", 1.0),
        lifetime=kw.get("lifetime", 2.0),
    )


def texts(found: stub.Records) -> list[bytes | str]:
    return list(found.values)


def test_answers_nxdomain_nodata_and_records(netsim: NetSim) -> None:
    netsim.publish_sts("stub.test")
    netsim.dns.set("_mta-sts.stub.test", "TXT", "v=STSv1; id=abc;", ttl=1234)
    c = client(netsim)

    async def ask() -> list[stub.Records]:
        return [
            await c.query("_mta-sts.stub.test", stub.TXT),
            await c.query("mta-sts.stub.test", stub.AAAA),  # A only: no data
            await c.query("nothing-here.stub.test", stub.TXT),
            await c.query("mta-sts.stub.test", stub.A),
        ]

    txt, nodata, nxdomain, a = asyncio.run(ask())
    assert texts(txt) == [b"v=STSv1; id=abc;"] and txt.ttl == 1234
    assert nodata.rcode == stub.NOERROR and nodata.values == () and nodata.ttl is None
    assert nxdomain.rcode == stub.NXDOMAIN and nxdomain.values == ()
    assert list(a.values) == [netsim.https.host]


def test_cname_chain_is_followed_within_the_reply(netsim: NetSim) -> None:
    netsim.dns.add_zone("chain.test", "unsigned")
    netsim.dns.set("_mta-sts.chain.test", "CNAME", "_mta-sts.target.chain.test.")
    netsim.dns.set("_mta-sts.target.chain.test", "TXT", "v=STSv1; id=viacname;")
    found = asyncio.run(client(netsim).query("_mta-sts.chain.test", stub.TXT))
    assert texts(found) == [b"v=STSv1; id=viacname;"]


def test_truncated_reply_is_asked_again_over_tcp(netsim: NetSim) -> None:
    netsim.dns.add_zone("big.test", "unsigned")
    strings = [
        (f"{i}" + "x" * 249,) * 4 for i in range(6)
    ]  # ~6 KB: over the 1232-byte EDNS payload
    netsim.dns.set("big.test", "TXT", *strings)
    found = asyncio.run(client(netsim).query("big.test", stub.TXT))
    assert sorted(found.values) == sorted(f"{i}{'x' * 249}".encode() * 4 for i in range(6))
    assert netsim.dns.queries_for("big.test", "TXT")[-1].transport == "tcp"


@pytest.mark.parametrize(("mode", "reason"), [("servfail", "SERVFAIL"), ("timeout", "timeout")])
def test_failures_raise_with_a_reason(netsim: NetSim, mode: str, reason: str) -> None:
    netsim.dns.fail("_mta-sts.broken.test", mode)  # type: ignore[arg-type]
    with pytest.raises(stub.DnsError) as caught:
        asyncio.run(
            client(netsim, timeout=0.3, lifetime=0.7).query("_mta-sts.broken.test", stub.TXT)
        )
    assert reason in caught.value.reason


class Hostile(asyncio.DatagramProtocol):
    """Answers each query three times: wrong id, wrong question, then correctly."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        query = dns.message.from_wire(data)
        name = query.question[0].name
        good = dns.message.make_response(query)
        good.answer.append(dns.rrset.from_text(name, 60, "IN", "TXT", '"v=STSv1; id=good;"'))
        wire = good.to_wire()
        wrong_id = struct.pack("!H", (query.id + 1) % 65536) + wire[2:]
        other = dns.message.make_query("_mta-sts.other.test", "TXT")
        other.id = query.id
        forged = dns.message.make_response(other)
        forged.answer.append(
            dns.rrset.from_text("_mta-sts.other.test.", 60, "IN", "TXT", '"v=STSv1; id=evil;"')
        )
        for packet in (wrong_id, forged.to_wire(), wire):
            self.transport.sendto(packet, addr)


def test_replies_with_a_wrong_id_or_question_are_ignored() -> None:
    async def ask() -> stub.Records:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Hostile, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            return await stub.Stub([("127.0.0.1", port)], timeout=1.0, lifetime=2.0).query(
                "_mta-sts.victim.test", stub.TXT
            )
        finally:
            transport.close()

    assert texts(asyncio.run(ask())) == [b"v=STSv1; id=good;"]


def test_sockets_are_replaced_after_rotate_queries(netsim: NetSim) -> None:
    c = client(netsim)

    async def many() -> set[int]:
        ports = set()
        for _ in range(stub.POOL + 2):  # more than POOL * ROTATE queries in all
            await asyncio.gather(*(c.query("x.nothing.test", stub.TXT) for _ in range(stub.ROTATE)))
            for pool in c._pools.values():
                for sock in pool:
                    assert sock.sock is not None
                    ports.add(sock.sock.getsockname()[1])
        return ports

    assert len(asyncio.run(many())) > stub.POOL  # new sockets, new source ports


@pytest.mark.parametrize("name", ["a..b", "x" * 64 + ".test", ".".join(["abcdefgh"] * 40)])
def test_invalid_names_are_refused_before_sending(name: str) -> None:
    with pytest.raises(stub.DnsError):
        stub.question(name, stub.TXT)


def _reply(answer: bytes, count: int = 1) -> tuple[bytes, str]:
    name = "_mta-sts.x.test"
    header = struct.pack("!HHHHHH", 1, 0x8180, 1, count, 0, 0)
    return header + stub.question(name, stub.TXT) + answer, name


@pytest.mark.parametrize(
    "answer",
    [
        b"\xc0\x21" + b"\x00" * 8,  # a pointer to itself: a loop
        b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 60, 50) + b"\x03abc",  # rdata past the end
        b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 60, 4) + b"\x05abc",  # string past the rdata
        b"\x80abc",  # reserved label type
    ],
)
def test_malformed_answers_are_errors_not_crashes(answer: bytes) -> None:
    reply, name = _reply(answer)
    with pytest.raises(stub.DnsError):
        stub.records(reply, name, stub.TXT)


def test_records_of_other_names_and_classes_are_ignored() -> None:
    own = b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 300, 4) + b"\x03yes"
    chaos = b"\xc0\x0c" + struct.pack("!HHIH", 16, 3, 300, 4) + b"\x03chs"
    other = b"\x05other\x00" + struct.pack("!HHIH", 16, 1, 300, 3) + b"\x02no"
    reply, name = _reply(other + chaos + own, count=3)
    assert stub.records(reply, name, stub.TXT) == stub.Records(0, (b"yes",), 300)
