"""Hostile report mails, and the peak memory and time of extracting each one (not a test).

``hostile_messages()`` builds every input an attacker or a broken sender can send at the
sans-I/O core (``tlsrpt_lmtp.core.mime.extract``): text that cannot be encoded, counts that do not
fit, amplification by failure details, decompression at the cap, deep nesting, huge strings,
many attachments, many gzip members, many RFC 2047 encoded-words, and one valid small report
to compare with. The stage 2 benchmark reuses these generators.

``python -m bench.hostile`` extracts each one in a fresh subprocess and prints its peak RSS
(VmHWM from /proc/self/status, so the child's own high-water mark), the growth over the
child's RSS before extracting, the wall time, and what came out (reports, failure details,
errors, warnings). ``--only NAME`` runs some of them.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

CRLF = b"\r\n"
MiB = 1024 * 1024


def _cap() -> int:
    from tlsrpt_lmtp.core.decompress import DEFAULT_LIMIT

    return DEFAULT_LIMIT


def report_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "organization-name": "Hostile Sender",
        "date-range": {
            "start-datetime": "2026-01-01T00:00:00Z",
            "end-datetime": "2026-01-01T23:59:59Z",
        },
        "contact-info": "tlsrpt@hostile.example",
        "report-id": "hostile-1",
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.example.com"],
                    "policy-domain": "example.com",
                    "mx-host": ["mx.example.com"],
                },
                "summary": {
                    "total-successful-session-count": 10,
                    "total-failure-session-count": 0,
                },
            }
        ],
    }
    doc.update(over)
    return doc


def gzip_bytes(data: bytes | Iterator[bytes], level: int = 9) -> bytes:
    z = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunks = [data] if isinstance(data, bytes) else data
    out = [z.compress(c) for c in chunks]
    out.append(z.flush())
    return b"".join(out)


def mail(
    attachments: list[bytes],
    *,
    subject: str = "Report Domain: example.com",
    content_type: str = "application/tlsrpt+gzip",
    filename: str = "hostile.example!example.com!1767225600!1767311999.json.gz",
) -> bytes:
    """An RFC 8460 §5.3 message around already-encoded attachment bytes."""
    boundary = b"=_hostile_boundary"
    head = [
        b"From: tlsrpt@hostile.example",
        b"To: tlsrpt@example.com",
        b"Subject: " + subject.encode("ascii"),
        b"Message-ID: <hostile@hostile.example>",
        b"TLS-Report-Domain: example.com",
        b"TLS-Report-Submitter: hostile.example",
        b"MIME-Version: 1.0",
        b'Content-Type: multipart/report; boundary="' + boundary + b'"; report-type="tlsrpt"',
        b"",
        b"--" + boundary,
        b"Content-Type: text/plain",
        b"",
        b"A report.",
    ]
    for data in attachments:
        encoded = base64.encodebytes(data).replace(b"\n", CRLF)
        head += [
            b"--" + boundary,
            b"Content-Type: " + content_type.encode(),
            b"Content-Transfer-Encoding: base64",
            b'Content-Disposition: attachment; filename="' + filename.encode() + b'"',
            b"",
            encoded,
        ]
    head.append(b"--" + boundary + b"--")
    return CRLF.join(head) + CRLF


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _with_counts(success: Any, failure: Any = 0, policies: int = 1) -> bytes:
    doc = report_doc()
    pol = doc["policies"][0]
    pol["summary"] = {
        "total-successful-session-count": success,
        "total-failure-session-count": failure,
    }
    doc["policies"] = [pol] * policies
    return _json(doc)


def _details_stream(
    n: int, *, distinct: bool, fill_to: int | None = None, compact: bool = False
) -> Iterator[bytes]:
    """Report JSON with ``n`` failure details (or as many as fit ``fill_to`` bytes)."""
    doc = report_doc()
    pol = doc["policies"][0]
    pol["summary"]["total-failure-session-count"] = n
    pol["failure-details"] = ["@@DETAILS@@"]
    before, after = _json(doc).split(b'"@@DETAILS@@"')
    yield before
    size = len(before) + len(after)
    same = (
        b'{"failed-session-count":1}'
        if compact
        else b'{"result-type":"certificate-expired","failed-session-count":1}'
    )
    block: list[bytes] = []
    i = 0
    while True:
        if fill_to is None and i >= n:
            break
        if distinct:
            item = (
                b'{"result-type":"validation-failure","sending-mta-ip":"10.%d.%d.%d",'
                b'"receiving-mx-hostname":"mx%d.example.com","failed-session-count":1}'
                % ((i >> 16) & 255, (i >> 8) & 255, i & 255, i % 7)
            )
        else:
            item = same
        if fill_to is not None and size + len(item) + 1 > fill_to:
            break
        block.append(item if i == 0 else b"," + item)
        size += len(item) + 1
        i += 1
        if len(block) >= 4096:
            yield b"".join(block)
            block = []
    yield b"".join(block)
    yield after


def _gzip_members(body: bytes, per_member: int) -> bytes:
    return b"".join(
        gzip_bytes(body[i : i + per_member], level=1) for i in range(0, len(body), per_member)
    )


def _zip_many_entries(n: int) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("report.json", _json(report_doc()))
        for i in range(n):
            archive.writestr(zipfile.ZipInfo(f"{i:08d}"), b"")
    return buf.getvalue()


def _deep(fill_to: int) -> bytes:
    depth = (fill_to - 200) // 2
    doc = report_doc()
    before, after = _json({**doc, "x": "@@"}).split(b'"@@"')
    return before + b"[" * depth + b"]" * depth + after


def _huge_string(fill_to: int) -> Iterator[bytes]:
    before, after = _json(report_doc(**{"report-id": "@@"})).split(b"@@")
    yield before
    remaining = fill_to - len(before) - len(after) - 16
    chunk = b"A" * MiB
    while remaining > 0:
        yield chunk[: min(remaining, MiB)]
        remaining -= MiB
    yield after


def hostile_messages(only: Iterable[str] | None = None) -> dict[str, bytes]:
    """Name → raw message (all, or those named in ``only``). Deterministic; about 10 MB in
    all; takes a few seconds."""
    cap = _cap()
    small = _json(report_doc())
    gz = gzip_bytes
    messages: dict[str, Callable[[], bytes]] = {
        "valid-small": lambda: mail([gz(small)]),
        "subject-lone-surrogate": lambda: mail([gz(small)], subject="=?utf-7?q?+2AA-?="),
        "json-lone-surrogate": lambda: mail(
            [gz(small.replace(b"Hostile Sender", b"Hostile \\ud800 \\u0000 Sender"))]
        ),
        "count-2^63": lambda: mail([gz(_with_counts(2**63))]),
        "count-1e300": lambda: mail([gz(_with_counts(10, 0).replace(b":10,", b":1e300,", 1))]),
        "count-digit-string": lambda: mail([gz(_with_counts("9" * 40))]),
        "count-negative-bool": lambda: mail([gz(_with_counts(-(2**70), True))]),
        "count-sum-overflow": lambda: mail([gz(_with_counts(2**63 - 1, 2**63 - 1, policies=3))]),
        # 63 MB of JSON: over the 32 MiB cap, so refused; the compact one (27 MB) is read.
        "details-1m-250kb": lambda: mail([gz(_details_stream(1_000_000, distinct=False))]),
        "details-1m-compact": lambda: mail(
            [gz(_details_stream(1_000_000, distinct=False, compact=True))]
        ),
        "details-distinct-at-cap": lambda: mail(
            [gz(_details_stream(0, distinct=True, fill_to=cap))]
        ),
        "gzip-bomb-at-cap": lambda: mail([gz(_details_stream(0, distinct=False, fill_to=cap))]),
        "gzip-bomb-over-cap": lambda: mail(
            [gz(_details_stream(0, distinct=False, fill_to=cap + MiB))]
        ),
        "deep-nesting-at-cap": lambda: mail([gz(_deep(cap))]),
        "huge-string-at-cap": lambda: mail([gz(_huge_string(cap))]),
        "many-attachments-at-cap": lambda: mail(
            [gz(_details_stream(0, distinct=False, fill_to=cap))] * 20
        ),
        "gzip-200k-members": lambda: mail([_gzip_members(_with_counts(5) + b" " * 200_000, 1)]),
        "zip-60k-entries": lambda: mail(
            [_zip_many_entries(60_000)], content_type="application/tlsrpt+zip"
        ),
        "encoded-words-50k": lambda: mail(
            [gz(small)], subject=" ".join(["=?utf-8?q?caf=C3=A9?="] * 50_000)
        ),
    }
    names = list(messages) if only is None else list(only)
    return {name: messages[name]() for name in names}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise LookupError(field)


def _child(path: str) -> None:
    """Extract one message and print one JSON line about it."""
    from tlsrpt_lmtp.core.mime import extract

    raw = Path(path).read_bytes()
    before = _status("VmRSS")
    t0 = time.perf_counter()
    ex = extract(raw)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "peak_mib": _status("VmHWM"),
                "growth_mib": _status("VmHWM") - before,
                "seconds": round(seconds, 2),
                "reports": len(ex.reports),
                "hint_mib": round(ex.size_hint / 2**20, 1),
                "details": sum(len(p.failure_details) for r in ex.reports for p in r.policies),
                "errors": [e[-70:] for e in ex.errors][:2],
                "warnings": sorted({w for r in ex.reports for w in r.warnings} | set(ex.warnings)),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="names of inputs to run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child)
        return
    msgs = hostile_messages(args.only)
    names = list(msgs)
    print(f"{'input':26} {'mail KB':>8} {'peak MiB':>8} {'+MiB':>6} {'s':>6}  outcome")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = Path(tmp) / f"{name}.eml"
            path.write_bytes(msgs[name])
            proc = subprocess.run(
                [sys.executable, "-m", "bench.hostile", "--child", str(path)],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            )
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
                print(f"{name:26} {len(msgs[name]) // 1024:8} CRASHED: {tail[0]}")
                continue
            r = json.loads(proc.stdout)
            outcome = f"reports={r['reports']} details={r['details']} hint={r['hint_mib']}MiB"
            if r["errors"]:
                outcome += f" errors={r['errors']}"
            if r["warnings"]:
                outcome += f" warnings={','.join(r['warnings'])}"
            print(
                f"{name:26} {len(msgs[name]) // 1024:8} {r['peak_mib']:8} "
                f"{r['growth_mib']:6} {r['seconds']:6}  {outcome[:150]}"
            )


if __name__ == "__main__":
    main()
