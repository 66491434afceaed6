# Sourced by pgbench-compare.sh and syscalls.sh: a lab PostgreSQL with pgbench's tables
# (scale $SCALE), and Pake ($PAKE serve, $WORKERS workers) and PgBouncer in front of it with
# the same pool ($POOL server connections, $POOL_MODE) and client limit ($CLIENTS + 100).
# Sets tmp, PGBENCH, PG_PRIMARY_URL, user, pass, pake_port, pake_pid, bouncer_port,
# bouncer_pid and url_for {direct|pake|pgbouncer}; everything is stopped on exit.

[ -x "$PAKE" ] || { echo "build first: make release (or PAKE=path/to/pake)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/pake-loadtest.XXXXXX)
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
for _ in $(seq 1 100); do [ -s "$tmp/pgbouncer.pid" ] && break; sleep 0.1; done
bouncer_pid=$(cat "$tmp/pgbouncer.pid")
sleep 1

url_for() {
  case $1 in
    direct) echo "$PG_PRIMARY_URL" ;;
    pake) echo "postgres://$user:$pass@127.0.0.1:$pake_port/postgres" ;;
    pgbouncer) echo "postgres://$user:$pass@127.0.0.1:$bouncer_port/postgres" ;;
  esac
}
