#!/usr/bin/env bash
# Install what the metrics tests need: Debian's `prometheus` server (it ships `promtool`).
#
# tests/test_metrics_prometheus.py starts a private Prometheus on a loopback port with its own
# config and storage in a temp directory, scraping the daemons' --metrics-listen endpoints;
# tests/test_metrics_contrib.py runs `promtool check rules` on contrib/prometheus/*.yml. No
# system Prometheus is started (scripts/apt-lib.sh). The tests skip themselves, saying why,
# when the binaries are missing. Python packages (prometheus_client, jsonschema) come from pip.
# Idempotent; not root: prints what it would do and exits 0.
set -euo pipefail
APT_TAG=install-prometheus-deps
# shellcheck source=scripts/apt-lib.sh
. "$(dirname "$0")/apt-lib.sh"

rc=0
apt_install prometheus prometheus || rc=$?
if [ "$rc" -eq 10 ]; then
    apt_log "the real-Prometheus and promtool tests will be skipped."
    exit 0
fi
[ "$rc" -eq 0 ] || exit "$rc"
for tool in prometheus promtool; do
    if ! "$tool" --version >/dev/null 2>&1; then
        apt_log "$tool is installed but does not run: $("$tool" --version 2>&1 | head -n 1)"
        exit 1
    fi
done
apt_log "ok: $(prometheus --version 2>&1 | head -n 1)"
