#!/bin/sh
# Kannel against Payam Gateway under the same keep-alive HTTP load (bench/vs_kannel.py):
# installs Kannel from Debian when it is missing, then runs both, alternating, in one run.
#     bench/vs_kannel.sh [--messages 10000] [--clients 50] [--rounds 2]
set -eu
cd "$(dirname "$0")/.."
if ! command -v bearerbox >/dev/null 2>&1 && [ ! -x /usr/sbin/bearerbox ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "vs_kannel: apt-get is not available here, so Kannel cannot be installed" \
             "from Debian; install the kannel package another way and run again" >&2
        exit 1
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "vs_kannel: installing Kannel needs root (apt-get install -y kannel)" >&2
        exit 1
    fi
    apt-get update -qq || { echo "vs_kannel: apt-get update failed" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kannel >/dev/null \
        || { echo "vs_kannel: apt-get install kannel failed" >&2; exit 1; }
fi
[ -x .venv/bin/python ] || make .venv/.installed
exec .venv/bin/python bench/vs_kannel.py "$@"
