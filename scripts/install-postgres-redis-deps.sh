#!/usr/bin/env bash
# Install what the shared-store and shared-policy-cache tests need: Debian's `postgresql`
# (15 on bookworm: initdb, pg_ctl and postgres in /usr/lib/postgresql/15/bin) and
# `redis-server`.
#
# tests/support/servers.py starts a private PostgreSQL (initdb + pg_ctl as the unprivileged
# `postgres` user the package creates) and a private redis-server, each on a free loopback port
# with its data in a temporary directory, and stops them at the end; the tests skip
# themselves, saying why, only when the binaries are missing. No system PostgreSQL or Redis
# service is started (scripts/apt-lib.sh). The Python clients (psycopg, redis) come from pip.
# Idempotent; not root: prints what it would do and exits 0.
set -euo pipefail
APT_TAG=install-postgres-redis-deps
# shellcheck source=scripts/apt-lib.sh
. "$(dirname "$0")/apt-lib.sh"

rc=0
apt_install postgresql postgresql || rc=$?
if [ "$rc" -eq 0 ]; then
    apt_install redis-server redis-server || rc=$?
fi
if [ "$rc" -eq 10 ]; then
    apt_log "the PostgreSQL and Redis tests will be skipped."
    exit 0
fi
[ "$rc" -eq 0 ] || exit "$rc"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pg_bin" ] || ! "$pg_bin/initdb" --version >/dev/null 2>&1; then
    apt_log "postgresql is installed but initdb does not run"
    exit 1
fi
if ! redis-server --version >/dev/null 2>&1; then
    apt_log "redis-server is installed but does not run"
    exit 1
fi
apt_log "ok: $("$pg_bin/initdb" --version), $(redis-server --version | cut -d' ' -f1-3)"
