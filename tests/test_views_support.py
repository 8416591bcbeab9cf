"""Builders shared by the views and alerts tests (this module holds no test).

``report``/``sts``/``detail`` make RFC 8460 report JSON; ``read_sample_reports`` reads the
real samples *independently* of the project's parser (stdlib email, gzip, json), so totals
computed from them check the store and the views from outside.
"""

from __future__ import annotations

import email
import gzip
import json
import zipfile
from collections.abc import Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from tests.conftest import shared_dir
from tests.event_factories import plain
from tlsrpt_lmtp.core.events import Event

Doc = dict[str, Any]


def samples_dir() -> Path:
    return shared_dir() / "samples" / "real"


def sample_files() -> list[Path]:
    folder = samples_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".json", ".eml"))


def detail(
    result_type: str = "certificate-expired",
    count: int = 1,
    *,
    ip: str | None = "192.0.2.10",
    mx: str | None = "mx1.example.com",
    reason: str | None = None,
) -> Doc:
    d: Doc = {"result-type": result_type, "failed-session-count": count}
    if ip is not None:
        d["sending-mta-ip"] = ip
    if mx is not None:
        d["receiving-mx-hostname"] = mx
    if reason is not None:
        d["failure-reason-code"] = reason
    return d


def sts(
    domain: str = "example.com",
    *,
    mode: str = "enforce",
    ok: int = 100,
    failed: int = 0,
    details: Sequence[Doc] = (),
    mx: Sequence[str] = ("mx1.example.com",),
) -> Doc:
    return {
        "policy": {
            "policy-type": "sts",
            "policy-string": ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx)],
            "policy-domain": domain,
            "mx-host": list(mx),
        },
        "summary": {"total-successful-session-count": ok, "total-failure-session-count": failed},
        "failure-details": list(details),
    }


def other(
    domain: str, policy_type: str = "no-policy-found", *, ok: int = 10, failed: int = 0
) -> Doc:
    return {
        "policy": {"policy-type": policy_type, "policy-domain": domain},
        "summary": {"total-successful-session-count": ok, "total-failure-session-count": failed},
    }


def report(
    *policies: Doc,
    org: str = "Example Reporter",
    rid: str | None = None,
    day: str = "2026-05-10",
    end: str | None = None,
) -> Doc:
    return {
        "organization-name": org,
        "date-range": {
            "start-datetime": f"{day}T00:00:00Z",
            "end-datetime": end or f"{day}T23:59:59Z",
        },
        "contact-info": "tlsrpt@reporter.example",
        "report-id": rid or f"{org}-{day}",
        "policies": list(policies) or [sts()],
    }


def raw(doc: Doc) -> bytes:
    return json.dumps(doc).encode()


class Recorder:
    """An ``emit`` that keeps the events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []  # as the event log has them

    def __call__(self, event: Event) -> None:
        self.events.append(plain(event))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]


# ---------------------------------------------------------------------------------------------
# the real samples, read without the project's parser
# ---------------------------------------------------------------------------------------------


def _json_docs(data: bytes) -> Iterator[Doc]:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    elif data[:2] == b"PK":
        with zipfile.ZipFile(BytesIO(data)) as z:
            data = z.read(z.namelist()[0])
    text = data.decode("utf-8-sig").strip()
    if text.startswith("{"):
        yield json.loads(text)


def read_sample_reports(path: Path) -> list[tuple[Doc, str | None]]:
    """The report JSON documents in one sample file, with the TLS-Report-Domain header."""
    data = path.read_bytes()
    if path.suffix == ".json":
        return [(doc, None) for doc in _json_docs(data)]
    msg = email.message_from_bytes(data)
    header = msg.get("TLS-Report-Domain")
    docs = []
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() == "text":
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            docs += [(doc, header) for doc in _json_docs(payload)]
    return docs
