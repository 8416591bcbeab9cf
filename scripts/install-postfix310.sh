#!/usr/bin/env bash
# Postfix 3.10 from Debian's bookworm-backports, *extracted* (not installed) beside the system's
# Postfix 3.7, for the MTA-STS policy tests that need a Postfix that knows the TLSRPT attributes
# (tests/mta/test_policy_postfix.py).
#
#   * a private apt configuration (its own sources.list, lists and cache under $CACHE_DIR) adds
#     the <codename>-backports suite of the mirror the system already uses; /etc/apt is untouched;
#   * `apt-get download postfix/<codename>-backports`, `dpkg -x` into $ROOT
#     (default /opt/tlsrpt-test/postfix310);
#   * patchelf (installed from Debian) points every ELF file's RPATH at $ROOT/usr/lib/postfix:
#     LD_LIBRARY_PATH alone is not enough, postfix-script's children would load the 3.7 libraries
#     (`undefined symbol: var_tls_export_clist`);
#   * $ROOT/etc/postfix gets dynamicmaps.cf and postfix-files (meta_directory of the instance).
#
# A test instance then sets daemon_directory, shlib_directory, meta_directory and
# command_directory to the extracted tree and runs $ROOT/usr/sbin/postfix -c DIR start.
#
# Idempotent: does nothing when $ROOT/.installed names the version that is there.
# Root only; not root: says what it would do and exits 0 (the tests that need it then skip).
set -euo pipefail

ROOT="${TLSRPT_POSTFIX310_ROOT:-/opt/tlsrpt-test/postfix310}"
CACHE_DIR="${TLSRPT_POSTFIX310_CACHE:-/var/cache/tlsrpt-test/postfix310-apt}"
STAMP="$ROOT/.installed"

log() { printf 'install-postfix310: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "not running as root: nothing installed. As root this script would:"
    log "  download postfix from <codename>-backports with a private apt config into $CACHE_DIR,"
    log "  dpkg -x it into $ROOT, apt-get install patchelf and set the RPATH of its binaries."
    log "the Postfix 3.10 tests will be skipped."
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not found (not Debian?): skipping; the Postfix 3.10 tests will be skipped."
    exit 0
fi

if [ -s "$STAMP" ] && [ -x "$ROOT/usr/sbin/postfix" ]; then
    log "already extracted: $(cat "$STAMP") in $ROOT"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o DPkg::Lock::Timeout=600 -q)

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

# --- patchelf (and the system's lists, to find the mirror) -------------------------------------
if ! is_installed patchelf; then
    log "apt-get install patchelf"
    apt-get "${APT_OPTS[@]}" update >/dev/null
    apt-get "${APT_OPTS[@]}" install -y --no-install-recommends patchelf >/dev/null
fi

# --- a private apt configuration for <codename>-backports --------------------------------------
codename="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
if [ -z "$codename" ]; then
    log "cannot tell the Debian codename from /etc/os-release"
    exit 1
fi
# The mirror the system already uses for its main suite (as apt itself reports it).
mirror="$(apt-cache policy | awk -v s="$codename/main" '$3 == s { print $2; exit }')"
if [ -z "$mirror" ]; then
    apt-get "${APT_OPTS[@]}" update >/dev/null
    mirror="$(apt-cache policy | awk -v s="$codename/main" '$3 == s { print $2; exit }')"
fi
if [ -z "$mirror" ]; then
    log "no apt source for $codename/main found (apt-cache policy): cannot add $codename-backports"
    exit 1
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mkdir -p "$CACHE_DIR/lists/partial" "$CACHE_DIR/cache/archives/partial" "$CACHE_DIR/debs"
printf 'deb [signed-by=%s] %s %s-backports main\n' "$keyring" "$mirror" "$codename" \
    >"$CACHE_DIR/sources.list"
PRIVATE=(
    -o "Dir::Etc::sourcelist=$CACHE_DIR/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$CACHE_DIR/lists"
    -o "Dir::Cache=$CACHE_DIR/cache"
    -o "APT::Sandbox::User=root"
)
log "apt-get update ($codename-backports, private lists in $CACHE_DIR)"
apt-get "${APT_OPTS[@]}" "${PRIVATE[@]}" update >/dev/null

version="$(apt-cache "${PRIVATE[@]}" madison postfix |
    awk -F'|' -v s="$codename-backports" '$3 ~ s { gsub(/ /, "", $2); print $2; exit }')"
if [ -z "$version" ]; then
    log "no postfix package in $codename-backports"
    exit 1
fi
deb="$(find "$CACHE_DIR/debs" -maxdepth 1 -name "postfix_*.deb" | sort | tail -n 1)"
if [ -z "$deb" ] || [ "$(dpkg-deb -f "$deb" Version)" != "$version" ]; then
    rm -f "$CACHE_DIR"/debs/postfix_*.deb
    log "apt-get download postfix=$version"
    (cd "$CACHE_DIR/debs" && apt-get "${APT_OPTS[@]}" "${PRIVATE[@]}" download "postfix=$version" >/dev/null)
    deb="$(find "$CACHE_DIR/debs" -maxdepth 1 -name "postfix_*.deb" | head -n 1)"
fi
if [ -z "$deb" ]; then
    log "the download of postfix=$version produced no .deb"
    exit 1
fi

# --- extract and relink -------------------------------------------------------------------------
rm -rf "$ROOT"
mkdir -p "$ROOT"
dpkg -x "$deb" "$ROOT"
rpath="$ROOT/usr/lib/postfix"
patched=0
for f in "$ROOT"/usr/sbin/* "$ROOT"/usr/lib/postfix/sbin/* "$ROOT"/usr/lib/postfix/*.so*; do
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    if [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ]; then
        patchelf --set-rpath "$rpath" "$f"
        patched=$((patched + 1))
    fi
done
mkdir -p "$ROOT/etc/postfix"
# meta_directory: postfix-files (from the package's own copy) and dynamicmaps.cf.
if [ ! -f "$ROOT/etc/postfix/postfix-files" ] && [ -f "$ROOT/usr/share/postfix/postfix-files" ]; then
    cp "$ROOT/usr/share/postfix/postfix-files" "$ROOT/etc/postfix/postfix-files"
fi
if [ ! -f "$ROOT/etc/postfix/dynamicmaps.cf" ]; then
    if [ -f "$ROOT/usr/share/postfix/dynamicmaps.cf" ]; then
        cp "$ROOT/usr/share/postfix/dynamicmaps.cf" "$ROOT/etc/postfix/dynamicmaps.cf"
    elif [ -f /etc/postfix/dynamicmaps.cf ]; then
        cp /etc/postfix/dynamicmaps.cf "$ROOT/etc/postfix/dynamicmaps.cf"
    else
        : >"$ROOT/etc/postfix/dynamicmaps.cf"
    fi
fi

# --- sanity check -------------------------------------------------------------------------------
missing="$(ldd "$ROOT/usr/sbin/postconf" "$ROOT/usr/lib/postfix/sbin/smtp" | grep 'not found' || true)"
if [ -n "$missing" ]; then
    log "the extracted Postfix lacks shared libraries:"
    printf '%s\n' "$missing" >&2
    exit 1
fi
got="$("$ROOT/usr/sbin/postconf" -d -h mail_version 2>/dev/null || true)"
case "$got" in
3.1[0-9]* | 3.[2-9][0-9]*) ;;
*)
    log "the extracted postconf reports mail_version '${got:-?}', expected 3.10 or later"
    exit 1
    ;;
esac
printf 'postfix %s (%s)\n' "$got" "$(basename "$deb")" >"$STAMP"
log "ok: Postfix $got extracted to $ROOT ($patched ELF files relinked)"
