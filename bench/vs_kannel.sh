#!/bin/sh
# Kannel against Payam Gateway under the same keep-alive HTTP load (bench/vs_kannel.py):
# installs Kannel and the wrk load generator from Debian when they are missing, then runs
# both gateways, alternating, in one run.
#     bench/vs_kannel.sh [--messages 10000] [--clients 50] [--rounds 2] [--client wrk|asyncio]
set -eu
cd "$(dirname "$0")/.."
missing=""
if ! command -v bearerbox >/dev/null 2>&1 && [ ! -x /usr/sbin/bearerbox ]; then
    missing="kannel"
fi
if ! command -v wrk >/dev/null 2>&1; then
    missing="$missing wrk"
fi
if [ -n "$missing" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "vs_kannel: apt-get is not available here, so$missing cannot be installed" \
             "from Debian; install the package(s) another way and run again" >&2
        exit 1
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "vs_kannel: installing$missing needs root (apt-get install -y$missing)" >&2
        exit 1
    fi
    apt-get update -qq || { echo "vs_kannel: apt-get update failed" >&2; exit 1; }
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null \
        || { echo "vs_kannel: apt-get install$missing failed" >&2; exit 1; }
fi
[ -x .venv/bin/python ] || make .venv/.installed
exec .venv/bin/python bench/vs_kannel.py "$@"
