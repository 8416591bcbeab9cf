"""The index the views need in the store, beside db.py's schema.

Wiring (tlsrpt_lmtp/db.py, Database.__init__, after the schema script)::

    from tlsrpt_lmtp.views.indexes import ensure_indexes
    ensure_indexes(self._db)

With it, a period (``--since 1d``, the digest, the absence findings' 90 days) is found through
the index instead of a scan of every report, so the cost of a view follows the rows its period
selects. The views open the store read-only and work without it (slower for short periods).
Creating it on an existing store of a million reports takes a few seconds, once.
"""

from __future__ import annotations

import sqlite3

INDEXES = ("CREATE INDEX IF NOT EXISTS reports_start ON reports(date_range_start)",)


def ensure_indexes(db: sqlite3.Connection) -> None:
    for sql in INDEXES:
        db.execute(sql)
