"""The policy daemon answers even when its event sink fails (syslog down, disk full)."""

from __future__ import annotations

import errno

import pytest

from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.sts.daemon import _never_blocking


def test_a_failing_sink_never_raises_into_a_lookup(capsys: pytest.CaptureFixture[str]) -> None:
    written: list[Event] = []
    down = [True]

    def sink(event: Event) -> None:
        if down[0]:
            raise OSError(errno.ECONNREFUSED, "Connection refused")
        written.append(event)

    safe = _never_blocking(sink)
    for i in range(3):
        safe({"event": "sts.fetch_error", "n": i})
    assert capsys.readouterr().err.count("cannot write policy events: Connection refused") == 1
    down[0] = False
    safe({"event": "sts.policy_fetched"})
    assert [e["event"] for e in written] == ["sts.policy_fetched"]
    down[0] = True
    safe({"event": "sts.fetch_error"})  # failing again after it worked: said again
    assert "Connection refused" in capsys.readouterr().err
