"""The few SQL fragments that differ between the backends; every query is written once.

The views, findings and alerts write portable SQL (CASE instead of SQLite's two-argument
MIN/MAX, no aliases in HAVING, every grouped column listed, subqueries named, ``CAST(:x AS
TEXT) IS NULL`` for an optional parameter) and take the rest from here: string search,
distinct concatenation, a JSON list parameter, day arithmetic, temporary objects. Parameters
are written ``?`` or ``:name``; ``pyformat`` turns them into psycopg's for PostgreSQL.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str

    @property
    def sqlite(self) -> bool:
        return self.name == "sqlite"

    def instr(self, haystack: str, needle: str) -> str:
        """> 0 when ``needle`` occurs in ``haystack`` (case-sensitive)."""
        return f"instr({haystack}, {needle})" if self.sqlite else f"strpos({haystack}, {needle})"

    def concat_distinct(self, expr: str) -> str:
        """The distinct values joined by commas (in no particular order)."""
        if self.sqlite:
            return f"group_concat(DISTINCT {expr})"
        return f"string_agg(DISTINCT {expr}, ',')"

    def json_values(self, param: str) -> str:
        """A subquery of the strings of the JSON list bound to ``:param``."""
        if self.sqlite:
            return f"(SELECT value FROM json_each(:{param}))"
        return f"(SELECT jsonb_array_elements_text(CAST(:{param} AS jsonb)))"

    def days_before(self, day: str, param: str) -> str:
        """The ISO date ``:param`` (an integer) days before the ISO date ``day``."""
        if self.sqlite:
            return f"date({day}, '-' || :{param} || ' days')"
        return f"to_char(CAST({day} AS date) - CAST(:{param} AS integer), 'YYYY-MM-DD')"

    def temp(self, table: str) -> str:
        """A temporary table's qualified name (for DROP)."""
        return f"temp.{table}" if self.sqlite else f"pg_temp.{table}"

    def temp_index(self, name: str, table: str, columns: str) -> str:
        if self.sqlite:
            return f"CREATE INDEX temp.{name} ON {table}({columns})"
        return f"CREATE INDEX {name} ON {table}({columns})"

    def unique_temp_index(self, name: str, table: str, columns: str) -> str:
        return self.temp_index(name, table, columns).replace("CREATE INDEX", "CREATE UNIQUE INDEX")

    def clamp(self, expr: str, cap: int) -> str:
        """``expr`` (NULL as 0) held within [0, cap]."""
        if self.sqlite:
            return f"MIN(MAX(COALESCE({expr}, 0), 0), {cap})"
        return f"LEAST(GREATEST(COALESCE({expr}, 0), 0), {cap})"

    def positive(self, expr: str) -> str:
        """``expr`` if positive, else 0."""
        return f"MAX({expr}, 0)" if self.sqlite else f"GREATEST({expr}, 0)"

    @property
    def no_limit(self) -> int | None:
        """The LIMIT parameter meaning "no limit"."""
        return -1 if self.sqlite else None


SQLITE = Dialect("sqlite")
POSTGRESQL = Dialect("postgresql")


def of(name: str) -> Dialect:
    return SQLITE if name == "sqlite" else POSTGRESQL


def clamp(expr: str, cap: int) -> str:
    """``expr`` (NULL as 0) held within [0, cap], in SQL any backend runs."""
    return (
        f"(CASE WHEN COALESCE({expr}, 0) < 0 THEN 0 WHEN {expr} > {cap} THEN {cap}"
        f" ELSE COALESCE({expr}, 0) END)"
    )


def positive(expr: str) -> str:
    """``expr`` if positive, else 0, in SQL any backend runs."""
    return f"(CASE WHEN ({expr}) > 0 THEN ({expr}) ELSE 0 END)"


def sts_mode(d: Dialect, p: str, other: str) -> str:
    """The STS mode of policy row ``p`` from its normalised policy-string lines ("mode:
    enforce"); ``other`` for other policy types."""
    found = [
        f"WHEN {d.instr(p + '.policy_string', repr(chr(34) + 'mode: ' + m + chr(34)))} > 0"
        f" THEN '{m}'"
        for m in ("enforce", "testing", "none")
    ]
    return f"CASE WHEN {p}.policy_type <> 'sts' THEN {other} {' '.join(found)} ELSE 'unknown' END"


@functools.lru_cache(maxsize=512)
def pyformat(sql: str) -> str:
    """``?`` → ``%s`` and ``:name`` → ``%(name)s`` outside quotes; a literal ``%`` doubled."""
    out: list[str] = []
    i, n = 0, len(sql)
    quote = ""
    while i < n:
        ch = sql[i]
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "%":
            out.append("%%")
        elif ch == "?":
            out.append("%s")
        elif ch == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_"):
            if i > 0 and sql[i - 1] == ":":  # a :: cast
                out.append(ch)
            else:
                j = i + 1
                while j < n and (sql[j].isalnum() or sql[j] == "_"):
                    j += 1
                out.append(f"%({sql[i + 1 : j]})s")
                i = j
                continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)
