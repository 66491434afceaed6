#!/usr/bin/env bash
# System calls per transaction of each proxy: `strace -c -f` attached to Pake and to
# PgBouncer while pgbench -S runs a fixed number of transactions through it (issue 14).
# A count, not a time: it holds on any machine, busy or not (strace slows the proxy down,
# it does not change what it asks the kernel for per transaction).
#
#   loadtests/syscalls.sh                        # 20 clients × 500 transactions each
#   CLIENTS=100 TXNS=200 MODE=prepared loadtests/syscalls.sh
#
# Prints a Markdown table (total and the busiest calls per transaction) for BENCHMARKS.md.
# Needs strace (installed with apt-get when run as root), pgbouncer and a pake build.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-20}    # pgbench clients
TXNS=${TXNS:-500}         # transactions per client (pgbench -t)
POOL=${POOL:-10}          # server connections per pool (both poolers)
MODE=${MODE:-simple}      # pgbench -M
WORKERS=${WORKERS:-1}     # Pake worker threads
TOP=${TOP:-6}             # busiest calls listed per proxy
PAKE=${PAKE:-$( [ -x ./target/release/pake ] && echo ./target/release/pake || echo ./target/debug/pake )}

if ! command -v strace >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get install -y -q strace >/dev/null
  else
    echo "strace is needed: sudo apt-get install strace (and ptrace rights: run as root or" >&2
    echo "set /proc/sys/kernel/yama/ptrace_scope to 0)" >&2
    exit 1
  fi
fi
SCALE=1 POOL_MODE=transaction
# shellcheck source=loadtests/pg-peers.sh
source loadtests/pg-peers.sh

total=$((CLIENTS * TXNS))

# count one proxy: warm it (pools filled, logins done), then attach, run, detach
count() { # name pid
  "$PGBENCH" -n -S -M "$MODE" -c "$CLIENTS" -t 50 "$(url_for "$1")" >/dev/null 2>&1
  strace -c -f -q -p "$2" -o "$tmp/$1.strace" &
  local st=$!
  sleep 1
  "$PGBENCH" -n -S -M "$MODE" -c "$CLIENTS" -j 2 -t "$TXNS" "$(url_for "$1")" > "$tmp/$1.pgbench" 2>&1
  kill -INT "$st"; wait "$st" 2>/dev/null || true
  grep -q "number of transactions actually processed: $total" "$tmp/$1.pgbench" \
    || { echo "$1: pgbench did not complete:" >&2; cat "$tmp/$1.pgbench" >&2; exit 1; }
}
count pake "$pake_pid"
count pgbouncer "$bouncer_pid"

# strace -c: "% time seconds usecs/call calls errors syscall"; the last line is the total
# (calls is the 4th column; errors, when present, comes after it)
per_txn() { awk -v n="$total" '$NF=="total" {printf "%.2f", $4/n}' "$tmp/$1.strace"; }
busiest() {
  awk -v n="$total" '
    /^-/ || /^%/ || $NF=="total" || NF<5 {next}
    {printf "%s %.2f\n", $NF, $4/n}' "$tmp/$1.strace" \
    | sort -k2 -gr | head -n "$TOP" | awk '{printf "%s%s %s", (NR>1?", ":""), $1, $2}'
}
echo "pgbench -S -M $MODE, $CLIENTS clients × $TXNS transactions, pool $POOL (transaction), Pake workers $WORKERS, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $("$PAKE" --version 2>/dev/null || echo pake) ($PAKE)"
echo
echo "| proxy | syscalls per transaction | busiest calls per transaction |"
echo "|---|---:|---|"
echo "| Pake | $(per_txn pake) | $(busiest pake) |"
echo "| PgBouncer | $(per_txn pgbouncer) | $(busiest pgbouncer) |"
