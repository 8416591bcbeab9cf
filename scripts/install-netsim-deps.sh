#!/usr/bin/env bash
# Install the Debian packages the loopback "test internet" (tests/netsim) needs, on Debian 12:
#
#   * unbound: the DNSSEC-validating resolver that tests/netsim runs on its own loopback address
#     (127.0.N.54:53) with its own config. Only the binary is used: no system resolver is
#     started (a temporary policy-rc.d denies it during the install, and on a machine with
#     systemd the unbound services are disabled afterwards), and /etc/resolv.conf is untouched.
#
# Python packages (pip, not apt): dnspython, aiosmtpd, pytest and cryptography (the test extra).
#
# Idempotent and quick when everything is in place. Not root: prints what it would do, exits 0
# (the netsim tests then skip themselves; without unbound only the DNSSEC/AD-bit tests skip).
set -euo pipefail

APT_PACKAGES=(unbound)

log() { printf 'install-netsim-deps: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "not running as root: nothing installed. As root this script would:"
    log "  apt-get update && apt-get install --no-install-recommends ${APT_PACKAGES[*]}"
    log "  (without starting or enabling the system unbound service)"
    log "the netsim tests (tests/netsim) will be skipped: they need root for ports 25/53/443."
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
    # On a machine run by systemd, keep the package from becoming the system resolver.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now unbound.service unbound-resolvconf.service >/dev/null 2>&1 || true
        log "disabled the system unbound services (netsim runs its own instance)"
    fi
fi

if ! unbound -V >/dev/null 2>&1; then
    log "unbound is installed but does not run: $(unbound -V 2>&1 | head -n 1)"
    exit 1
fi
log "ok: $(unbound -V 2>/dev/null | head -n 1)"
