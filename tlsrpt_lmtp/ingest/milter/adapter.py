"""libmilter through pymilter: the thin layer between the MTA and ``core.MessageFilter``.

libmilter runs one thread per MTA connection and calls back into Python from those threads.
They share one ``MilterService``: the pipeline is called under a lock (one writer, as the
LMTP server's single worker; its calls block on fsync and SQLite, which is fine in a
libmilter thread: the MTA waits up to its ``milter_content_timeout``).

Negotiated with the MTA: no reply for MAIL, RCPT, header and body callbacks (SMFIP_NR_*);
header values with their leading space and folding (SMFIP_HDR_LEADSPC), so that the bytes
the pipeline sees, and DKIM verifies, are the bytes that were sent; a reply at DATA and at
end of headers, where mail without a report recipient is accepted without being buffered.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import Milter
import milter

from tlsrpt_lmtp import metrics
from tlsrpt_lmtp.ingest.milter.config import MilterConfig
from tlsrpt_lmtp.ingest.milter.core import HEADER, Action, Budget, MessageFilter, Reply
from tlsrpt_lmtp.ingest.milter.gate import ConnectionGate
from tlsrpt_lmtp.ingest.pipeline import IngestResult, Pipeline
from tlsrpt_lmtp.net.unixsock import prepare_unix_listen

CONTINUE: int = Milter.CONTINUE
ACCEPT: int = Milter.ACCEPT
_ACTIONS: dict[Action, int] = {
    Action.CONTINUE: CONTINUE,
    Action.ACCEPT: ACCEPT,
    Action.DISCARD: Milter.DISCARD,
    Action.REJECT: Milter.REJECT,
    Action.TEMPFAIL: Milter.TEMPFAIL,
}
_F = TypeVar("_F", bound=Callable[..., Any])


def _noreply(func: _F) -> _F:
    """pymilter's @noreply: the MTA is told not to wait for this callback's reply."""
    return cast(_F, Milter.noreply(func))


def _raw_bytes(func: _F) -> _F:
    """pymilter's @decode("bytes"): header values arrive undecoded."""
    return cast(_F, Milter.decode("bytes")(func))


class ServiceClosedError(RuntimeError):
    pass


class MilterService:
    """What every libmilter thread shares: the settings and the pipeline behind a lock."""

    def __init__(self, config: MilterConfig, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline
        self._lock = threading.Lock()
        self._closed = False
        self.budget = Budget(config.max_in_flight)

    def ingest(self, raw: bytes) -> IngestResult:
        with self._lock:
            if self._closed:  # a message still in flight at shutdown: the MTA retries it
                raise ServiceClosedError("shutting down")
            with metrics.RECORDER.intake_of("milter"):
                return self.pipeline.ingest(raw, source="milter")

    def message(self) -> MessageFilter:
        return MessageFilter(self.config, self.ingest, self.budget)

    def close(self) -> None:
        """Wait for the ingest in progress, then refuse new ones (the pipeline may close)."""
        with self._lock:
            self._closed = True


@Milter.header_leading_space
class ReportMilter(Milter.Base):  # type: ignore[misc]
    def __init__(self, service: MilterService) -> None:
        self._service = service
        self._message: MessageFilter | None = None

    @_noreply
    def envfrom(self, sender: str, *params: str) -> int:
        self._drop()
        self._message = self._service.message()
        return CONTINUE

    @_noreply
    def envrcpt(self, to: str, *params: str) -> int:
        if self._message is not None:
            self._message.recipient(to)
        return CONTINUE

    def data(self) -> int:
        return self._accept_unless_wanted()

    @_raw_bytes
    @_noreply
    def header(self, name: bytes | str, value: bytes | str) -> int:
        if self._message is not None:
            leading = bool(self._protocol & Milter.P_HDR_LEADSPC)
            self._message.header(name, value, leading_space=leading)
        return CONTINUE

    def eoh(self) -> int:
        if self._message is not None:
            self._message.end_of_headers()
        return self._accept_unless_wanted()

    @_noreply
    def body(self, chunk: bytes) -> int:
        if self._message is not None:
            self._message.body(chunk)
        return CONTINUE

    def eom(self) -> int:
        message, self._message = self._message, None
        if message is None:
            return CONTINUE
        return self._apply(message.end_of_message())

    def abort(self) -> int:
        self._drop()
        return CONTINUE

    def close(self) -> int:
        self._drop()
        return CONTINUE

    def _drop(self) -> None:
        message, self._message = self._message, None
        if message is not None:
            message.release()

    def _accept_unless_wanted(self) -> int:
        if self._message is None or self._message.wants_message:
            return CONTINUE
        self._message = None  # not a report: nothing kept, no further callbacks
        return ACCEPT

    def _apply(self, reply: Reply) -> int:
        try:
            for index in reply.delete_headers:
                self.chgheader(HEADER, index, None)
            if reply.add_header is not None:
                name, value = reply.add_header
                if self._protocol & Milter.P_HDR_LEADSPC:  # the MTA takes the value verbatim
                    value = " " + value
                self.addheader(name, value)
            for rcpt in reply.delete_rcpts:
                self.delrcpt(rcpt)
            if reply.code is not None:
                text = (reply.text or "").replace("%", "%%")
                self.setreply(reply.code, reply.xcode, text)
        except Exception as exc:  # an action the MTA did not grant: say so, keep the verdict
            print(f"tlsrpt-lmtp milter: cannot modify the message: {exc!r}", file=sys.stderr)
        return _ACTIONS[reply.action]


STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def block_stop_signals() -> None:
    """Block SIGTERM, SIGINT and SIGHUP in this thread and every thread started after it.

    libmilter stops on them through its own thread, which waits for them with sigwait(); any
    thread that does not block them (e.g. an alert delivery thread started before the main
    loop) could take the signal instead, and the process would die on the spot. Call this
    first, before anything starts a thread."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def serve(
    config: MilterConfig,
    pipeline: Pipeline,
    *,
    ready: Callable[[], None] | None = None,
    name: str = "tlsrpt-lmtp",
) -> None:
    """Run libmilter until SIGTERM, SIGINT or SIGHUP (libmilter's own signal thread stops it).

    libmilter exists once per process, so this runs once per process."""
    block_stop_signals()
    service = MilterService(config, pipeline)
    Milter.factory = lambda: ReportMilter(service)
    _register(name)
    milter.setconn(config.listen)
    milter.settimeout(config.timeout)
    path = config.socket_path
    if path is not None:
        prepare_unix_listen(path)
    milter.opensocket(True)
    if path is not None:
        os.chmod(path, 0o666)  # the MTA runs as another user; guard access with the directory
    else:
        disable_nagle()
    gate = ConnectionGate(config.max_connections, config.max_connections_per_peer, config.timeout)
    gate.start()
    if ready is not None:
        ready()
    try:
        milter.main()
    finally:
        gate.stop()
        service.close()
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def disable_nagle() -> int:
    """TCP_NODELAY on libmilter's listening socket(s); Linux passes it on to the accepted ones.

    libmilter writes each reply packet separately (at end of message: ADDHEADER, then
    CONTINUE). With Nagle's algorithm the second write waits for the MTA to acknowledge the
    first, which the MTA delays (40 ms on Linux) while it waits for the rest: 40 ms per tapped
    message. libmilter has no hook for socket options, so the socket is found among the
    process's file descriptors. Returns how many sockets were changed (0 where /proc is absent).
    """
    changed = 0
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return 0
    for name in names:
        try:
            if not stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                continue
            dup = os.dup(int(name))
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=dup)  # owns dup from here on
        except OSError:
            os.close(dup)
            continue
        with sock:
            if (
                sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.type == socket.SOCK_STREAM
                and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            ):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                changed += 1
    return changed


def _register(name: str) -> None:
    """Milter.runmilter's callback wiring, without its opensocket+main (we chmod between)."""
    milter.set_connect_callback(Milter.connect_callback)
    milter.set_helo_callback(_priv(lambda m, host: m.hello(host)))
    milter.set_envfrom_callback(_priv(lambda m, *b: m.envfrom_bytes(*b)))
    milter.set_envrcpt_callback(_priv(lambda m, *b: m.envrcpt_bytes(*b)))
    milter.set_header_callback(_priv(lambda m, f, v: m.header_bytes(f, v)))
    milter.set_eoh_callback(_priv(lambda m: m.eoh()))
    milter.set_body_callback(_priv(lambda m, chunk: m.body(chunk)))
    milter.set_eom_callback(_priv(lambda m: m.eom()))
    milter.set_abort_callback(_priv(lambda m: m.abort()))
    milter.set_close_callback(Milter.close_callback)
    milter.register(
        name,
        data=_priv(lambda m: m.data()),
        unknown=_priv(lambda m, cmd: m.unknown(cmd)),
        negotiate=Milter.negotiate_callback,
    )


def _priv(call: Callable[..., Any]) -> Callable[..., Any]:
    def callback(ctx: Any, *args: Any) -> Any:
        return call(ctx.getpriv(), *args)

    return callback
