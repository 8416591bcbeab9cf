"""Who is at the other end of a connection, for a per-peer connection limit.

Every local user can connect to a loopback port, and all of them come from 127.0.0.1, so an
address says nothing there: a local peer is told apart by the user id owning its socket.
For a unix socket the kernel says it (SO_PEERCRED); for TCP from this host the peer's own
socket is looked up by its exact address pair with the kernel's sock_diag netlink interface,
which reports its owner (as `ss -e` shows). A remote peer is its IP address. When the owner
cannot be found, there is no key and only the global limit applies.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

PeerKey = tuple[str, int | str]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NLMSG = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states
_COOKIE_NONE = struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)  # idiag_if, no cookie
_MSG_UID = struct.Struct("=I")
_MSG_UID_AT = 4 + 48 + 12  # family..retrans, inet_diag_sockid, expires/rqueue/wqueue


def peer_key(sock: Any) -> PeerKey | None:
    """The key a connection counts against: ("uid", N) for a local peer, ("ip", address) for
    a remote one, None if unknown. ``sock`` is the transport's socket."""
    try:
        if sock.family == socket.AF_UNIX:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            return "uid", struct.unpack("=3i", creds)[1]
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        peer, local = sock.getpeername(), sock.getsockname()
    except OSError:
        return None
    family = sock.family
    address = ipaddress.ip_address(peer[0].split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # 127.0.0.1 on a dual-stack listener: the peer's own socket is an IPv4 one
        family, address = socket.AF_INET, address.ipv4_mapped
        ours = ipaddress.IPv6Address(local[0].split("%")[0]).ipv4_mapped
        peer, local = (str(address), peer[1]), (str(ours), local[1])
    if not (address.is_loopback or peer[0] == local[0]):
        return "ip", str(address)
    uid = tcp_owner(family, peer, local)
    return None if uid is None else ("uid", uid)


def tcp_owner(family: int, local: tuple[Any, ...], remote: tuple[Any, ...]) -> int | None:
    """The user id owning the TCP socket of this host bound to ``local`` and connected to
    ``remote`` (sock_diag exact lookup), or None."""
    try:
        src = socket.inet_pton(family, local[0].split("%")[0])
        dst = socket.inet_pton(family, remote[0].split("%")[0])
    except (OSError, ValueError):
        return None
    sockid = (
        struct.pack("!HH", local[1], remote[1])
        + src.ljust(16, b"\0")
        + dst.ljust(16, b"\0")
        + _COOKIE_NONE
    )
    request = _REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    header = _NLMSG.pack(_NLMSG.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            nl.sendto(header + request, (0, 0))
            reply = nl.recv(8192)
    except OSError:  # no netlink here (e.g. a sandbox without AF_NETLINK)
        return None
    if len(reply) < _NLMSG.size + _MSG_UID_AT + 4:
        return None
    kind = _NLMSG.unpack_from(reply)[1]
    if kind != _SOCK_DIAG_BY_FAMILY:  # NLMSG_ERROR: no such socket (it is gone already)
        return None
    uid: int = _MSG_UID.unpack_from(reply, _NLMSG.size + _MSG_UID_AT)[0]
    return uid
