"""Prometheus metrics of the daemons (docs/metrics.md), off unless ``--metrics-listen`` or
``[metrics] listen`` is set.

The call sites in the daemons go through ``metrics.RECORDER``: a ``Recorder`` that does
nothing until ``start_*`` replaces it with the real one (recorder.py). ``prometheus_client``
is imported only then, because ``serve`` must choose its multiprocess mode (its stage 2
process counts into files the server's endpoint sums: see exposition.py) before the library
is first imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tlsrpt_lmtp.ingest.pipeline import IngestResult
    from tlsrpt_lmtp.store.base import Pending
    from tlsrpt_lmtp.sts.reply import Answer


class Recorder:
    """What the daemons report; this base class records nothing (metrics off)."""

    enabled = False

    def intake(self, intake: str, accepted: bool) -> None:
        """A message handed to an intake: archived and acknowledged, or answered 451."""

    @contextlib.contextmanager
    def intake_of(self, intake: str) -> Iterator[None]:
        """``intake`` around an ingest call: accepted unless it raises."""
        yield

    def event_written(self, event: dict[str, Any]) -> None:
        """An event the sink took (sinks.Emitter)."""

    def stage2_done(self, items: Sequence[Pending], results: Sequence[IngestResult]) -> None:
        """A batch stage 2 finished (stage2.follow)."""

    def policy_answer(
        self, map_name: str, answer: Answer, enforce_testing: bool, hit: bool
    ) -> None:
        """One policy lookup answered; ``hit``: from the cache without I/O."""


RECORDER: Recorder = Recorder()


def install(recorder: Recorder) -> None:
    global RECORDER
    RECORDER = recorder
