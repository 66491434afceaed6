#!/usr/bin/env bash
# The abuse suite (`make abuse`): hostile and buggy clients against both of Pake's
# listeners while a well-behaved client keeps asking — a 200,000-key MGET (standalone and
# cluster), a client pipelining 1M commands without reading, a slow reader, 2^31 lengths,
# 100,000-deep RESP nesting, garbage startup packets, 2,000 stalled logins, a 20 MB
# statement, an IN list of 100,000 constants, 10,000 statements in one Query, a 20,000-deep
# expression. Per case: the abuser's answer, Pake's peak and settled RSS, the good client's
# worst latency and wrong answers, and the worst latency of a control client asking the
# backend directly meanwhile (the machine's own scheduling delay; cases: loadtests/abuse.py).
#
#   loadtests/abuse.sh                     # every case, ~3 min
#   loadtests/abuse.sh --only MGET         # the cases whose name contains MGET
#
# Starts its own lab (Postgres, Redis standalone, a 3-primary Redis Cluster) and two Pakes
# (one cannot front both Redis topologies), and stops them all at the end. Table on stdout,
# JSON in bench-results/abuse.json. Exits non-zero when the good client got a wrong answer
# or an abuser's client crashed. Not part of `make test`. Needs a release build
# (make release; PAKE=./target/debug/pake works, slower).
set -euo pipefail
cd "$(dirname "$0")/.."
PAKE=${PAKE:-./target/release/pake}
[ -x "$PAKE" ] || { echo "build first: make release" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ready() { for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out: $1" >&2; cat "$1" >&2; exit 1; }

"$PAKE" lab --redis standalone --auth trust >"$work/lab1" 2>"$work/lab1.err" & pids+=($!)
"$PAKE" lab --redis cluster --no-postgres >"$work/lab2" 2>"$work/lab2.err" & pids+=($!)
ready "$work/lab1" LAB_READY
ready "$work/lab2" LAB_READY
pg_url=$(sed -n 's/^PG_PRIMARY_URL=//p' "$work/lab1")
redis_url=$(sed -n 's/^REDIS_URL=//p' "$work/lab1")
cluster_url=$(sed -n 's/^REDIS_URL=//p' "$work/lab2")

pg=$(port); r1=$(port); r2=$(port); pg2=$(port)
"$PAKE" serve --pg-listen "127.0.0.1:$pg" --pg-primary "$pg_url" --auth-type trust \
    --redis "$redis_url" --redis-listen "127.0.0.1:$r1" >"$work/pake1" 2>&1 & pake1=$!; pids+=($pake1)
"$PAKE" serve --pg-listen "127.0.0.1:$pg2" --redis "$cluster_url" --redis-cluster \
    --redis-listen "127.0.0.1:$r2" >"$work/pake2" 2>&1 & pake2=$!; pids+=($pake2)
ready "$work/pake1" "Pake is ready"
ready "$work/pake2" "Pake is ready"
sleep 2

user=$(python3 -c 'import sys,urllib.parse as u; print(u.urlparse(sys.argv[1]).username or "postgres")' "$pg_url")
db=$(python3 -c 'import sys,urllib.parse as u; print(u.urlparse(sys.argv[1]).path.lstrip("/") or "postgres")' "$pg_url")
hp() { python3 -c 'import sys,urllib.parse as u; x=u.urlparse(sys.argv[1]); print(f"{x.hostname}:{x.port}")' "$1"; }
mkdir -p bench-results
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
python3 loadtests/abuse.py --redis "127.0.0.1:$r1" --redis-cluster "127.0.0.1:$r2" \
    --pg "127.0.0.1:$pg" --pg-user "$user" --pg-db "$db" --pid "$pake1" --pid-cluster "$pake2" \
    --redis-direct "$(hp "$redis_url")" --redis-cluster-direct "$(hp "$cluster_url")" --pg-direct "$(hp "$pg_url")" \
    --json bench-results/abuse.json "$@"
