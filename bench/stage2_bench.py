"""Stage 2 under hostile mail (issue 8): peak RSS on the worst batch, events per hostile mail.

    .venv/bin/python -m bench.stage2_bench [--before DIR] [--time-cap SECONDS]

Each measurement has a fresh data dir and two processes: one builds the mails and archives
them (stage 1), then a fresh one runs stage 2 as the server's stage 2 does (claim a batch of
pending messages, process it, until none is left). Peak RSS is that process's own VmHWM.
``--before DIR`` runs phase 2 with another checkout of the project (e.g. made with
``git worktree add /tmp/before <commit>``) for a side-by-side
column; that code takes its batches with ``archive.pending(256)`` as its stage 2 did.
The events go to the real json sink (a file in the data dir, whose size is the event bytes),
so the CPU column counts rendering them too, as ``serve``'s stage 2 pays it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WORST_BATCH = "worst batch: 13 x 30 MB string + every hostile mail"


def _peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def fill(case: str, data: Path) -> None:
    """Phase 1 (its own process): build the mails and archive them."""
    from tests.support.hostile import HOSTILE, giant_string
    from tlsrpt_lmtp.ingest.pipeline import Pipeline

    if case == WORST_BATCH:
        mails = [giant_string(rid=f"giant-{i}") for i in range(13)]
        mails += [build() for build in HOSTILE.values()]
    else:
        mails = [HOSTILE[case]()]
    pipeline = Pipeline.open(data, lambda _: None)
    pipeline.archive_many([(raw, "bench") for raw in mails])
    pipeline.close()


def stage2(data: Path) -> None:
    """Phase 2 (a fresh process): stage 2 over what phase 1 archived."""
    # Asked by name, not by try/except ImportError: with the project installed editable, a
    # module missing from an older checkout is found in the installed tree instead.
    if importlib.util.find_spec("tlsrpt_lmtp.pipeline") is None:
        from tlsrpt_lmtp.ingest.pipeline import Pipeline
        from tlsrpt_lmtp.output.sinks import open_emitter
    else:  # a --before checkout from before the layout of issue 10 (5838b53 and older)
        from tlsrpt_lmtp.pipeline import Pipeline  # type: ignore[import-not-found,no-redef]
        from tlsrpt_lmtp.sinks import open_emitter  # type: ignore[import-not-found,no-redef]

    per_message: Counter[str] = Counter()
    log = data / "events.jsonl"
    emitter = open_emitter("json", str(log))  # the real sink: rendering is stage 2's cost too

    def emit(event: Any) -> None:
        # a typed event (core/eventbase.py), or the dict of a --before checkout's code
        ref = getattr(event, "report", None)
        per_message[str(ref.archive_id if ref else event.get("archive_id"))] += 1
        emitter(event)

    pipeline = Pipeline.open(data, emit)
    start, cpu = time.monotonic(), time.process_time()
    error = ""
    try:
        archive = getattr(pipeline, "archive", None)  # before the store interface
        if archive is None or hasattr(archive, "claim"):
            pipeline.process_pending()
        else:  # the code before issue 8: its stage 2 loop
            while batch := archive.pending(256):
                pipeline.process_many(batch)
    except Exception as exc:  # the "before" code may crash: that is a result too
        error = repr(exc)[:80]
    emitter.close()
    store = getattr(pipeline, "db", None) or pipeline.store  # .db before the store interface
    statuses = Counter(r["status"] for r in store.query("SELECT status FROM messages"))
    print(
        json.dumps(
            {
                "peak_kib": _peak_kib(),
                "seconds": time.monotonic() - start,
                "cpu": time.process_time() - cpu,
                "max_events": max(per_message.values(), default=0),
                "event_bytes": log.stat().st_size if log.exists() else 0,
                "statuses": dict(statuses),
                "error": error,
            }
        )
    )


def run(code: Path, case: str, cap: float) -> dict[str, object]:
    """Phase 1 with this checkout's code, phase 2 with ``code``'s (the worker file is ours)."""
    with tempfile.TemporaryDirectory() as data:
        subprocess.run(
            [sys.executable, __file__, "--fill", case, "--data", data],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=True,
            timeout=cap,
        )
        env = {**os.environ, "PYTHONPATH": str(code)}
        argv = [sys.executable, __file__, "--stage2", "--data", data]
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=cap)
        except subprocess.TimeoutExpired:
            return {"error": f"> {cap:g} s (killed)"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-80:]}"}
    result: dict[str, object] = json.loads(lines[-1])
    return result


def cell(r: dict[str, object]) -> str:
    if "peak_kib" not in r:
        return str(r.get("error"))
    peak = int(r["peak_kib"]) / 1024  # type: ignore[call-overload]
    text = (
        f"{peak:,.0f} MiB, {float(r['cpu']):.1f} s CPU, "  # type: ignore[arg-type]
        f"{r['max_events']:,} ev ({int(r['event_bytes']) / 1e6:,.1f} MB), "  # type: ignore[call-overload]
        f"{r['statuses']}"
    )
    return text + (f" CRASH {r['error']}" if r.get("error") else "")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fill")
    p.add_argument("--stage2", action="store_true")
    p.add_argument("--data", type=Path)
    p.add_argument("--before", type=Path, help="another checkout to compare with")
    p.add_argument("--time-cap", type=float, default=120.0)
    args = p.parse_args()
    if args.fill:
        fill(args.fill, args.data)
        return
    if args.stage2:
        stage2(args.data)  # with the tlsrpt_lmtp of PYTHONPATH: ours or --before's
        return
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.support.hostile import HOSTILE

    cases = [*HOSTILE, WORST_BATCH]
    print(
        "| hostile input | ours: peak RSS, CPU, max events per mail (bytes), statuses"
        + (" | before" if args.before else "")
        + " |"
    )
    print("|---|---|" + ("---|" if args.before else ""))
    for case in cases:
        ours = cell(run(REPO, case, args.time_cap))
        row = f"| {case} | {ours} |"
        if args.before:
            row += f" {cell(run(args.before, case, args.time_cap))} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
