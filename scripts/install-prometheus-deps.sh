#!/usr/bin/env bash
# Install what the metrics tests need: Debian's `prometheus` server (it ships `promtool`).
#
# tests/test_metrics_prometheus.py starts a private Prometheus on a loopback port with its own
# config and storage in a temp directory, scraping the daemons' --metrics-listen endpoints;
# tests/test_metrics_contrib.py runs `promtool check rules` on contrib/prometheus/*.yml.
# No system Prometheus is started (a temporary policy-rc.d denies it during the install, and
# on a machine with systemd the service is disabled afterwards). The tests skip themselves,
# saying why, when the binaries are missing.
#
# Python packages (pip, not apt): prometheus_client (runtime) and jsonschema (test extra).
#
# Idempotent and quick when everything is in place. Not root: prints what it would do, exits 0.
set -euo pipefail

APT_PACKAGES=(prometheus)

log() { printf 'install-prometheus-deps: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "not running as root: nothing installed. As root this script would:"
    log "  apt-get update && apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}"
    log "the real-Prometheus and promtool tests will be skipped."
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not found (not Debian?): install ${APT_PACKAGES[*]} yourself; skipping."
    exit 0
fi

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
    log "already installed: ${APT_PACKAGES[*]}"
else
    export DEBIAN_FRONTEND=noninteractive
    APT_OPTS=(-o DPkg::Lock::Timeout=600 -q)
    log "apt-get update"
    apt-get "${APT_OPTS[@]}" update >/dev/null
    # No maintainer script may start a daemon: keep the machine's policy-rc.d if it has one,
    # otherwise put a temporary one in place.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    log "apt-get install ${missing[*]}"
    rc=0
    apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    if [ "$created_policy" -eq 1 ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [ "$rc" -ne 0 ]; then
        log "apt-get install failed (exit $rc)"
        exit "$rc"
    fi
    # The tests run their own instance; the packaged service must not scrape or listen.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
        log "disabled the system prometheus service (the tests run their own instance)"
    fi
fi

for tool in prometheus promtool; do
    if ! "$tool" --version >/dev/null 2>&1; then
        log "$tool is installed but does not run: $("$tool" --version 2>&1 | head -n 1)"
        exit 1
    fi
done
log "ok: $(prometheus --version 2>&1 | head -n 1)"
