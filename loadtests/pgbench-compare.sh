#!/usr/bin/env bash
# pgbench side by side: direct PostgreSQL, Pake and PgBouncer, interleaved rounds
# (A B C A B C …) so machine drift hits all alike. Same pool size and mode for both poolers.
#
#   loadtests/pgbench-compare.sh                      # defaults below
#   CLIENTS=1000 MODE=prepared ROUNDS=5 loadtests/pgbench-compare.sh
#
# Prints one line per run and a summary table (median tps, ratios). Needs a release build
# (make release) and the Debian packages postgresql-15, pgbouncer (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-100}     # pgbench clients
POOL=${POOL:-20}            # server connections per pool (Pake and PgBouncer)
POOL_MODE=${POOL_MODE:-transaction}
MODE=${MODE:-simple}        # pgbench -M: simple | extended | prepared
DURATION=${DURATION:-10}    # seconds per run
ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-10}
JOBS=${JOBS:-2}             # pgbench threads
WORKERS=${WORKERS:-0}       # Pake worker threads (0 = one per CPU)
SCRIPT=${SCRIPT:--S}        # -S select-only; "" for TPC-B-like
TARGETS=${TARGETS:-"direct pake pgbouncer"}
PAKE=${PAKE:-./target/release/pake}

# shellcheck source=loadtests/pg-peers.sh
source loadtests/pg-peers.sh

echo "# pgbench $SCRIPT -M $MODE -c $CLIENTS -j $JOBS -T $DURATION, pool $POOL ($POOL_MODE), scale $SCALE, $ROUNDS rounds, $(nproc) cores"
declare -A results
for round in $(seq 1 "$ROUNDS"); do
  for t in $TARGETS; do
    # shellcheck disable=SC2086
    out=$("$PGBENCH" -n $SCRIPT -M "$MODE" -c "$CLIENTS" -j "$JOBS" -T "$DURATION" "$(url_for "$t")" 2>&1 || true)
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    failed=$(echo "$out" | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p')
    lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
    echo "round $round $t tps=${tps:-0} latency_ms=${lat:-?} failed=${failed:-?}"
    results[$t]+="${tps:-0} "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
echo
printf "%-10s %12s %10s %12s\n" target median_tps vs_direct vs_pgbouncer
direct=$(echo "${results[direct]:-0}" | median)
bouncer=$(echo "${results[pgbouncer]:-0}" | median)
for t in $TARGETS; do
  m=$(echo "${results[$t]}" | median)
  printf "%-10s %12.0f %10s %12s\n" "$t" "$m" \
    "$(awk -v a="$m" -v b="$direct" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }')" \
    "$(awk -v a="$m" -v b="$bouncer" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }')"
done
