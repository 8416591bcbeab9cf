"""Run a module under cProfile with CPU time (not wall time) as its clock.

    python -m bench.cpuprofile OUT.prof MODULE [ARGS...]

On a shared machine wall-clock profiles charge whatever ran while this process waited to
its socket calls; process time does not. The stats are written when the module returns
(SIGTERM ends `tlsrpt_lmtp policy serve` normally).
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, module, *rest = sys.argv[1:]
    sys.argv = [module, *rest]
    profile = cProfile.Profile(time.process_time)
    try:
        profile.runcall(runpy.run_module, module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
