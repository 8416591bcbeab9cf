"""One measurement, in a process of its own: ingest .eml files with one implementation.

    python -m bench.worker --impl {ours,parse,parsedmarc,floor} [--data-dir DIR] FILE...

Prints one JSON object: files, seconds (the ingest loop only, after imports and setup),
outcome counts, the first non-"ok" outcome's detail, and the process's peak RSS (VmHWM,
read last, so it covers interpreter start, imports, setup, the loop and close).

Only the standard library is imported at module level: ``parsedmarc`` runs in the peer venv,
``ours`` in the project venv.
"""

from __future__ import annotations

import argparse
import email
import gzip
import importlib
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

OK = "ok"
Ingest = Callable[[bytes], str]


def _floor() -> tuple[Ingest, Callable[[], None]]:
    """The floor: stdlib email + gzip + json.loads, nothing else."""

    def ingest(raw: bytes) -> str:
        msg = email.message_from_bytes(raw)
        for part in msg.walk():
            if part.get_content_type() == "application/tlsrpt+gzip":
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                report = json.loads(gzip.decompress(payload))
                return OK if "report-id" in report else "no-report-id"
        return "no-report-part"

    return ingest, lambda: None


def _parsedmarc() -> tuple[Ingest, Callable[[], None]]:
    """parsedmarc's entry point for an emailed report (SMTP TLS included), DNS off."""
    parsedmarc: Any = importlib.import_module("parsedmarc")

    def ingest(raw: bytes) -> str:
        try:
            parsed = parsedmarc.parse_report_email(raw, offline=True)
        except parsedmarc.ParserError as exc:
            return f"refused: {type(exc).__name__}: {str(exc)[:240]}"
        return OK if parsed["report_type"] == "smtp_tls" else f"type {parsed['report_type']}"

    return ingest, lambda: None


def _ours(data_dir: Path) -> tuple[Ingest, Callable[[], None]]:
    """This project's pipeline: archive (fsync), extract, decompress, parse, dedup, emit."""
    from tlsrpt_lmtp.ingest.pipeline import IngestResult, Pipeline

    pipeline = Pipeline.open(data_dir=data_dir, emit=lambda event: None)

    def outcome(result: IngestResult) -> str:
        if not result.reports:
            return f"refused: {(result.errors or ('no report found',))[0][:240]}"
        if result.errors:
            return f"partial: {result.errors[0][:240]}"
        if result.duplicates:
            return f"duplicate: {result.duplicates} of {result.reports}"
        return OK

    def ingest(raw: bytes) -> str:
        return outcome(pipeline.ingest(raw, source="bench"))

    return ingest, pipeline.close


def _parse() -> tuple[Ingest, Callable[[], None]]:
    """This project's parsing alone (MIME, decompress, parse, normalise): parsedmarc's work."""
    from tlsrpt_lmtp.core.mime import extract

    def ingest(raw: bytes) -> str:
        result = extract(raw)
        if not result.reports:
            return f"refused: {(result.errors or ('no report found',))[0][:240]}"
        return f"partial: {result.errors[0][:240]}" if result.errors else OK

    return ingest, lambda: None


def _vmhwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def measure(impl: str, files: list[Path], data_dir: Path | None) -> dict[str, Any]:
    if impl == "ours":
        if data_dir is None:
            raise SystemExit("--data-dir is required for --impl ours")
        ingest, close = _ours(data_dir)
    else:
        ingest, close = {"floor": _floor, "parsedmarc": _parsedmarc, "parse": _parse}[impl]()
    outcomes: Counter[str] = Counter()
    problem = ""
    started = time.perf_counter()
    for path in files:
        try:
            outcome = ingest(path.read_bytes())
        except Exception as exc:  # a crash is an outcome too; the table shows it
            outcome = f"exception: {type(exc).__name__}: {str(exc)[:240]}"
        outcomes[OK if outcome == OK else outcome.split(":")[0]] += 1
        problem = problem or ("" if outcome == OK else outcome)
    close()
    seconds = time.perf_counter() - started
    return {
        "impl": impl,
        "files": len(files),
        "seconds": seconds,
        "outcomes": dict(outcomes),
        "problem": problem,
        "vmhwm_kib": _vmhwm_kib(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one benchmark measurement")
    parser.add_argument("--impl", choices=("ours", "parse", "parsedmarc", "floor"), required=True)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.impl, args.files, args.data_dir)))


if __name__ == "__main__":
    main()
