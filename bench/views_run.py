"""Run ``tlsrpt-lmtp ARGS`` in this process, then write its peak RSS (VmHWM, KiB) to REPORT.

Usage: python bench/views_run.py REPORT ARGS...  (tlsrpt_lmtp is imported from PYTHONPATH,
so the same runner measures this checkout and /work/main). VmHWM is read from /proc at the
end, not from wait4(): Linux carries the parent's high-water mark into a forked child.
"""

import sys
from pathlib import Path

from tlsrpt_lmtp.cli import main

if __name__ == "__main__":
    report = Path(sys.argv[1])
    status = main(sys.argv[2:])
    hwm = next(
        line.split()[1]
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    report.write_text(f"{status} {hwm}\n")
    sys.exit(status)
