"""A lean DNS stub client for the policy daemon's per-domain lookups (TXT, A, AAAA).

dnspython's async resolver opens a new UDP socket, builds a Message and parses every reply
in full for each query; for a relay mailing many domains without MTA-STS that was most of
the daemon's CPU. Here queries are built by hand and sent over a few long-lived UDP sockets
per nameserver (asyncio datagram endpoints); a reply is matched by its id and its question
section (both must equal what was sent, from the socket's nameserver), and the answer
section is read directly (CNAME chains within the reply followed): dnspython's full message
parsing was a third of the CPU of an uncached lookup. Truncated replies are asked again
over TCP.

Spoofing: a reply must match a random 16-bit id and the exact question, on one of POOL
sockets with kernel-chosen ports; each socket is replaced after ROTATE queries, so the
source port keeps changing as with a socket per query. Where DNSSEC matters (DANE), the
daemon keeps using dnspython against the validating resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass

A, AAAA, TXT, CNAME = 1, 28, 16, 5
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5
POOL = 4  # UDP sockets per nameserver
ROTATE = 500  # queries per socket before it is replaced
EDNS_PAYLOAD = 1232
MAX_UDP = 65535  # what one read takes (a reply larger than EDNS_PAYLOAD is not expected)
_OPT = b"\x00" + struct.pack("!HHIH", 41, EDNS_PAYLOAD, 0, 0)  # EDNS(0), no DO bit
_random = random.SystemRandom()


class DnsError(Exception):
    """No usable answer; `reason` in a few words (as dnsutil.why says it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Records:
    """The records of the queried type at the end of any CNAME chain (none for NXDOMAIN or
    no data) and their TTL (None when there are none). TXT: each record's strings joined
    (RFC 8461 §3.1); A/AAAA: the address as text."""

    rcode: int
    values: tuple[bytes | str, ...] = ()
    ttl: int | None = None


def question(name: str, rdtype: int) -> bytes:
    """The question section for an absolute A-label name ('example.com' or 'example.com.')."""
    labels = name.rstrip(".").lower().encode("ascii").split(b".")
    if any(not 0 < len(label) < 64 for label in labels):
        raise DnsError("invalid name")
    wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    if len(wire) > 255:
        raise DnsError("name too long")
    return wire + struct.pack("!HH", rdtype, 1)


def records(reply: bytes, name: str, rdtype: int, question_size: int = 0) -> Records:
    """The answer for `name`/`rdtype` in a reply whose question (`question_size` bytes, if
    known) was checked already."""
    rcode = reply[3] & 0x0F
    count = int.from_bytes(reply[6:8], "big")
    if rcode == NXDOMAIN or count == 0:
        return Records(rcode)
    try:
        rrs = _answers(reply, 12 + (question_size or len(question(name, rdtype))), count)
    except (IndexError, ValueError):
        raise DnsError("malformed reply") from None
    target = name.rstrip(".").lower()
    for _ in range(16):  # CNAME hops within the reply
        found = [
            (ttl, rdata) for owner, rtype, ttl, rdata in rrs if owner == target and rtype == rdtype
        ]
        if found:
            return Records(
                rcode, tuple(_value(reply, rdtype, r) for _, r in found), min(t for t, _ in found)
            )
        alias = [r for owner, rtype, _, r in rrs if owner == target and rtype == CNAME]
        if not alias:
            break
        target = _name(reply, alias[0][0])[0]
    return Records(rcode)


def _answers(reply: bytes, offset: int, count: int) -> list[tuple[str, int, int, tuple[int, int]]]:
    """(owner, type, ttl, (rdata offset, rdata end)) of each IN record of the answer section."""
    out = []
    for _ in range(count):
        owner, offset = _name(reply, offset)
        rtype, rclass, ttl, size = struct.unpack_from("!HHIH", reply, offset)
        offset += 10
        if offset + size > len(reply):
            raise ValueError("truncated record")
        if rclass == 1:
            out.append((owner, rtype, ttl, (offset, offset + size)))
        offset += size
    return out


def _name(reply: bytes, offset: int) -> tuple[str, int]:
    """A (possibly compressed) name, lower case without the final dot; the offset after it."""
    labels: list[bytes] = []
    after = -1
    for _ in range(128):  # bounded: pointer loops end here
        size = reply[offset]
        if size == 0:
            return b".".join(labels).decode("latin-1"), (offset + 1 if after < 0 else after)
        if size & 0xC0 == 0xC0:
            if after < 0:
                after = offset + 2
            offset = ((size & 0x3F) << 8) | reply[offset + 1]
            continue
        if size & 0xC0:
            raise ValueError("unknown label type")
        labels.append(reply[offset + 1 : offset + 1 + size].lower())
        offset += 1 + size
    raise ValueError("name too long")


def _value(reply: bytes, rdtype: int, span: tuple[int, int]) -> bytes | str:
    start, end = span
    if rdtype == TXT:
        strings = []
        while start < end:
            size = reply[start]
            strings.append(reply[start + 1 : start + 1 + size])
            start += 1 + size
        if start != end:
            raise DnsError("malformed TXT record")
        return b"".join(strings)
    family = {A: (socket.AF_INET, 4), AAAA: (socket.AF_INET6, 16)}.get(rdtype)
    if family is None or end - start != family[1]:
        raise DnsError("malformed address record")
    return socket.inet_ntop(family[0], reply[start:end])


class _Socket:
    """One connected UDP socket, read straight from the event loop's selector: asyncio's
    datagram transport reads each datagram with recvfrom(256 KiB) (glibc: mmap, mremap and
    munmap per reply) and one datagram per wake-up; here every reply waiting is read at once
    into a bytes object of its own size."""

    def __init__(self, loop: asyncio.AbstractEventLoop, server: tuple[str, int]) -> None:
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        self.sock: socket.socket | None = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.connect(server)  # UDP: no packet sent; replies from elsewhere are dropped
            loop.add_reader(self.sock.fileno(), self._readable)
        except OSError:
            self.sock.close()
            raise
        self.loop = loop
        self.pending: dict[int, tuple[bytes, asyncio.Future[bytes]]] = {}
        self.used = 0
        self.lost = False

    def send(self, packet: bytes) -> None:
        if self.sock is None:
            raise DnsError("no nameserver answered (SERVFAIL or refused)")
        try:
            self.sock.send(packet)
        except BlockingIOError:
            pass  # the socket's buffer is full: as if lost, the query times out
        except OSError:  # e.g. ICMP unreachable from an earlier query
            raise DnsError("no nameserver answered (SERVFAIL or refused)") from None

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        for _ in range(64):  # bounded: other callbacks get their turn
            try:
                data = sock.recv(MAX_UDP)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP unreachable on the connected socket: nobody listens there, fail fast.
                self._fail_all()
                return
            self._received(data)

    def _received(self, data: bytes) -> None:
        if len(data) < 12 or not data[2] & 0x80:  # not a response
            return
        entry = self.pending.get((data[0] << 8) | data[1])
        if entry is None:
            return
        sent, future = entry
        if data[12 : 12 + len(sent)] == sent and data[4:6] == b"\x00\x01" and not future.done():
            future.set_result(data)

    def _fail_all(self) -> None:
        for _, future in self.pending.values():
            if not future.done():
                future.set_exception(DnsError("no nameserver answered (SERVFAIL or refused)"))

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(RuntimeError, ValueError):  # the loop may be closed
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        self.lost = True
        self._fail_all()

    def retire_if_idle(self) -> None:
        if self.used >= ROTATE and not self.pending:
            self.close()


class Stub:
    """Queries to `nameservers` ((address, port) pairs), each answer within `lifetime`
    seconds overall and `timeout` per try, rotating through the nameservers."""

    def __init__(
        self, nameservers: list[tuple[str, int]], *, timeout: float, lifetime: float
    ) -> None:
        self.nameservers = nameservers
        self.timeout = timeout
        self.lifetime = lifetime
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pools: dict[tuple[str, int], list[_Socket]] = {}
        self._next = 0
        self._turn = 0

    async def query(self, name: str, rdtype: int) -> Records:
        sent = question(name, rdtype)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # sockets belong to one event loop
            self._reset(loop)
        deadline = loop.time() + self.lifetime
        servers = list(self.nameservers)
        failure = "timeout"
        while servers and (left := deadline - loop.time()) > 0:
            server = servers[self._next % len(servers)]
            self._next += 1
            try:
                reply = await self._udp(loop, server, sent, min(self.timeout, left))
                if reply[2] & 0x02:  # truncated: the whole answer over TCP
                    reply = await self._tcp(server, sent, max(deadline - loop.time(), 0.1))
            except TimeoutError:
                continue
            except DnsError as exc:
                failure = exc.reason
                servers.remove(server)
                continue
            if reply[3] & 0x0F in (NOERROR, NXDOMAIN):
                return records(reply, name, rdtype, len(sent))
            failure = "no nameserver answered (SERVFAIL or refused)"
            servers.remove(server)  # as dnspython: a server that failed is not asked again
        raise DnsError(failure)

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        for pool in self._pools.values():
            for sock in pool:
                sock.close()
        self._pools = {}
        self._loop = loop

    def _socket(self, loop: asyncio.AbstractEventLoop, server: tuple[str, int]) -> _Socket:
        pool = self._pools.setdefault(server, [])
        pool[:] = [s for s in pool if not s.lost and s.used < ROTATE]
        if len(pool) < POOL:
            try:
                sock = _Socket(loop, server)
            except OSError as exc:
                raise DnsError(f"cannot reach nameserver: {exc.strerror}") from None
            pool.append(sock)
            return sock
        self._turn += 1
        return pool[self._turn % len(pool)]

    async def _udp(
        self, loop: asyncio.AbstractEventLoop, server: tuple[str, int], sent: bytes, wait: float
    ) -> bytes:
        sock = self._socket(loop, server)
        qid = _random.getrandbits(16)
        while qid in sock.pending:
            qid = _random.getrandbits(16)
        future: asyncio.Future[bytes] = loop.create_future()
        sock.pending[qid] = (sent, future)
        sock.used += 1
        timer = loop.call_later(wait, _expire, future)
        try:
            sock.send(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1) + sent + _OPT)
            return await future
        finally:
            timer.cancel()
            del sock.pending[qid]
            sock.retire_if_idle()

    async def _tcp(self, server: tuple[str, int], sent: bytes, wait: float) -> bytes:
        qid = _random.getrandbits(16)
        packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + sent

        async def exchange() -> bytes:
            reader, writer = await asyncio.open_connection(*server)
            try:
                writer.write(struct.pack("!H", len(packet)) + packet)
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                return await reader.readexactly(size)
            finally:
                writer.close()

        try:
            reply = await asyncio.wait_for(exchange(), wait)
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise DnsError(f"TCP to nameserver failed: {exc}") from None
        if reply[:2] != packet[:2] or reply[12 : 12 + len(sent)] != sent:
            raise DnsError("TCP reply does not match the query")
        return reply


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
