#!/usr/bin/env bash
# Run the benchmark from the repo root with the project venv; prints one table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
    echo "bench: no project venv at .venv; create it first:" >&2
    echo "  python3 -m venv .venv && .venv/bin/pip install -e '.[test]'" >&2
    exit 1
fi
exec .venv/bin/python -m bench.run "$@"
