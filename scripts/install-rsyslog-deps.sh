#!/usr/bin/env bash
# Install what the syslog sink's end-to-end tests need: Debian's `rsyslog` (rsyslogd with the
# imtcp, imudp, imuxsock and mmjsonparse modules).
#
# tests/test_syslog_rsyslog.py starts a private rsyslogd on loopback ports and a unix socket in
# a temporary directory (never /dev/log) and checks what it receives; it skips itself, saying
# why, when no rsyslogd binary is found. The system rsyslog service is never started: the
# machine's policy-rc.d is kept, or a temporary one denies it during the install, and on a
# machine run by systemd the service is disabled afterwards.
#
# Idempotent and quick when rsyslog is already there. Not root: prints what it would do and
# exits 0 (the rsyslog tests then skip themselves).
set -euo pipefail

APT_PACKAGES=(rsyslog)

log() { printf 'install-rsyslog-deps: %s\n' "$*" >&2; }

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

if [ "$(id -u)" -ne 0 ]; then
    log "not running as root: nothing installed. As root this script would:"
    log "  apt-get update && apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}"
    log "  (without starting or enabling the system rsyslog service)"
    log "the rsyslog end-to-end tests will be skipped."
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not found (not Debian?): install ${APT_PACKAGES[*]} yourself; skipping."
    exit 0
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
    log "already installed: ${APT_PACKAGES[*]}"
    exit 0
fi

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
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now rsyslog.service >/dev/null 2>&1 || true
fi
log "ok: $(rsyslogd -v 2>/dev/null | head -n 1 || echo 'rsyslog installed')"
