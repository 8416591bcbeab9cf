#!/usr/bin/env bash
# Install what the syslog sink's end-to-end tests need: Debian's `rsyslog` (rsyslogd with the
# imtcp, imudp, imuxsock and mmjsonparse modules).
#
# tests/test_syslog_rsyslog.py starts a private rsyslogd on loopback ports and a unix socket in
# a temporary directory (never /dev/log) and checks what it receives; it skips itself, saying
# why, when no rsyslogd binary is found. The system rsyslog service is never started
# (scripts/apt-lib.sh). Idempotent; not root: prints what it would do and exits 0.
set -euo pipefail
APT_TAG=install-rsyslog-deps
# shellcheck source=scripts/apt-lib.sh
. "$(dirname "$0")/apt-lib.sh"

rc=0
apt_install rsyslog rsyslog || rc=$?
if [ "$rc" -eq 10 ]; then
    apt_log "the rsyslog tests will be skipped."
    exit 0
fi
[ "$rc" -eq 0 ] || exit "$rc"
apt_log "ok: $(rsyslogd -v 2>/dev/null | head -n 1 || echo 'rsyslog installed')"
