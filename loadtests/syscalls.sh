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
[ -x "$PAKE" ] || { echo "build first: cargo build (or make release)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/pake-syscalls.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$tmp/pgbouncer.pid" ] && kill "$(cat "$tmp/pgbouncer.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$PAKE" lab --conf "max_connections = $((CLIENTS + 2 * POOL + 50))" > "$tmp/lab.env" &
pids+=($!)
for _ in $(seq 1 600); do grep -q LAB_READY "$tmp/lab.env" 2>/dev/null && break; sleep 0.1; done
# shellcheck disable=SC1091
source "$tmp/lab.env"
PGBENCH="$PG_BINDIR/pgbench"
[ -x "$PGBENCH" ] || PGBENCH=pgbench
"$PGBENCH" -i -q -s 1 "$PG_PRIMARY_URL" >/dev/null 2>&1

creds=${PG_PRIMARY_URL#postgres://}; creds=${creds%%@*}
user=${creds%%:*}; pass=${creds#*:}
pgport=${PG_PRIMARY_URL##*:}; pgport=${pgport%%/*}

pake_port=$(free_port); pake_admin=$(free_port); bouncer_port=$(free_port)
"$PAKE" serve --pg-listen "127.0.0.1:$pake_port" --admin-listen "127.0.0.1:$pake_admin" \
  --pg-primary "$PG_PRIMARY_URL" --pool-size "$POOL" --pool-mode transaction \
  --workers "$WORKERS" > "$tmp/pake.log" 2>&1 &
pake_pid=$!
pids+=("$pake_pid")

cat > "$tmp/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$pgport dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $tmp/users.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = $((CLIENTS + 100))
ignore_startup_parameters = extra_float_digits
logfile = $tmp/pgbouncer.log
pidfile = $tmp/pgbouncer.pid
INI
echo "\"$user\" \"$pass\"" > "$tmp/users.txt"
as_user=()
if [ "$(id -u)" -eq 0 ]; then chown -R postgres "$tmp"; as_user=(-u postgres); fi
pgbouncer "${as_user[@]}" -d "$tmp/pgbouncer.ini"
for _ in $(seq 1 100); do [ -s "$tmp/pgbouncer.pid" ] && break; sleep 0.1; done
bouncer_pid=$(cat "$tmp/pgbouncer.pid")
sleep 1

total=$((CLIENTS * TXNS))
url() { echo "postgres://$user:$pass@127.0.0.1:$1/postgres"; }

# count one proxy: warm it (pools filled, logins done), then attach, run, detach
count() { # name pid port
  "$PGBENCH" -n -S -M "$MODE" -c "$CLIENTS" -t 50 "$(url "$3")" >/dev/null 2>&1
  strace -c -f -q -p "$2" -o "$tmp/$1.strace" &
  local st=$!
  sleep 1
  "$PGBENCH" -n -S -M "$MODE" -c "$CLIENTS" -j 2 -t "$TXNS" "$(url "$3")" > "$tmp/$1.pgbench" 2>&1
  kill -INT "$st"; wait "$st" 2>/dev/null || true
  grep -q "number of transactions actually processed: $total" "$tmp/$1.pgbench" \
    || { echo "$1: pgbench did not complete:" >&2; cat "$tmp/$1.pgbench" >&2; exit 1; }
}
count pake "$pake_pid" "$pake_port"
count pgbouncer "$bouncer_pid" "$bouncer_port"

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
