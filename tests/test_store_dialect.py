"""The SQL fragments per backend and the placeholder translation (pure; no server)."""

from __future__ import annotations

import sqlite3

import pytest

from tlsrpt_lmtp.store.dialect import SQLITE, clamp, positive, pyformat


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT ? , ?", "SELECT %s , %s"),
        ("WHERE a = :a AND b = :b_2", "WHERE a = %(a)s AND b = %(b_2)s"),
        ("SELECT '?:x', \"a?b\"", "SELECT '?:x', \"a?b\""),  # quoted: untouched
        ("SELECT x::int, '5%'", "SELECT x::int, '5%%'"),  # casts kept, % doubled
        ("SELECT 1 -- it's ?\nFROM t WHERE a = ?", "SELECT 1 -- it's ?\nFROM t WHERE a = %s"),
        ("SELECT ':'", "SELECT ':'"),
    ],
)
def test_placeholders_become_psycopg_ones(sql: str, expected: str) -> None:
    assert pyformat(sql) == expected


@pytest.mark.parametrize("value", [None, -5, 0, 7, 10**12, 10**12 + 1, 2**63 - 1])
def test_the_portable_clamp_agrees_with_sqlites(value: int | None) -> None:
    db = sqlite3.connect(":memory:")
    portable = db.execute(f"SELECT {clamp('?', 10**12)}", (value,) * 3).fetchone()[0]
    native = db.execute(f"SELECT {SQLITE.clamp('?', 10**12)}", (value,)).fetchone()[0]
    assert portable == native == min(max(value or 0, 0), 10**12)


@pytest.mark.parametrize(("a", "b"), [(3, 5), (5, 3), (4, 4)])
def test_positive_agrees_with_sqlites(a: int, b: int) -> None:
    db = sqlite3.connect(":memory:")
    portable = db.execute(f"SELECT {positive('? - ?')}", (a, b, a, b)).fetchone()[0]
    native = db.execute(f"SELECT {SQLITE.positive('? - ?')}", (a, b)).fetchone()[0]
    assert portable == native == max(a - b, 0)


def test_days_before_on_sqlite() -> None:
    db = sqlite3.connect(":memory:")
    sql = f"SELECT {SQLITE.days_before(':day', 'n')}"
    assert db.execute(sql, {"day": "2026-03-01", "n": 14}).fetchone()[0] == "2026-02-15"
