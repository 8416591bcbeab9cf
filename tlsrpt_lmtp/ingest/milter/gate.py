"""Connection limit and idle timeout for libmilter, which has neither in a usable form: it
serves every connection it accepts, and Debian's build (with its pool of workers) looks for
idle sessions only every 600 s, so its I/O timeout lets an idle connection live for up to
``timeout`` + 600 s.

A watcher thread looks at the process's sockets a few times a second. The connections
accepted on the milter's listening address beyond ``limit`` are shut down, newest first, so
the connections already working are never the ones cut; so is a TCP connection that has
received nothing for ``idle_timeout`` seconds (the kernel's TCP_INFO says since when).
libmilter reads end-of-file on a shut-down connection and ends it as if the MTA had left.
(libmilter has no hook between accept() and its session; the sockets are found the way
``disable_nagle`` finds them.) A unix socket has no such clock: there the directory decides
who may connect at all, and libmilter's own timeout ends idle sessions.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator

from tlsrpt_lmtp.net.peers import PeerKey, peer_key

_POLL = 0.2  # seconds between looks
_IDLE_EVERY = 1.0  # seconds between idle checks
# struct tcp_info (linux/tcp.h): 8 bytes of u8 fields, then u32s from tcpi_rto on;
# tcpi_last_data_recv (ms since data last arrived) is the 12th u32, at byte 8 + 11 * 4.
_LAST_DATA_RECV = struct.Struct("=52xI")


def _sockets() -> Iterator[tuple[int, int]]:
    """(fd, inode) of every socket of this process."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError, ValueError):
            st = os.fstat(int(name))
            if stat.S_ISSOCK(st.st_mode):
                yield int(name), st.st_ino


@contextlib.contextmanager
def _borrow(fd: int, inode: int) -> Iterator[socket.socket | None]:
    """A duplicate of ``fd`` as a socket object, if ``fd`` is still the socket ``inode``."""
    try:
        dup = os.dup(fd)
    except OSError:
        yield None
        return
    try:
        if os.fstat(dup).st_ino != inode:
            raise OSError
        sock = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        yield None
        return
    with sock:
        yield sock


def _address(sock: socket.socket) -> tuple[int, str, int]:
    """(family, host or unix path, port)."""
    name = sock.getsockname()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return sock.family, str(name[0]), int(name[1])
    return sock.family, str(name), 0


_WILDCARDS = ("0.0.0.0", "::")


class ConnectionGate:
    """Keep at most ``limit`` connections accepted on the listening socket(s) open, at most
    ``per_peer`` of them from one peer (a local user, see peers.py), none idle too long."""

    def __init__(self, limit: int, per_peer: int, idle_timeout: float) -> None:
        self.limit = limit
        self.per_peer = per_peer
        self.idle_timeout = idle_timeout
        self._idle_checked = 0.0
        self._listeners: set[tuple[int, str, int]] = set()
        # inode -> (arrival order, peer), or None: not a connection of ours
        self._seen: dict[int, tuple[int, PeerKey | None] | None] = {}
        self._cut: set[int] = set()  # shut down, waiting for libmilter to close them
        self._order = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="milter-gate", daemon=True)

    def start(self) -> None:
        """Find the listening socket(s) (call after libmilter opened them), then watch."""
        for fd, inode in _sockets():
            with _borrow(fd, inode) as sock:
                if sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    self._listeners.add(_address(sock))
                    self._seen[inode] = None
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(_POLL):
            with contextlib.suppress(Exception):  # a watcher must never take the milter down
                self.check()

    def check(self) -> int:
        """One look: shut down the newest connections beyond the limits and (every second)
        the idle ones; returns how many."""
        current = {inode: fd for fd, inode in _sockets()}
        for inode in list(self._seen):
            if inode not in current:
                del self._seen[inode]
                self._cut.discard(inode)
        for inode in sorted(set(current) - set(self._seen)):
            self._seen[inode] = self._classify(current[inode], inode)
        ours = sorted(
            (seen[0], inode, seen[1])
            for inode, seen in self._seen.items()
            if seen is not None and inode not in self._cut
        )
        kept: list[int] = []
        cut: list[int] = []
        by_peer: dict[PeerKey, int] = {}
        for _, inode, peer in ours:
            if len(kept) >= self.limit or (
                peer is not None and by_peer.get(peer, 0) >= self.per_peer
            ):
                cut.append(inode)
                continue
            if peer is not None:
                by_peer[peer] = by_peer.get(peer, 0) + 1
            kept.append(inode)
        if time.monotonic() - self._idle_checked >= _IDLE_EVERY:
            self._idle_checked = time.monotonic()
            cut += [inode for inode in kept if self._idle(current[inode], inode)]
        for inode in cut:
            with _borrow(current[inode], inode) as sock, contextlib.suppress(OSError):
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
        self._cut.update(cut)
        return len(cut)

    def _idle(self, fd: int, inode: int) -> bool:
        with _borrow(fd, inode) as sock, contextlib.suppress(OSError):
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
                (last_data_recv,) = _LAST_DATA_RECV.unpack_from(info)
                return bool(last_data_recv >= self.idle_timeout * 1000)
        return False

    def _classify(self, fd: int, inode: int) -> tuple[int, PeerKey | None] | None:
        with _borrow(fd, inode) as sock:
            if sock is None or sock.type != socket.SOCK_STREAM:
                return None
            try:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    return None
                if not self._accepted_here(_address(sock)):
                    return None
                sock.getpeername()  # an accepted connection has a peer
            except OSError:
                return None
            peer = peer_key(sock)
        self._order += 1
        return self._order, peer

    def _accepted_here(self, address: tuple[int, str, int]) -> bool:
        family, _, port = address
        return address in self._listeners or any(
            (family, wildcard, port) in self._listeners for wildcard in _WILDCARDS
        )
