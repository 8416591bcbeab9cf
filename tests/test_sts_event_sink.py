"""The policy daemon answers even when its event sink fails (syslog down, disk full)."""

from __future__ import annotations

import errno

import pytest

from tlsrpt_lmtp.core.events import Event
from tlsrpt_lmtp.sts.daemon import _never_blocking
from tlsrpt_lmtp.sts.events import FetchFailed, PolicyFetched

FETCHED = PolicyFetched(domain="example.org", mode=None, mx=None, policy_id="1")


def fetch_error(reason: str) -> FetchFailed:
    return FetchFailed(
        domain="example.org",
        mode=None,
        mx=None,
        policy_id="1",
        result_type="sts-policy-fetch-error",
        reason=reason,
        cached_policy_applied=False,
    )


def test_a_failing_sink_never_raises_into_a_lookup(capsys: pytest.CaptureFixture[str]) -> None:
    written: list[Event] = []
    down = [True]

    def sink(event: Event) -> None:
        if down[0]:
            raise OSError(errno.ECONNREFUSED, "Connection refused")
        written.append(event)

    safe = _never_blocking(sink)
    for i in range(3):
        safe(fetch_error(f"attempt {i}"))
    assert capsys.readouterr().err.count("cannot write policy events: Connection refused") == 1
    down[0] = False
    safe(FETCHED)
    assert written == [FETCHED]
    down[0] = True
    safe(fetch_error("again"))  # failing again after it worked: said again
    assert "Connection refused" in capsys.readouterr().err
