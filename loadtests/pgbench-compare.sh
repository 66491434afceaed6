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

[ -x "$PAKE" ] || { echo "build first: make release" >&2; exit 1; }
tmp=$(mktemp -d /tmp/pake-compare.XXXXXX)
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
"$PGBENCH" -i -q -s "$SCALE" "$PG_PRIMARY_URL" >/dev/null 2>&1

# PG_PRIMARY_URL = postgres://USER:PASS@127.0.0.1:PORT/postgres
creds=${PG_PRIMARY_URL#postgres://}; creds=${creds%%@*}
user=${creds%%:*}; pass=${creds#*:}
pgport=${PG_PRIMARY_URL##*:}; pgport=${pgport%%/*}

pake_port=$(free_port); pake_admin=$(free_port); bouncer_port=$(free_port)
"$PAKE" serve --pg-listen "127.0.0.1:$pake_port" --admin-listen "127.0.0.1:$pake_admin" \
  --pg-primary "$PG_PRIMARY_URL" --pool-size "$POOL" --pool-mode "$POOL_MODE" \
  --workers "$WORKERS" > "$tmp/pake.log" 2>&1 &
pids+=($!)

cat > "$tmp/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$pgport dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $tmp/users.txt
pool_mode = $POOL_MODE
default_pool_size = $POOL
max_client_conn = $((CLIENTS + 100))
ignore_startup_parameters = extra_float_digits
# PgBouncer 1.18 (Debian 12) has no max_prepared_statements: -M prepared fails through it
logfile = $tmp/pgbouncer.log
pidfile = $tmp/pgbouncer.pid
INI
echo "\"$user\" \"$pass\"" > "$tmp/users.txt"
as_user=()
if [ "$(id -u)" -eq 0 ]; then chown -R postgres "$tmp"; as_user=(-u postgres); fi
pgbouncer "${as_user[@]}" -d "$tmp/pgbouncer.ini"
sleep 1

url_for() {
  case $1 in
    direct) echo "$PG_PRIMARY_URL" ;;
    pake) echo "postgres://$user:$pass@127.0.0.1:$pake_port/postgres" ;;
    pgbouncer) echo "postgres://$user:$pass@127.0.0.1:$bouncer_port/postgres" ;;
  esac
}

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
