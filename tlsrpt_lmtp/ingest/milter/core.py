"""The milter's decisions, sans-I/O: recipients, the buffered message, the reply at the end.

One ``MessageFilter`` per message. The adapter feeds it what the MTA sends (RCPT, headers,
body) and applies the ``Reply`` it returns at end of message. Mail that has no report
recipient is never buffered: ``wants_message`` is False at DATA and the adapter accepts it
there. Ingesting goes through the injected ``ingest`` (the shared pipeline), so every rule
about storage, events and DKIM lives in the pipeline, not here.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from tlsrpt_lmtp.ingest.delivery import SinkError
from tlsrpt_lmtp.ingest.dkim import DkimResult
from tlsrpt_lmtp.ingest.milter.config import MilterConfig, Mode, normalise_address
from tlsrpt_lmtp.ingest.pipeline import IngestResult
from tlsrpt_lmtp.store.base import ArchiveError

HEADER = "X-TLSRPT-Report"
_HEADER_LOWER = HEADER.lower().encode()

Ingest = Callable[[bytes], IngestResult]


class Action(StrEnum):
    CONTINUE = "continue"
    ACCEPT = "accept"  # no further filtering of this message
    DISCARD = "discard"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class Reply:
    """What to tell the MTA at end of message (modifications first, then the action)."""

    action: Action
    code: str | None = None  # "550"; set for REJECT and TEMPFAIL
    xcode: str | None = None  # "5.6.0"
    text: str | None = None
    add_header: tuple[str, str] | None = None
    delete_headers: tuple[int, ...] = ()  # 1-based indexes of HEADER to remove, descending
    delete_rcpts: tuple[str, ...] = ()  # as the MTA gave them


def tempfail(xcode: str, text: str) -> Reply:
    return Reply(Action.TEMPFAIL, "451", xcode, text)


def reject(code: str, xcode: str, text: str) -> Reply:
    return Reply(Action.REJECT, code, xcode, text)


class Budget:
    """Bytes of report mail buffered across all connections (libmilter threads share it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self._lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            return True

    def give_back(self, size: int) -> None:
        with self._lock:
            self.held -= size


class MessageFilter:
    """One message on its way through the milter. With a shared ``budget``, a message that
    would take more than is left is dropped as it comes and answered 451 4.3.1 at the end
    (the client retries); ``release`` gives its share back (done by ``end_of_message``)."""

    def __init__(self, config: MilterConfig, ingest: Ingest, budget: Budget | None = None) -> None:
        self._config = config
        self._wanted = frozenset(config.recipients)
        self._ingest = ingest
        self._recipients: list[str] = []
        self._report_recipients: list[str] = []
        self._buffer = bytearray()
        self._oversize = False
        self._budget = budget
        self._held = 0
        self._busy = False
        self._own_headers = 0  # HEADER lines that came with the message (forged or old)

    # --- envelope ---------------------------------------------------------------------------

    def recipient(self, address: str) -> None:
        self._recipients.append(address)
        if normalise_address(address) in self._wanted:
            self._report_recipients.append(address)

    @property
    def wants_message(self) -> bool:
        """True once a report recipient is among the recipients; otherwise nothing is kept."""
        return bool(self._report_recipients)

    # --- content ----------------------------------------------------------------------------

    def header(self, name: bytes | str, value: bytes | str, *, leading_space: bool) -> None:
        """One header field as the MTA passes it: ``value`` without the colon, folded lines
        joined by bare LF or CRLF; with ``leading_space`` (SMFIP_HDR_LEADSPC) the value keeps
        the space after the colon, so the original bytes (and DKIM's ``c=simple``) survive."""
        if not self.wants_message:
            return
        raw_name = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
        raw_value = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        if raw_name.lower() == _HEADER_LOWER:
            self._own_headers += 1
        if not leading_space:
            raw_value = b" " + raw_value
        raw_value = raw_value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        self._append(raw_name + b":" + raw_value + b"\r\n")

    def end_of_headers(self) -> None:
        if self.wants_message:
            self._append(b"\r\n")

    def body(self, chunk: bytes) -> None:
        if self.wants_message:
            self._append(chunk)

    def _append(self, data: bytes) -> None:
        if self._oversize or self._busy:
            return
        if len(self._buffer) + len(data) > self._config.max_message_size:
            self._oversize = True
        elif self._budget is not None and not self._budget.take(len(data)):
            self._busy = True
        else:
            self._held += len(data)
            self._buffer += data
            return
        self.release()

    def release(self) -> None:
        """Drop the buffered message and give its bytes back to the budget."""
        self._buffer = bytearray()
        if self._budget is not None and self._held:
            self._budget.give_back(self._held)
        self._held = 0

    @property
    def raw(self) -> bytes:
        return bytes(self._buffer)

    # --- the decision ---------------------------------------------------------------------

    def end_of_message(self) -> Reply:
        try:
            return self._decide()
        finally:
            self.release()

    def _decide(self) -> Reply:
        if not self.wants_message:
            return Reply(Action.CONTINUE)
        if self._busy:
            return tempfail("4.3.1", "too much report mail in progress, try again later")
        mode = self._config.mode
        only_reports = len(self._report_recipients) == len(self._recipients)
        if self._oversize:
            if mode is Mode.TAP or not only_reports:
                return Reply(Action.CONTINUE)
            limit = self._config.max_message_size
            return reject("552", "5.3.4", f"message exceeds the report size limit ({limit} bytes)")
        try:
            result = self._ingest(self.raw)
        except ArchiveError as exc:
            why = exc.strerror or str(exc)
            return tempfail("4.3.0", f"cannot store the report, try again later ({why})")
        except SinkError:  # archived, events owed: the retry writes them (same event ids)
            return tempfail("4.3.0", "cannot write the report's events, try again later")
        except Exception:  # a bug must not lose the report: the client retries it
            return tempfail("4.3.0", "internal error, try again later")
        if mode is Mode.DISCARD:
            if only_reports:
                return Reply(Action.DISCARD)
            return Reply(Action.CONTINUE, delete_rcpts=tuple(self._report_recipients))
        if mode is Mode.REJECT_INVALID and not result.valid and only_reports:
            return _refusal(result)
        return self._passed_on(result)

    def _passed_on(self, result: IngestResult) -> Reply:
        if not self._config.add_header:
            return Reply(Action.CONTINUE)
        removals = tuple(range(self._own_headers, 0, -1))
        return Reply(
            Action.CONTINUE, add_header=(HEADER, header_value(result)), delete_headers=removals
        )


def _refusal(result: IngestResult) -> Reply:
    if result.refused:
        if any(v.result is DkimResult.TEMPERROR for v in result.dkim):
            return tempfail("4.4.3", "cannot verify the report's DKIM signature now, try again")
        return reject("550", "5.7.20", f"TLS report not authenticated: {_first(result.errors)}")
    return reject("550", "5.6.0", f"no usable TLS report: {_first(result.errors)}")


def header_value(result: IngestResult) -> str:
    """``archive=<16 hex>; reports=N; failures=N[; dkim=RESULT]`` or ``...; reports=0; invalid``."""
    parts = [f"archive={result.archive_id[:16]}", f"reports={result.reports}"]
    if result.valid:
        parts.append(f"failures={result.failures}")
    else:
        parts.append("invalid")
    if result.dkim:
        parts.append(f"dkim={result.dkim[0].result.value}")
    return "; ".join(parts)


_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


def _first(errors: tuple[str, ...]) -> str:
    """A reason fit for an SMTP reply line: one line, printable, at most 200 characters."""
    text = _UNSAFE.sub(" ", errors[0] if errors else "unknown reason").strip()
    text = text.encode("ascii", "replace").decode("ascii")
    return text if len(text) <= 200 else text[:197] + "..."
