#!/usr/bin/env bash
# Make sure PostgreSQL server binaries and pgbouncer exist (the test suite starts its own
# primary, a streaming replica and a pgbouncer from them).
set -euo pipefail
missing=()
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    missing+=(postgresql)
fi
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    missing+=(pgbouncer)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "not found: ${missing[*]}; install them (Debian: postgresql-15 pgbouncer)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
# Debian's packages start their own services; the suite runs servers of its own.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now pgbouncer >/dev/null 2>&1 || true
fi
