"""Run every fuzz target for a share of a total time budget and print what each did.

Usage: scripts/fuzz SECONDS [TARGET ...]   (targets: report mime decompress sts milter names dkim)

Exit status 1 if any target crashed (its input is saved under fuzz/crashes/, its log under
fuzz/logs/). Targets run one after another, one process at a time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("report", "mime", "decompress", "sts", "milter", "names", "dkim")
_STAT = re.compile(r"stat::(\w+):\s*(\d+)")
_COV = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)")
_ARTIFACT = re.compile(r"(?:Test unit written to|input written to) (\S+)")


def run(name: str, seconds: int) -> dict[str, str]:
    logs = ROOT / "fuzz" / "logs"
    crashes = ROOT / "fuzz" / "crashes"
    logs.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(ROOT / "fuzz" / f"fuzz_{name}.py"),
        f"-max_total_time={seconds}",
        "-print_final_stats=1",
        f"-artifact_prefix={crashes}/{name}-",
        "-timeout=30",  # one input taking longer is reported as a crash (a hang)
        "-rss_limit_mb=1536",
    ]
    if os.environ.get("FUZZ_SEED", "").isdigit():  # the same inputs run after run (CI)
        command.append(f"-seed={os.environ['FUZZ_SEED']}")
    dictionary = ROOT / "fuzz" / "dicts" / f"{name}.dict"
    if dictionary.is_file():
        command.append(f"-dict={dictionary}")
    log = logs / f"{name}.log"
    start = time.monotonic()
    with log.open("wb") as out:
        # twice the budget plus start-up: a stuck run is killed, not waited for
        try:
            code = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, timeout=2 * seconds + 60, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            code = -9
    elapsed = time.monotonic() - start
    text = log.read_text("utf-8", "replace")
    stats = dict(_STAT.findall(text))
    cov = _COV.findall(text)
    artifacts = _ARTIFACT.findall(text)
    known = sorted(
        {line.split(":")[0][6:] for line in text.splitlines() if line.startswith("KNOWN ")}
    )
    return {
        "target": name,
        "executions": stats.get("number_of_executed_units", "?"),
        "seconds": f"{elapsed:.1f}",
        "exec/s": stats.get("average_exec_per_sec", "?"),
        "coverage": cov[-1][0] if cov else "-",
        "corpus": cov[-1][2] if cov else "-",
        "known bugs hit": str(len(known)),
        "crashes": str(len(artifacts) or (1 if code else 0)),
        "_artifacts": " ".join(artifacts),
        "_known": "; ".join(known),
        "_log": str(log),
    }


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    total = int(argv[0])
    names = argv[1:] or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"unknown target(s): {' '.join(unknown)}", file=sys.stderr)
        return 2
    share = max(1, total // len(names))
    rows = []
    for name in names:
        row = run(name, share)
        rows.append(row)
        print(
            f"fuzz {name}: {row['executions']} executions in {row['seconds']} s, "
            f"{row['crashes']} crash(es)",
            file=sys.stderr,
            flush=True,
        )
    columns = [c for c in rows[0] if not c.startswith("_")]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in columns))
    for r in rows:
        if r["_known"]:
            print(f"{r['target']}: known bugs hit (fuzz/known.py): {r['_known']}")
    crashed = [r for r in rows if r["crashes"] != "0"]
    for r in crashed:
        print(f"CRASH in {r['target']}: input {r['_artifacts'] or '?'}, log {r['_log']}")
        print(f"  reproduce: python fuzz/fuzz_{r['target']}.py {r['_artifacts']}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
