# Sourced by the scripts/install-*-deps.sh scripts that add Debian packages for the test
# suite's private server instances. Set APT_TAG (the script's name, for messages) first.
#
# apt_install SERVICE PACKAGE...: install the packages that are missing (apt-get update once,
# --no-install-recommends) while no maintainer script may start a daemon (the machine's
# policy-rc.d is kept, or a temporary one denies every start), then disable SERVICE where
# systemd runs (the tests start their own instances). Idempotent. Returns 10 when it did
# nothing because this is not root or not Debian (it says so), the apt-get status otherwise.

apt_log() { printf '%s: %s\n' "$APT_TAG" "$*" >&2; }

apt_is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

apt_install() {
    local service=$1
    shift
    if [ "$(id -u)" -ne 0 ]; then
        apt_log "not running as root: nothing installed. As root this script would:"
        apt_log "  apt-get update && apt-get install -y --no-install-recommends $*"
        return 10
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        apt_log "apt-get not found (not Debian?): install $* yourself; skipping."
        return 10
    fi
    local missing=() pkg
    for pkg in "$@"; do
        apt_is_installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        apt_log "already installed: $*"
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    local opts=(-o DPkg::Lock::Timeout=600 -q) created_policy=0 rc=0
    apt_log "apt-get update"
    apt-get "${opts[@]}" update >/dev/null
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    apt_log "apt-get install ${missing[*]}"
    apt-get "${opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    if [ "$created_policy" -eq 1 ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [ "$rc" -ne 0 ]; then
        apt_log "apt-get install failed (exit $rc)"
        return "$rc"
    fi
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now "$service.service" >/dev/null 2>&1 || true
        apt_log "disabled the system $service service (the tests run their own instance)"
    fi
}
