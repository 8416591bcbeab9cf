"""Fuzz target: attachment bytes -> decode_payload.

Documented: PayloadError. Checked: the output never exceeds the cap and is JSON-looking.
"""

from __future__ import annotations

import harness
import seeds

with harness.instrumented():
    from tlsrpt_lmtp.core.decompress import PayloadError, decode_payload, sniff

LIMIT = 256 * 1024


def check(data: bytes) -> None:
    sniff(data)
    payload = decode_payload(data, limit=LIMIT)
    assert len(payload.json_bytes) <= LIMIT
    assert sniff(payload.json_bytes) == "json"
    assert all(isinstance(w, str) for w in payload.warnings)


if __name__ == "__main__":
    harness.main("decompress", check, (PayloadError,), seeds.payloads)
