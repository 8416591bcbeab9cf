"""The index the views need in the store (store/schema.py creates it with the store; this is
for stores filled by other means, as the benchmark's).

With it, a period (``--since 1d``, the digest, the absence findings' 90 days) is found through
the index instead of a scan of every report, so the cost of a view follows the rows its period
selects. The views open the store read-only and work without it (slower for short periods).
Creating it on an existing store of a million reports takes a few seconds, once.
"""

from __future__ import annotations

import sqlite3

from tlsrpt_lmtp.store.schema import REPORTS_START_INDEX

INDEXES = (REPORTS_START_INDEX,)


def ensure_indexes(db: sqlite3.Connection) -> None:
    for sql in INDEXES:
        db.execute(sql)
