#!/usr/bin/env bash
# Instructions per transaction on Pake's Postgres reactor thread, with insight on and off
# (issue 14's insight on/off target): callgrind counts instructions, not seconds, so the
# figure repeats on a busy machine. Pake runs under `valgrind --tool=callgrind
# --separate-threads=yes` with one reactor thread (`--pg-threads 1 --workers 1`) while
# pgbench -S (simple protocol unless MODE says) runs CLIENTS × SHORT and CLIENTS × LONG
# transactions; the slope between the two runs is the per-transaction figure, without
# login and start-up.
#
#   loadtests/instructions.sh                 # 4 clients, 500 vs 2,500 transactions each
#   PAKE=/tmp/pake-old loadtests/instructions.sh
#   KEEP=/tmp/cg loadtests/instructions.sh    # keep callgrind's files, for callgrind_annotate
#   MODE=extended loadtests/instructions.sh   # pgbench's -M: simple (default), extended, prepared
#   PEER=pgbouncer loadtests/instructions.sh  # PgBouncer's count instead (its one thread,
#                                             # same pool, transaction mode)
#
# Needs valgrind (apt-get install valgrind), pgbench and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-4}
MODE=${MODE:-simple}
SHORT=${SHORT:-500}
LONG=${LONG:-2500}
PAKE=${PAKE:-./target/release/pake}
PORT=${PORT:-22401}
WORK=$(mktemp -d)
LAB_PID=
cleanup() {
  [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$WORK"/cg.* "$WORK"/pgb/cg.* "$KEEP"/ 2>/dev/null
  [ -n "$LAB_PID" ] && kill "$LAB_PID" 2>/dev/null && wait "$LAB_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"$PAKE" lab --auth trust > "$WORK/lab.out" 2>&1 &
LAB_PID=$!
for _ in $(seq 1 120); do grep -q LAB_READY=1 "$WORK/lab.out" && break; sleep 0.5; done
URL=$(sed -n 's/^PG_PRIMARY_URL=//p' "$WORK/lab.out")
PGPORT=$(echo "$URL" | sed -E 's|.*:([0-9]+)/.*|\1|')
pgbench -i -s 1 -q "$URL" > /dev/null 2>&1

for insight in on off; do
  enabled=$([ $insight = on ] && echo true || echo false)
  printf '[[databases]]\nname = "postgres"\nhost = "127.0.0.1"\nport = %s\n[[users]]\nname = "pake"\npassword = "pake"\n[insight]\nenabled = %s\n' \
    "$PGPORT" "$enabled" > "$WORK/$insight.toml"
done

# Callgrind's count per thread of one run, as "suffix count" lines.
run() { # insight txns
  local out="$WORK/cg.$1.$2"
  valgrind --tool=callgrind --separate-threads=yes --dump-instr=no --callgrind-out-file="$out" \
    "$PAKE" serve --config "$WORK/$1.toml" --pg-listen "127.0.0.1:$PORT" \
    --admin-listen "127.0.0.1:$((PORT + 1))" --pool-size 4 --pool-mode transaction \
    --workers 1 --pg-threads 1 > "$WORK/pake.log" 2>&1 &
  local vp=$!
  for _ in $(seq 1 240); do pg_isready -h 127.0.0.1 -p "$PORT" -q && break; sleep 0.5; done
  PGPASSWORD=pake pgbench -S -n -M "$MODE" -c "$CLIENTS" -t "$2" -h 127.0.0.1 -p "$PORT" -U pake postgres \
    > "$WORK/pgbench.log" 2>&1
  kill -INT "$vp"
  wait "$vp" || true
  for f in "$out"-*; do echo "${f##*-} $(sed -n 's/^summary: //p' "$f")"; done
}

# Slope per transaction of two runs' counts ("suffix count" lines), the thread that grew most.
slope() { # short long
  join "$1" "$2" |
    awk -v n=$((CLIENTS * (LONG - SHORT))) '{ d = $3 - $2; if (d > m) m = d } END { printf "%d", m / n }'
}

# PgBouncer under the same callgrind, as the lab's user (it refuses to run as root).
run_pgbouncer() { # txns
  local dir="$WORK/pgb" user
  user=$(echo "$URL" | sed -E 's|postgres(ql)?://([^:@]+).*|\2|')
  mkdir -p "$dir"
  chmod a+x "$WORK"
  printf '"pake" "pake"\n' > "$dir/users.txt"
  printf '[databases]\npostgres = host=127.0.0.1 port=%s dbname=postgres user=%s\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %s\nunix_socket_dir =\nauth_type = any\nauth_file = %s\npool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 100\nlog_connections = 0\nlog_disconnections = 0\n' \
    "$PGPORT" "$user" "$PORT" "$dir/users.txt" > "$dir/pgbouncer.ini"
  [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
  local out="$dir/cg.pgb.$1" as=()
  [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
  "${as[@]}" valgrind --tool=callgrind --separate-threads=yes --dump-instr=no \
    --callgrind-out-file="$out" pgbouncer "$dir/pgbouncer.ini" > "$dir/pgb.log" 2>&1 &
  local vp=$!
  for _ in $(seq 1 240); do pg_isready -h 127.0.0.1 -p "$PORT" -q && break; sleep 0.5; done
  PGPASSWORD=pake pgbench -S -n -M "$MODE" -c "$CLIENTS" -t "$1" -h 127.0.0.1 -p "$PORT" -U pake postgres \
    > "$dir/pgbench.log" 2>&1
  pkill -INT -u postgres -f "callgrind-out-file=$out" || kill -INT "$vp"
  wait "$vp" || true
  for f in "$out"-*; do echo "${f##*-} $(sed -n 's/^summary: //p' "$f")"; done
}

if [ "${PEER:-}" = pgbouncer ]; then
  if [ "$MODE" = prepared ]; then
    echo "PgBouncer 1.18 has no prepared statements in transaction mode: use simple or extended" >&2
    exit 2
  fi
  run_pgbouncer "$SHORT" > "$WORK/short"
  run_pgbouncer "$LONG" > "$WORK/long"
  echo "| proxy | instructions per transaction |"
  echo "|---|---:|"
  echo "| PgBouncer ($(pgbouncer --version | head -1)) | $(slope "$WORK/short" "$WORK/long") |"
  exit 0
fi

# The sessions' thread is the one whose count grows with the transactions (logins hash
# SCRAM on another); its growth per transaction is the figure.
echo "| insight | instructions per transaction (the sessions' thread) |"
echo "|---|---:|"
for insight in on off; do
  run "$insight" "$SHORT" > "$WORK/short"
  run "$insight" "$LONG" > "$WORK/long"
  echo "| $insight | $(slope "$WORK/short" "$WORK/long") |"
done
