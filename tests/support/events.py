"""An ``emit`` that keeps the events, for tests that run the pipeline, the milter or alerts."""

from __future__ import annotations

from tlsrpt_lmtp.core.events import Event


class Recorder:
    """An ``emit`` that keeps the events."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e["event"] == name]
