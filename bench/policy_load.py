"""Socketmap load client (and a small DNS load client), bounded in count and time.

    python -m bench.policy_load socketmap --port P --names FILE --connections N
        [--count N] [--time-cap S] [--expect sts|none] [--map NAME]
    python -m bench.policy_load dns --server IP:PORT --names FILE [--count N] [--window N]
    python -m bench.policy_load pipeline --port P --names FILE --connections N [--time-cap S]

socketmap: N connections, each sequential as Postfix's socketmap client is: send one
netstring ``"<map> <domain>"``, read the reply, send the next. The domains come from one
shared list (each once, or cycled when --count is larger); every request's latency is kept,
measured from just before send() to the kernel's receive timestamp of the reply
(SO_TIMESTAMPNS), so that the client's own delays are not counted as the daemon's. One
process, epoll and plain sockets (no asyncio): little CPU per request.
A reply counts as expected if it is exactly ``OK secure match=mx1.<domain>
servername=hostname`` (--expect sts), ``NOTFOUND `` (--expect none) or starts with
``OK secure `` (--expect ok).

pipeline (abuse): N connections, each writing ``"sts <domain>"`` netstrings (its own domain
from the list) as fast as the daemon reads them, never reading a reply, until the time cap.

dns: --window UDP sockets, each with one TXT query for ``_mta-sts.<domain>`` outstanding at
a time (1 s timeout): how many answers per second a DNS server gives.

Both print one JSON line. Only loopback targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import selectors
import socket
import statistics
import struct
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import cycle, islice
from pathlib import Path
from typing import Any

MAX_REPLY = 100_000


@dataclass
class Result:
    requests: int = 0
    expected: int = 0
    unexpected: int = 0
    errors: int = 0
    seconds: float = 0.0
    capped: bool = False
    first_unexpected: str = ""
    replies: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    cpu_s: float = 0.0  # the client's own CPU during the load (not its start-up)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _loopback(host: str) -> str:
    if not host.startswith("127."):
        raise SystemExit("the load client only targets loopback (127.0.0.0/8)")
    return host


def _percentile(sorted_values: array[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def expected_reply(expect: str, domain: str) -> bytes:
    if expect == "sts":
        return f"OK secure match=mx1.{domain} servername=hostname".encode()
    return b"NOTFOUND "


class _Load:
    def __init__(
        self, names: list[str], count: int, deadline: float, map_name: str, expect: str
    ) -> None:
        self.names = names
        self.requests = [netstring(f"{map_name} {name}".encode()) for name in names]
        self.replies = [netstring(expected_reply(expect, name)) for name in names]
        self.expected_kind = "OK" if expect in ("sts", "ok") else "NOTFOUND"
        self.any_ok = expect == "ok"
        self.work: Iterator[int] = islice(cycle(range(len(names))), count)
        self.deadline = deadline
        self.result = Result()
        self.latencies: array[float] = array("d")
        self.kinds: Counter[str] = Counter()

    def take(self) -> int | None:
        if time.monotonic() > self.deadline:
            self.result.capped = True
            return None
        return next(self.work, None)

    def unexpected(self, index: int, reply: bytes, latency: float) -> None:
        self.latencies.append(latency)
        if self.any_ok and reply.startswith(b"OK secure "):
            self.result.expected += 1
            return
        self.result.unexpected += 1
        self.kinds[reply.split(b" ", 1)[0].decode(errors="replace")] += 1
        if not self.result.first_unexpected:
            why = reply[:200].decode(errors="replace")
            self.result.first_unexpected = f"{self.names[index]}: {why}"


SO_TIMESTAMPNS = 35  # Linux (asm-generic/socket.h); not in Python's socket module
TIMESPEC = struct.Struct("@qq")
CMSG_SPACE = socket.CMSG_SPACE(TIMESPEC.size)


class _Conn:
    """One socketmap connection: one request in flight, the next sent on each reply."""

    __slots__ = ("buf", "index", "sent", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.index = -1
        self.sent = 0  # CLOCK_REALTIME ns, the clock of the kernel's receive timestamps


def socketmap_load(
    host: str, port: int, names: list[str], connections: int, count: int, cap: float, **kw: str
) -> Result:
    """Latency = from just before send() to the kernel's receive timestamp of the reply
    (SO_TIMESTAMPNS): how long the client took to get round to reading it is not counted,
    so the client's own scheduling and CPU do not show up in the daemon's latency."""
    started = time.monotonic()
    load = _Load(names, count, started + cap, kw.get("map_name", "sts"), kw.get("expect", "sts"))
    selector = selectors.EpollSelector()
    conns: list[_Conn] = []
    cpu = _cpu_seconds()
    begin = time.perf_counter()
    for _ in range(connections):
        try:
            sock = socket.create_connection((_loopback(host), port), timeout=5.0)
        except OSError as exc:
            load.result.errors += 1
            load.result.first_unexpected = load.result.first_unexpected or f"connect: {exc}"
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        conn = _Conn(sock)
        conns.append(conn)
        selector.register(sock, selectors.EVENT_READ, conn)
    open_conns = len(conns)
    for conn in conns:
        if not _send_next(load, conn):
            open_conns -= 1
            _close(selector, conn)
    hard_stop = started + cap + 30
    while open_conns and time.monotonic() < hard_stop:
        for key, _ in selector.select(1.0):
            conn = key.data
            if not _receive(load, conn) or not _send_next(load, conn):
                open_conns -= 1
                _close(selector, conn)
    for conn in conns:
        if conn.index >= 0:  # still waiting at the hard stop
            _fail(load, conn, f"no reply for {names[conn.index]}")
        _close(selector, conn)
    result = load.result
    result.seconds = time.perf_counter() - begin
    result.cpu_s = _cpu_seconds() - cpu
    result.requests = result.expected + result.unexpected
    result.replies = {load.expected_kind: result.expected, **load.kinds}
    if load.latencies:
        ordered = array("d", sorted(load.latencies))
        result.p50_ms = 1000 * statistics.median(ordered)
        result.p99_ms = 1000 * _percentile(ordered, 0.99)
        result.max_ms = 1000 * ordered[-1]
    return result


def _send_next(load: _Load, conn: _Conn) -> bool:
    index = load.take()
    if index is None:
        return False
    conn.index = index
    request = load.requests[index]
    conn.sent = time.time_ns()
    try:
        if conn.sock.send(request) != len(request):  # a few bytes into an idle socket
            raise OSError("short send")
    except OSError as exc:
        _fail(load, conn, f"send: {exc}")
        return False
    return True


def _receive(load: _Load, conn: _Conn) -> bool:
    """Read what is there; False when the connection is done with (error or EOF)."""
    try:
        data, ancdata, _, _ = conn.sock.recvmsg(65536, CMSG_SPACE)
    except BlockingIOError:
        return True
    except OSError as exc:
        _fail(load, conn, f"connection lost waiting for {load.names[conn.index]}: {exc}")
        return False
    if not data:
        _fail(load, conn, f"connection closed waiting for {load.names[conn.index]}")
        return False
    arrived = 0
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanos = TIMESPEC.unpack(payload[: TIMESPEC.size])
            arrived = seconds * 1_000_000_000 + nanos
    latency = ((arrived or time.time_ns()) - conn.sent) / 1e9
    buf = conn.buf
    buf += data
    if buf == load.replies[conn.index]:  # the expected reply, whole
        load.latencies.append(latency)
        load.result.expected += 1
        buf.clear()
        conn.index = -1
        return True
    colon = buf.find(b":", 0, 8)
    if colon < 0:
        if len(buf) >= 8:
            _fail(load, conn, "malformed netstring")
            return False
        return True
    size = int(buf[:colon])
    if size > MAX_REPLY:
        _fail(load, conn, "reply too long")
        return False
    end = colon + 1 + size
    if len(buf) <= end:
        return True  # the rest is on its way; the latency is taken at its last part
    reply = bytes(buf[colon + 1 : end])
    if buf[end : end + 1] != b"," or len(buf) > end + 1:
        _fail(load, conn, f"bad framing after {reply[:40]!r}")
        return False
    buf.clear()
    index, conn.index = conn.index, -1
    load.unexpected(index, reply, latency)
    return True


def _fail(load: _Load, conn: _Conn, why: str) -> None:
    load.result.errors += 1
    load.result.first_unexpected = load.result.first_unexpected or why
    conn.index = -1


def _close(selector: selectors.BaseSelector, conn: _Conn) -> None:
    with contextlib.suppress(KeyError, ValueError):
        selector.unregister(conn.sock)
    conn.sock.close()


async def pipeline_abuse(
    host: str, port: int, names: list[str], connections: int, cap: float
) -> Result:
    """Requests pipelined without reading replies; requests = how many the daemon took in."""
    result = Result()
    deadline = time.monotonic() + cap
    cpu = _cpu_seconds()
    begin = time.perf_counter()

    async def one(i: int) -> int:
        request = netstring(f"sts {names[i % len(names)]}".encode())
        payload = request * (65536 // len(request))
        sent = 0
        try:
            _, writer = await asyncio.open_connection(_loopback(host), port)
        except OSError:
            result.errors += 1
            return 0
        try:
            while (left := deadline - time.monotonic()) > 0:
                writer.write(payload)
                await asyncio.wait_for(writer.drain(), left)
                sent += len(payload) // len(request)
        except TimeoutError:
            pass
        except OSError:
            result.errors += 1  # the daemon closed it
        writer.transport.abort()
        return sent

    result.requests = sum(await asyncio.gather(*(one(i) for i in range(connections))))
    result.seconds = time.perf_counter() - begin
    result.cpu_s = _cpu_seconds() - cpu
    return result


# ---- DNS ------------------------------------------------------------------------------------


def _txt_query(name: str, qid: int) -> bytes:
    """A plain TXT query (RD=1, no EDNS), built by hand: no dnspython needed here."""
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 16, 1)


class _DnsSlot(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(data)


async def dns_load(
    host: str, port: int, names: list[str], count: int, window: int, cap: float
) -> Result:
    loop = asyncio.get_running_loop()
    work = islice(cycle(names), count)
    deadline = time.monotonic() + cap
    result = Result()
    rcodes: Counter[str] = Counter()
    latencies: array[float] = array("d")

    async def slot() -> None:
        transport, proto = await loop.create_datagram_endpoint(
            _DnsSlot, remote_addr=(_loopback(host), port)
        )
        try:
            for qid, name in enumerate(work):
                if time.monotonic() > deadline:
                    result.capped = True
                    return
                proto.waiting = loop.create_future()
                sent = time.perf_counter()
                transport.sendto(_txt_query(f"_mta-sts.{name}", qid & 0xFFFF))
                try:
                    reply = await asyncio.wait_for(proto.waiting, 1.0)
                except TimeoutError:
                    result.errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                result.requests += 1
                rcodes[("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN")[reply[3] & 3]] += 1
        finally:
            transport.close()

    cpu = _cpu_seconds()
    begin = time.perf_counter()
    await asyncio.gather(*(slot() for _ in range(window)))
    result.seconds = time.perf_counter() - begin
    result.cpu_s = _cpu_seconds() - cpu
    result.replies = dict(rcodes)
    if latencies:
        ordered = array("d", sorted(latencies))
        result.p50_ms = 1000 * statistics.median(ordered)
        result.p99_ms = 1000 * _percentile(ordered, 0.99)
        result.max_ms = 1000 * ordered[-1]
    return result


# ---- in-process use and CLI -----------------------------------------------------------------


def result_from(data: dict[str, Any]) -> Result:
    return Result(**{k: v for k, v in data.items() if k in Result.__dataclass_fields__})


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sm = sub.add_parser("socketmap")
    sm.add_argument("--host", default="127.0.0.1")
    sm.add_argument("--port", type=int, required=True)
    sm.add_argument("--connections", type=int, default=16)
    sm.add_argument("--map", default="sts", help="socketmap name sent before each domain")
    sm.add_argument("--expect", choices=("sts", "none", "ok"), default="sts")
    pl = sub.add_parser("pipeline")
    pl.add_argument("--host", default="127.0.0.1")
    pl.add_argument("--port", type=int, required=True)
    pl.add_argument("--connections", type=int, default=64)
    dns = sub.add_parser("dns")
    dns.add_argument("--server", required=True, help="IP:PORT")
    dns.add_argument("--window", type=int, default=32, help="queries in flight")
    for p in (sm, pl, dns):
        p.add_argument("--cpu", type=int, help="pin this client to one CPU")
        p.add_argument("--names", type=Path, required=True, help="one domain a line")
        p.add_argument("--count", type=int, default=0, help="requests (default: each name once)")
        p.add_argument("--time-cap", type=float, default=30.0, help="seconds")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    names = args.names.read_text().split()
    count = args.count or len(names)
    if args.mode == "socketmap":
        result = socketmap_load(
            args.host,
            args.port,
            names,
            args.connections,
            count,
            args.time_cap,
            map_name=args.map,
            expect=args.expect,
        )
        print(json.dumps(asdict(result)), flush=True)
        return
    if args.mode == "pipeline":
        coro = pipeline_abuse(args.host, args.port, names, args.connections, args.time_cap)
    else:
        host, _, port = args.server.rpartition(":")
        coro = dns_load(host, int(port), names, count, args.window, args.time_cap)
    result = asyncio.run(asyncio.wait_for(coro, args.time_cap + 60))
    print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
