"""DKIM for a batch of messages without holding the queue.

Verifying one message after another made every key lookup wait for the previous one: two mails
naming unresponsive key domains held an honest report for the sum of their timeouts. Here the
key records of the whole batch are fetched first, concurrently (a bounded thread pool: the
lookup is dnspython's blocking resolver, and a thread pool works whether or not the caller runs
an event loop), then each message is verified with the fetched answers (sans-I/O, as before).

Time is bounded twice: a message has ``message_budget`` seconds in all (the wait for its keys
plus its own verification), a batch ``batch_budget``. The wait for keys ends after
``message_budget``: a lookup still running then is ``temperror`` ("no key record within the DKIM
time budget"), and so is a signature reached after its message's or its batch's budget. A key
given up on does not count against the message's other signatures: their keys came in time.
Threads still waiting on DNS when the wait ends are left to finish (within the resolver's own
timeout); their answers still reach the key cache, for the next batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from tlsrpt_lmtp.core.dkim import (
    DnsTempError,
    KeyLookup,
    MessageVerdict,
    key_names,
    verify_message,
)
from tlsrpt_lmtp.ingest.dkim.keys import query_name

MAX_PARALLEL_LOOKUPS = 32  # threads waiting on DNS at once (they cost a socket each, no CPU)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Budgets:
    """Seconds of DKIM work one message, and one batch, may take before the rest is temperror."""

    message: float = 10.0
    batch: float = 30.0


DEFAULT_BUDGETS = Budgets()


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One fetched key record: its value (or the exception the lookup raised) and when it came
    (``in_time`` False: it did not come, the value is a temperror saying so)."""

    value: bytes | BaseException | None
    at: float
    in_time: bool = True


def verify_batch(
    raws: Sequence[bytes],
    lookup: KeyLookup,
    *,
    strict_service_type: bool = False,
    min_key_bits: int = 1024,
    budgets: Budgets = DEFAULT_BUDGETS,
    clock: Clock = time.monotonic,
) -> list[MessageVerdict]:
    """One verdict per message of ``raws``, in order. Raises only for a bug in this function
    (not in ``lookup`` or dkimpy, whose errors become per-signature verdicts)."""
    start = clock()
    wanted = [tuple(query_name(n) for n in key_names(raw)) for raw in raws]
    fetched = _fetch(_interleaved(wanted), lookup, start, budgets, clock)
    batch_end = start + budgets.batch
    verdicts: list[MessageVerdict] = []
    for raw, names in zip(raws, wanted, strict=True):
        # the wait counts until the last key that came in time: one given up on is a temperror
        # already and must not cost the message's other signatures their own verification
        waited = max((fetched[n].at for n in names if fetched[n].in_time), default=start) - start
        began = clock()

        def budget(waited: float = waited, began: float = began) -> str | None:
            now = clock()
            if now > batch_end:
                return f"DKIM time budget of the batch ({budgets.batch:g} s) spent"
            if waited + (now - began) > budgets.message:
                return f"DKIM time budget of the message ({budgets.message:g} s) spent"
            return None

        verdicts.append(
            verify_message(
                raw,
                _answers(fetched),
                strict_service_type=strict_service_type,
                min_key_bits=min_key_bits,
                budget=budget,
            )
        )
    return verdicts


def _interleaved(wanted: list[tuple[str, ...]]) -> list[str]:
    """Every message's first key before anyone's second, so that one message with many
    signatures cannot push the others' keys to the back of the queue; no duplicates."""
    names: dict[str, None] = {}
    for rank in range(max(map(len, wanted), default=0)):
        for names_of_message in wanted:
            if rank < len(names_of_message):
                names[names_of_message[rank]] = None
    return list(names)


def _fetch(
    names: list[str], lookup: KeyLookup, start: float, budgets: Budgets, clock: Clock
) -> dict[str, _Outcome]:
    """Run ``lookup`` for every name, at most MAX_PARALLEL_LOOKUPS at once, until the
    message budget (or the batch's, if smaller) is spent; what is late is a temperror."""
    if not names:
        return {}
    limit = min(budgets.message, budgets.batch)
    deadline = start + limit
    fetched: dict[str, _Outcome] = {}
    pool = ThreadPoolExecutor(min(len(names), MAX_PARALLEL_LOOKUPS), "dkim-keys")
    try:
        pending: dict[Future[bytes | None], str] = {
            pool.submit(lookup, name): name for name in names
        }
        while pending:
            left = deadline - clock()
            # after the deadline, still take what has come (its time decides, not this loop's)
            done, _ = wait(pending, timeout=max(left, 0.0), return_when=FIRST_COMPLETED)
            for future in done:
                name = pending.pop(future)
                error = future.exception()
                fetched[name] = _Outcome(future.result() if error is None else error, clock())
            if left <= 0:
                break
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    late = DnsTempError(f"no key record within the DKIM time budget ({limit:g} s)")
    for name in names:
        fetched.setdefault(name, _Outcome(late, deadline, in_time=False))
    return fetched


def _answers(fetched: dict[str, _Outcome]) -> KeyLookup:
    """The lookup ``verify_message`` gets: the fetched answers, never the network."""

    def lookup(name: str) -> bytes | None:
        outcome = fetched.get(query_name(name))
        if outcome is None:  # key_names and dkimpy disagree: a bug, but no wait on DNS
            raise DnsTempError(f"the key record {name.rstrip('.')} was not fetched ahead")
        if isinstance(outcome.value, BaseException):
            raise outcome.value.with_traceback(None)  # shared by messages: no growing traceback
        return outcome.value

    return lookup
