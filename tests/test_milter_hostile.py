"""Issue 8 through the real milter (pymilter on libmilter, its own process): every hostile
mail gets a verdict that is not a temporary failure, and an honest report after it still
becomes events. The large hostile mails go through serve in test_ingest_isolation.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("Milter", reason="pymilter not installed (pip install '.[milter]')")
pytest.importorskip("miltertest", reason="miltertest not installed")

from tests.support.dkim import report_mail
from tests.support.hostile import (
    big_int_count,
    float_count,
    many_encoded_words,
    overflow_by_sum,
    string_count,
    surrogate_in_json,
    surrogate_subject,
)
from tests.support.milter import Milters

TEMPFAIL = "t"  # SMFIR_TEMPFAIL


@pytest.fixture(scope="module")
def milters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Milters]:
    registry = Milters(tmp_path_factory.mktemp("hostile-milters"))
    yield registry
    assert all(rc == 0 for rc in registry.stop_all())


def test_no_hostile_mail_is_tempfailed_and_honest_reports_go_on(milters: Milters) -> None:
    milter = milters.get("tap")
    hostile = [
        surrogate_subject(),
        surrogate_in_json(),
        big_int_count(),
        float_count(),
        string_count(),
        overflow_by_sum(),
        many_encoded_words(2_000),
    ]
    for i, raw in enumerate(hostile):
        replies = milter.send(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        assert replies[-1][0] != TEMPFAIL, (i, replies)
        honest = milter.send(report_mail(report_id=f"honest-{i}"))
        assert honest[-1][0] != TEMPFAIL, honest
        assert [e["report_id"] for e in milter.events("tlsrpt.report")].count(f"honest-{i}") == 1
    with sqlite3.connect(Path(milter.data_dir) / "tlsrpt.sqlite3") as db:
        rows = db.execute("SELECT status, reason FROM messages").fetchall()
    assert len(rows) == 2 * len(hostile)
    assert all(status == "report" or (status == "invalid" and reason) for status, reason in rows)
