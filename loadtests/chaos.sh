#!/usr/bin/env bash
# The chaos suite (`make chaos`): during a steady load through Pake, kill -9 the Postgres
# primary and restart it, kill the streaming replica, kill a Redis Cluster primary, force a
# Sentinel failover. Per scenario: client errors, recovery time, writes acknowledged vs
# found on the servers afterwards. The scenarios themselves are `pake chaos`
# (src/bench/chaos/); this script is the entry point next to the other load tests.
#
#   loadtests/chaos.sh                                   # every scenario, ~1 min
#   loadtests/chaos.sh --scenario pg-primary-kill --down 5
#   loadtests/chaos.sh --list
#
# Table on stdout, JSON in bench-results/chaos/ (BENCHMARKS.md, "Chaos suite", explains
# it). Exits non-zero when an acknowledged Postgres write is lost or clients are never
# served again. Needs a release build (make release) and the lab's Debian packages
# (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."
PAKE=${PAKE:-./target/release/pake}
[ -x "$PAKE" ] || { echo "build first: make release" >&2; exit 1; }
if [ "$#" -eq 0 ]; then
    set -- --out bench-results/chaos
fi
exec "$PAKE" chaos "$@"
