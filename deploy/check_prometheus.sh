#!/usr/bin/env bash
# Live Prometheus check (deploy/check_prometheus.py): installs Debian's prometheus if it is
# missing, then runs the check with the project's Python. Run from anywhere, as root when
# prometheus still has to be installed:
#
#   bash deploy/check_prometheus.sh [--bundle DIR] [--deadline-s SECONDS]
#
# PYTHON picks the interpreter (default: the project's .venv, else python3).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v prometheus >/dev/null; then
    echo "check_prometheus: installing Debian's prometheus"
    # The package's postinst would start a system-wide Prometheus on :9090 where services may
    # start; the check runs its own on 127.0.0.1. policy-rc.d (exit 101) forbids the start,
    # and is removed again if this script created it.
    created_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    trap '[ -z "$created_policy" ] || rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
    [ -z "$created_policy" ] || rm -f /usr/sbin/policy-rc.d
    trap - EXIT
fi

python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
# The whole check has its own deadline; timeout is the backstop if something hangs anyway.
exec timeout --kill-after=10 600 "$python" "$root/deploy/check_prometheus.py" "$@"
