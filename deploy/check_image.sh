#!/usr/bin/env bash
# Live image check (deploy/check_image.py): installs what it needs from Debian's packages when
# it is missing (podman, runc, the CNI plugins and iptables for published ports, debootstrap for
# the base image), then runs the check with the project's Python. Run from anywhere, as root
# (podman builds and runs rootful here, and apt-get may have to install):
#
#   bash deploy/check_image.sh [--bundle DIR] [--deadline-s SECONDS]
#
# PYTHON picks the interpreter (default: the project's .venv, else python3).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ -x /usr/sbin/runc ] || missing+=(runc)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null || missing+=(iptables)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "check_image: installing Debian's ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
# The check has its own deadline (25 min by default); timeout is the backstop if something hangs.
exec timeout --kill-after=10 1800 "$python" "$root/deploy/check_image.py" "$@"
