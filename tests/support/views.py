"""Builders shared by the views and alerts tests.

``report``/``sts``/``detail`` make RFC 8460 report JSON; ``generated`` is a small set of such
reports, ``evil_report`` one whose values try to break out of every output format;
``read_sample_reports`` reads the real samples *independently* of the project's parser
(stdlib email, gzip, json), so totals computed from them check the store and the views from
outside. ``summarise`` and ``run`` call the views as of the fixed time ``NOW``.
"""

from __future__ import annotations

import argparse
import email
import gzip
import json
import zipfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

from tests.support.samples import shared_dir
from tlsrpt_lmtp import cliflags
from tlsrpt_lmtp.ingest.pipeline import Pipeline
from tlsrpt_lmtp.views import cli, model, query
from tlsrpt_lmtp.views.period import Period

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


# ---------------------------------------------------------------------------------------------
# generated reports through the pipeline, and the views over them
# ---------------------------------------------------------------------------------------------


NOW = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)


def summarise(
    data_dir: Path, period: Period | None = None, domain: str | None = None, *, top: int = 20
) -> model.Summary:
    db = query.open_readonly(data_dir / "tlsrpt.sqlite3")
    try:
        return cli.summarise(db, period or Period(), domain, now=NOW, top=top)
    finally:
        db.close()


def ingest_all(data_dir: Path, docs: list[bytes]) -> None:
    pipeline = Pipeline.open(data_dir, lambda _: None)
    try:
        for data in docs:
            pipeline.ingest(data, source="test")
    finally:
        pipeline.close()


MX_A, MX_B = "mx1.example.com", "mx2.example.com"


def generated() -> list[Doc]:
    return [
        # Google: example.com enforce, two days; one report with an expired MX certificate
        report(sts(ok=900, failed=0), org="Google Inc.", day="2026-05-10"),
        report(
            sts(
                ok=950,
                failed=50,
                details=[
                    detail("certificate-expired", 30, ip="209.85.1.1", mx=MX_A),
                    detail("certificate-expired", 10, ip="209.85.1.2", mx=MX_A),
                ],
            ),
            org="Google Inc.",
            day="2026-05-11",
        ),
        # Microsoft: sts + tlsa for example.com; starttls failures on MX_B; end at next 00:00
        report(
            sts(
                ok=40,
                failed=10,
                details=[detail("starttls-not-supported", 10, ip="40.1.1.1", mx=MX_B)],
            ),
            other("example.com", "tlsa", ok=20, failed=0),
            org="Microsoft Corporation",
            day="2026-05-11",
            end="2026-05-12T00:00:00Z",
        ),
        # Mail.ru: example.org testing; details add up to more than the summary
        report(
            sts(
                "example.org",
                mode="testing",
                ok=5,
                failed=1,
                details=[detail("sts-policy-fetch-error", 1, ip=None, mx=None)] * 2,
            ),
            org="Mail.ru",
            day="2026-05-12",
        ),
        # an old report, outside the May period
        report(other("example.org", ok=7), org="Google Inc.", day="2026-04-01"),
    ]


EVIL_ORG = "<script>alert(1)</script>|*bold*_x_ [l](http://evil.example/)\x1b[31mRED\nNL"


EVIL_DOMAIN = 'evil.example"><img src=x onerror=alert(2)>'


EVIL_MX = "<b>mx</b>|evil"


EVIL_TYPE = "<i>type</i>"


def evil_report() -> bytes:
    doc = report(
        sts(
            EVIL_DOMAIN,
            ok=1,
            failed=2,
            details=[detail(EVIL_TYPE, 2, ip="192.0.2.66", mx=EVIL_MX)],
        ),
        org=EVIL_ORG,
        day="2026-05-13",
    )
    return raw(doc)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tlsrpt-lmtp")
    sub = p.add_subparsers(dest="command", required=True)
    cli.add_parser(sub, *cliflags.STORE)
    return p


def run(*argv: str) -> int:
    return cli.run(parser().parse_args(["summary", *argv]), now=NOW)


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
