"""Bugs already filed, which a fuzz run counts instead of stopping on.

libFuzzer stops at the first crash; a shallow bug that every run hits within seconds would
hide everything behind it. Each entry names the regression test that pins the bug (an
``xfail(strict=True)`` test in tests/). When the fix is merged that test starts passing, its
strict xfail fails the suite, and the mark and the entry here are removed together.
"""

from __future__ import annotations

import traceback
import zlib
from typing import NamedTuple


class Known(NamedTuple):
    name: str
    kind: type[BaseException]
    text: str  # a substring of str(exception)
    test: str  # the regression test that pins it
    where: str = ""  # a substring of the file name of the innermost frame


KNOWN: tuple[Known, ...] = (
    Known(
        "issue-8-item-2 count beyond 64 bits in an event",
        TypeError,
        "Integer exceeds 64-bit range",
        "tests/test_properties_events.py::test_events_encodable_for_any_count",
    ),
    Known(
        "issue-8-item-2 lone surrogate in an event",
        TypeError,
        "surrogates not allowed",
        "tests/test_properties_events.py::test_events_encodable_for_any_text",
    ),
    Known(
        "issue-8-item-2 lone surrogate in an event (utf-8)",
        UnicodeEncodeError,
        "surrogates not allowed",
        "tests/test_properties_events.py::test_events_encodable_for_any_text",
    ),
    Known(
        "count written with non-ASCII digits",
        ValueError,
        "invalid literal for int()",
        "tests/test_fuzz_regressions.py::test_count_with_non_ascii_digits",
    ),
    Known(
        "integer of more than 4300 digits",
        ValueError,
        "Exceeds the limit (4300 digits)",
        "tests/test_fuzz_regressions.py::test_integer_longer_than_python_allows",
    ),
    Known(
        "date-time at the edge of the calendar",
        OverflowError,
        "date value out of range",
        "tests/test_fuzz_regressions.py::test_date_at_the_edge_of_the_calendar",
    ),
    Known(
        "corrupt deflate data in a zip member",
        zlib.error,
        "while decompressing data",
        "tests/test_fuzz_regressions.py::test_zip_member_with_corrupt_deflate_data",
    ),
    Known(
        "zipfile error other than BadZipFile on a damaged archive",
        Exception,
        "",
        "tests/test_fuzz_regressions.py::test_zip_with_bytes_missing",
        where="zipfile",
    ),
    Known(
        "email.header error on an encoded-word with a bad charset",
        Exception,
        "",
        "tests/test_fuzz_regressions.py::test_encoded_word_with_a_non_ascii_charset",
        where="/email/",
    ),
    Known(
        "names.canonical not idempotent on an invalid name",
        AssertionError,
        "canonical not idempotent",
        "tests/test_fuzz_regressions.py::test_canonical_name_is_a_fixed_point",
    ),
    Known(
        "gzip nested deeper than the recursion limit",
        RecursionError,
        "maximum recursion depth",
        "tests/test_fuzz_regressions.py::test_deeply_nested_gzip",
    ),
)


def match(exc: BaseException) -> str | None:
    frames = traceback.extract_tb(exc.__traceback__)
    innermost = frames[-1].filename if frames else ""
    for k in KNOWN:
        if isinstance(exc, k.kind) and k.text in str(exc) and k.where in innermost:
            return k.name
    return None
