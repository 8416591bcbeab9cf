#!/usr/bin/env bash
# Install the system packages that the real-MTA end-to-end tests (tests/mta) need, on Debian 12.
#
#   * Postfix 3.7 (debconf "No configuration"; nothing is started: policy-rc.d denies it),
#   * libmilter-dev (to build pymilter) and libidn12 (the one library the extracted Exim lacks),
#   * Exim 4.96 (exim4-daemon-light), *extracted* with dpkg -x into $TLSRPT_EXIM_ROOT
#     (default /opt/tlsrpt-test/exim) rather than installed, so it never fights Postfix over the
#     mail-transport-agent slot, plus the Debian-exim system user it drops privileges to.
#
# Idempotent and quick when everything is already in place: every step checks first.
# Not root: prints what it would do and exits 0 (the MTA tests then skip themselves).
set -euo pipefail

EXIM_ROOT="${TLSRPT_EXIM_ROOT:-/opt/tlsrpt-test/exim}"
EXIM_BIN="$EXIM_ROOT/usr/sbin/exim4"
APT_PACKAGES=(postfix libmilter-dev libidn12)

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "not running as root: nothing installed. As root this script would:"
    log "  apt-get update && apt-get install --no-install-recommends ${APT_PACKAGES[*]}"
    log "  apt-get download exim4-daemon-light && dpkg -x it into $EXIM_ROOT"
    log "  adduser --system --group --allow-bad-names Debian-exim"
    log "the real-MTA tests (pytest -m mta) will be skipped."
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not found (not Debian?): install ${APT_PACKAGES[*]} and Exim yourself; skipping."
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o DPkg::Lock::Timeout=600 -q)
apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        apt-get "${APT_OPTS[@]}" update >/dev/null
        apt_updated=1
    fi
}

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

# --- Debian packages ----------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_update_once
    if ! is_installed postfix; then
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    fi
    # Make sure no maintainer script starts a daemon: use the machine's policy-rc.d if it has one,
    # otherwise put a temporary one in place and remove it afterwards.
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
else
    log "already installed: ${APT_PACKAGES[*]}"
fi

# --- Exim, extracted ----------------------------------------------------------------------------
if [ -x "$EXIM_BIN" ]; then
    log "Exim already extracted: $EXIM_BIN"
else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    apt_update_once
    log "apt-get download exim4-daemon-light"
    # _apt must be able to write into the download directory.
    chmod 0777 "$tmp"
    (cd "$tmp" && apt-get "${APT_OPTS[@]}" download exim4-daemon-light >/dev/null)
    deb="$(find "$tmp" -maxdepth 1 -name 'exim4-daemon-light_*.deb' | head -n 1)"
    if [ -z "$deb" ]; then
        log "exim4-daemon-light download produced no .deb"
        exit 1
    fi
    mkdir -p "$EXIM_ROOT"
    dpkg -x "$deb" "$EXIM_ROOT"
    log "Exim extracted to $EXIM_ROOT ($(basename "$deb"))"
fi

# --- Debian-exim user (the extracted binary drops privileges to it) -----------------------------
if getent passwd Debian-exim >/dev/null; then
    log "user Debian-exim exists"
else
    log "adding system user Debian-exim"
    if command -v adduser >/dev/null 2>&1; then
        adduser --system --group --quiet --allow-bad-names --no-create-home \
            --home /var/spool/exim4 Debian-exim
    else
        useradd --system --user-group --no-create-home --home-dir /var/spool/exim4 \
            --shell /usr/sbin/nologin Debian-exim
    fi
fi

# --- sanity check -------------------------------------------------------------------------------
if ldd "$EXIM_BIN" | grep -q 'not found'; then
    log "Exim has missing shared libraries:"
    ldd "$EXIM_BIN" | grep 'not found' >&2
    exit 1
fi
pf_version="$(postconf -d -h mail_version 2>/dev/null || true)"
exim_version="$({ "$EXIM_BIN" -bV 2>/dev/null || true; } | head -n 1)"
log "ok: Postfix ${pf_version:-?}, ${exim_version:-Exim ?} ($EXIM_BIN)"
