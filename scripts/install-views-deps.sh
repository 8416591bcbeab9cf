#!/usr/bin/env bash
# Install what the summary views' browser test needs: Debian's headless-capable `chromium`.
#
# tests/test_views_chromium.py renders the HTML summary in a real Chromium (--headless, no
# network) and compares the numbers in the DOM with the store's; it skips itself, saying why,
# when no chromium binary is found.
#
# Idempotent and quick when chromium is already there. Not root: prints what it would do and
# exits 0 (the Chromium test then skips itself).
set -euo pipefail

APT_PACKAGES=(chromium)

log() { printf 'install-views-deps: %s\n' "$*" >&2; }

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

if [ "$(id -u)" -ne 0 ]; then
    log "not running as root: nothing installed. As root this script would:"
    log "  apt-get update && apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}"
    log "the HTML summary's Chromium test will be skipped."
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
log "apt-get install ${missing[*]}"
apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
log "ok: $(chromium --version 2>/dev/null || echo 'chromium installed')"
