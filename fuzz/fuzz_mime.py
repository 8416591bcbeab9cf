"""Fuzz target: a raw message -> extract -> events (report and invalid), all encodable.

Documented: none; extract reports every problem in ``Extracted.errors``. Checked: every event
the intake would emit for the message encodes.
"""

from __future__ import annotations

import harness
import seeds

with harness.instrumented():
    import orjson

    from tlsrpt_lmtp.core.events import invalid_event, report_events
    from tlsrpt_lmtp.core.mime import extract

LIMIT = 256 * 1024


def check(data: bytes) -> None:
    extracted = extract(data, limit=LIMIT)
    meta = extracted.meta
    events = [invalid_event(e, meta, archive_id="0" * 64, source="fuzz") for e in extracted.errors]
    for report in extracted.reports:
        events += report_events(report, meta, archive_id="0" * 64, source="fuzz", duplicate=False)
    for event in events:
        orjson.dumps(event.to_dict()).decode("utf-8")  # the JSON object the sinks write


if __name__ == "__main__":
    harness.main("mime", check, (), seeds.mails)
