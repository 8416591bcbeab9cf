"""Label values, bounded: the values a label may take when they come from outside."""

from __future__ import annotations

import threading

from tlsrpt_lmtp.core.model import KNOWN_POLICY_TYPES, KNOWN_RESULT_TYPES

OTHER = "other"
MAX_LABEL_LENGTH = 128
# RFC 8460's registries; anything else is counted as "other".
RESULT_TYPES = KNOWN_RESULT_TYPES
POLICY_TYPES = KNOWN_POLICY_TYPES


class Capped:
    """A label's values: the first ``limit`` distinct ones as they are, then ``other``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        text = str(value)[:MAX_LABEL_LENGTH] if value is not None else ""
        if text in self._seen:
            return text
        with self._lock:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(text)
        return text


def quarantine_class(reason: str) -> str:
    """A ``tlsrpt.invalid`` reason → a small fixed set of classes (docs/metrics.md)."""
    low = reason.lower()
    for needle, cls in (
        ("[dkim policy enforce]", "dkim"),
        ("poison:", "poison"),
        ("internal error", "internal"),
        ("limit", "size"),
        ("no report attachment", "no_report"),
        ("not json", "not_json"),
        ("zip", "compression"),
        ("neither gzip", "compression"),
    ):
        if needle in low:
            return cls
    return "invalid_report"
