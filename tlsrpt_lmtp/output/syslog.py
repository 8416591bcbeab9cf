"""The syslog sink: each JSON event as one syslog message a stock rsyslog or syslog-ng reads.

- Message: RFC 5424 (``<22>1 TIMESTAMP HOST tlsrpt-lmtp PID EVENT - {json}``) or the RFC 3164
  form (``<22>Nov 30 07:00:00 [HOST ]tlsrpt-lmtp[PID]: {json}``). ``auto`` picks RFC 3164 on a
  unix socket (``/dev/log``: rsyslog's imuxsock and journald parse only that form there) and
  RFC 5424 over the network. Facility mail, severity info (``<22>``), no BOM (mmjsonparse must
  see ``{`` first).
- TCP framing (RFC 6587): octet counting (``LEN SP MSG``, the default: rsyslog's imtcp and
  syslog-ng's ``syslog()`` source take it as is) or a trailing LF (syslog-ng's ``network()``).
  A rendered event never holds a raw LF (JSON escapes it), so both frame it exactly.
- Size: a message longer than ``max_size`` bytes (default 8096: the most a stock rsyslog keeps,
  its ``maxMessageSize`` of 8k less its reserve; at most 65000 on UDP and the unix socket) is
  shortened to a still valid JSON object marked ``"truncated": true`` (see ``shorten``), never
  dropped. Raise it together with the collector's limit to send large events whole over TCP.
- Failures: ``write_line`` raises OSError when the message was not handed to the kernel for
  the collector; a TCP connection the collector closed (a restart) is noticed before the next
  write and reopened, and the unix socket is reconnected once when its receiver was replaced.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

FORMATS = ("auto", "rfc5424", "rfc3164")
FRAMINGS = ("octet-counting", "lf")
MIN_SIZE = 480  # RFC 5424 §6.1: every receiver accepts this much
DATAGRAM_MAX = 65000  # below the UDP payload limit of IPv4 and IPv6
_PRI = "<22>"  # facility mail (2) * 8 + severity informational (6)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_EVENT = re.compile(r'"event":"([!-~]{1,32}?)"')
_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")  # not an escaped backslash, then "u0000"
_KEEP = frozenset(("schema", "event", "event_id", "timestamp", "truncated", "original_size"))
_MARKS = ("truncated", "original_size", "truncated_fields")


@dataclass(frozen=True, slots=True)
class SyslogOptions:
    format: str = "auto"
    framing: str = "octet-counting"
    max_size: int = 8096

    def check(self) -> None:
        """ValueError with a message for the config file when an option is out of range."""
        if self.format not in FORMATS:
            raise ValueError(f"syslog_format must be one of {', '.join(FORMATS)}")
        if self.framing not in FRAMINGS:
            raise ValueError(f"syslog_framing must be one of {', '.join(FRAMINGS)}")
        if not MIN_SIZE <= self.max_size <= 16 * 1024 * 1024:
            raise ValueError(f"syslog_max_size must be between {MIN_SIZE} and 16777216 bytes")


@dataclass(frozen=True, slots=True)
class Target:
    transport: str  # "unix", "udp" or "tcp"
    path: str = ""
    host: str = ""
    port: int = 514


def parse_target(address: str) -> Target:
    """'/dev/log' (a socket path, or unix:PATH), 'udp:HOST:PORT' or 'tcp:HOST:PORT' (port
    default 514, an IPv6 address in brackets)."""
    scheme, _, rest = address.partition(":")
    if scheme not in ("udp", "tcp"):
        path = rest if scheme == "unix" else address
        if not path:
            raise ValueError(f"syslog address {address!r}: expected a socket path or udp:/tcp:")
        return Target("unix", path=path)
    if rest.endswith("]") or ":" not in rest:
        host, port = rest, "514"
    else:
        host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"syslog address {address!r}: expected {scheme}:HOST:PORT")
    return Target(scheme, host=host, port=int(port))


def header(fmt: str, *, now: float, host: str, pid: int, event: str, local: bool) -> str:
    """Everything before the JSON (``fmt`` is rfc5424 or rfc3164; ``local``: no host name)."""
    if fmt == "rfc5424":
        stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds")
        return f"{_PRI}1 {stamp.replace('+00:00', 'Z')} {host} tlsrpt-lmtp {pid} {event} - "
    t = time.localtime(now)
    stamp = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    return f"{_PRI}{stamp} {'' if local else host + ' '}tlsrpt-lmtp[{pid}]: "


def frame(message: bytes, framing: str) -> bytes:
    if framing == "lf":
        return message + b"\n"
    return b"%d %s" % (len(message), message)


def event_name(line: str) -> str:
    """The event's name for the MSGID field (printable ASCII, at most 32), else '-'."""
    m = _EVENT.search(line, 0, 200)
    return m.group(1) if m else "-"


def without_nul(line: str) -> str:
    """``\\u0000`` escapes as U+FFFD: rsyslog's JSON parser (libfastjson) ends a string at NUL,
    which would hide the rest of a value a report sender wrote."""
    return _NUL.sub(r"\1\\ufffd", line) if "\\u0000" in line else line


def shorten(line: str, limit: int) -> str:
    """``line`` (a JSON object) in at most ``limit`` UTF-8 bytes, still one JSON object.

    The largest field is cut first, again until it fits: a string keeps its beginning (with
    '…'), a list its first items; anything else is removed. ``truncated: true``,
    ``original_size`` (bytes) and ``truncated_fields`` (at most 20 names) say what
    happened."""
    data = line.encode()
    if len(data) <= limit:
        return line
    try:
        loaded = orjson.loads(data)
    except orjson.JSONDecodeError:
        loaded = None
    obj: dict[str, object] = (
        loaded if isinstance(loaded, dict) else {"event": "tlsrpt.unparsable", "text": line}
    )
    obj.update(truncated=True, original_size=len(data))
    touched: list[str] = []
    for _ in range(64):  # a string is cut in a round or two, a list halves per round
        if touched:
            obj["truncated_fields"] = touched[:20]
        out = orjson.dumps(obj, default=str)
        if len(out) <= limit:
            return out.decode()
        excess = len(out) - limit
        sizes = {k: len(orjson.dumps(v, default=str)) for k, v in obj.items() if k not in _KEEP}
        sizes.pop("truncated_fields", None)
        if not sizes:
            break
        order = sorted(sizes, key=lambda k: -sizes[k])
        key, size = order[0], sizes[order[0]]
        value = obj[key]
        if key not in touched:
            touched.append(key)
        if _cuttable(value, size) and isinstance(value, str):
            keep = min(len(value) - 1, int(len(value) * (size - excess - 16) / size))
            obj[key] = value[: max(keep, 0)] + "…"
        elif _cuttable(value, size) and isinstance(value, list):
            obj[key] = value[: len(value) // 2]
        else:  # remove it, and as many more of the largest such fields as the excess needs
            freed = 0
            for k in order:
                if freed >= excess:
                    break
                if k == key or not _cuttable(obj[k], sizes[k]):
                    freed += sizes[k] + len(k) + 4
                    del obj[k]
                    if len(touched) < 20 and k not in touched:
                        touched.append(k)
    kept = ("schema", "event", "event_id", "timestamp", *_MARKS[:2])
    minimal = {k: obj[k] for k in kept if k in obj}
    minimal["event"] = str(minimal.get("event", ""))[:64]
    return orjson.dumps(minimal, default=str).decode()


def _cuttable(value: object, size: int) -> bool:
    """A string or list that can be shortened rather than removed."""
    if isinstance(value, str):
        return size > 16 and len(value) > 1
    return isinstance(value, list) and len(value) > 1


class SyslogWriter:
    """A sink Writer: one syslog message per rendered event line (see the module doc)."""

    def __init__(
        self, address: str, options: SyslogOptions | None = None, *, timeout: float = 10.0
    ) -> None:
        self.options = options or SyslogOptions()
        self.options.check()
        self.target = parse_target(address)
        fmt = self.options.format
        if fmt == "auto":
            fmt = "rfc3164" if self.target.transport == "unix" else "rfc5424"
        self.format = fmt
        self.limit = self.options.max_size
        if self.target.transport != "tcp":
            self.limit = min(self.limit, DATAGRAM_MAX)
        self._timeout = timeout
        self._host = _hostname()
        self._pid = os.getpid()
        self._sock: socket.socket | None = None
        self._addr: tuple[object, ...] | str = ""
        self._lock = threading.Lock()

    def message(self, line: str, limit: int | None = None) -> bytes:
        """The syslog message for one event line, at most ``limit`` bytes (default max_size)."""
        head = header(
            self.format,
            now=time.time(),
            host=self._host,
            pid=self._pid,
            event=event_name(line),
            local=self.target.transport == "unix",
        ).encode()
        budget = (limit or self.limit) - len(head)
        return head + shorten(without_nul(line), budget).encode()

    def write_line(self, line: str) -> None:
        """Hand one event to the collector; OSError when it was not (the caller retries)."""
        with self._lock:
            if self.target.transport == "tcp":
                self._send_stream(frame(self.message(line), self.options.framing))
            else:
                self._send_datagram(line)

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- transports --------------------------------------------------------------------------

    def _send_stream(self, data: bytes) -> None:
        if self._sock is not None and _peer_closed(self._sock):
            self._drop()  # the collector went away (restart): this event goes to the new one
        fresh = self._sock is None
        sock = self._sock or self._connect()
        try:
            sock.sendall(data)
            return
        except OSError:
            self._drop()
            if fresh:
                raise
        sock = self._connect()  # the old connection died under this write: one new try
        try:
            sock.sendall(data)
        except OSError:
            self._drop()
            raise

    def _send_datagram(self, line: str) -> None:
        message = self.message(line)
        for attempt in range(3):
            sock = self._sock or self._connect()
            try:
                if self.target.transport == "udp":
                    sock.sendto(message, self._addr)
                else:
                    sock.send(message)
                return
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE and len(message) > MIN_SIZE * 4:
                    message = self.message(line, max(len(message) // 4, MIN_SIZE * 4))
                    continue
                self._drop()
                reconnect = exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN)
                if attempt or self.target.transport == "udp" or not reconnect:
                    raise

    def _connect(self) -> socket.socket:
        t = self.target
        if t.transport == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(t.path)
            except OSError:
                sock.close()
                raise
        else:
            kind = socket.SOCK_STREAM if t.transport == "tcp" else socket.SOCK_DGRAM
            if kind == socket.SOCK_STREAM:
                sock = socket.create_connection((t.host, t.port), timeout=self._timeout)
            else:
                family, _, _, _, addr = socket.getaddrinfo(t.host, t.port, type=kind)[0]
                sock = socket.socket(family, kind)
                sock.settimeout(self._timeout)
                self._addr = addr
        self._sock = sock
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _peer_closed(sock: socket.socket) -> bool:
    """True when the collector closed or reset the connection (it never sends us anything)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # with a timeout, recv would wait for data that never comes
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


def _hostname() -> str:
    name = "".join(ch for ch in socket.gethostname() if "!" <= ch <= "~")[:255]
    return name or "-"
