#!/usr/bin/env bash
# MTA-STS policy daemon benchmark (ours vs postfix-mta-sts-resolver), from the repo root with
# the project venv; needs root (the test internet listens on ports 53 and 443). One table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
    echo "bench: no project venv at .venv; create it first:" >&2
    echo "  python3 -m venv .venv && .venv/bin/pip install -e '.[test]'" >&2
    exit 1
fi
if [[ $EUID -ne 0 ]]; then
    echo "bench: run as root (netsim binds ports 53/443 on 127.0.N.x, unshare needs root)" >&2
    exit 1
fi
for tool in unbound unshare; do
    if ! command -v "$tool" >/dev/null && [[ ! -x /usr/sbin/$tool ]]; then
        echo "bench: $tool is missing: run scripts/install-netsim-deps.sh" >&2
        exit 1
    fi
done
exec .venv/bin/python -m bench.policy_run "$@"
