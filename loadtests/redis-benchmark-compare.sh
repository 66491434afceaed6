#!/usr/bin/env bash
# redis-benchmark side by side: direct Redis, Pake (L1 on and off) and twemproxy, interleaved
# rounds (A B C A B C …) so machine drift hits all alike. The cross-check for `pake bench`'s
# Redis scenarios with a client we did not write (redis-benchmark draws keys uniformly with
# -r; `pake bench` uses Zipf(0.99), so absolute figures differ — compare the ratios).
#
#   loadtests/redis-benchmark-compare.sh                  # defaults below
#   PIPELINE=16 ROUNDS=5 loadtests/redis-benchmark-compare.sh
#
# Pake's targets run when this build's `pake serve` has --redis-listen; otherwise they are
# reported as unavailable. Needs redis-server, redis-tools and nutcracker (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-50}
REQUESTS=${REQUESTS:-200000}   # per test per run
KEYSPACE=${KEYSPACE:-100000}
PIPELINE=${PIPELINE:-1}
VALUE=${VALUE:-100}            # bytes
POOL=${POOL:-4}                # Pake redis.pool_size = twemproxy server_connections
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-0}
TARGETS=${TARGETS:-"direct pake pake-nol1 twemproxy"}
PAKE=${PAKE:-./target/release/pake}

[ -x "$PAKE" ] || { echo "build first: make release" >&2; exit 1; }
tmp=$(mktemp -d /tmp/pake-redis-compare.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" \
  > "$tmp/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port"

declare -A port
port[direct]=$redis_port
unavailable=()
if "$PAKE" serve --help | grep -q -- --redis-listen; then
  for t in pake pake-nol1; do
    l1=true; [ "$t" = pake-nol1 ] && l1=false
    printf '[general]\nlog_level = "warn"\n\n[redis]\nl1 = %s\npool_size = %s\n' "$l1" "$POOL" > "$tmp/$t.toml"
    port[$t]=$(free_port)
    "$PAKE" serve --config "$tmp/$t.toml" --redis-listen "127.0.0.1:${port[$t]}" \
      --redis "redis://127.0.0.1:$redis_port" --pg-listen "127.0.0.1:$(free_port)" \
      --admin-listen "127.0.0.1:$(free_port)" --workers "$WORKERS" > "$tmp/$t.log" 2>&1 &
    pids+=($!)
    wait_port "${port[$t]}" || { echo "$t did not start:"; cat "$tmp/$t.log"; exit 1; }
  done
else
  unavailable+=(pake pake-nol1)
fi
port[twemproxy]=$(free_port)
cat > "$tmp/nutcracker.yml" <<YML
bench:
  listen: 127.0.0.1:${port[twemproxy]}
  hash: fnv1a_64
  distribution: ketama
  redis: true
  server_connections: $POOL
  auto_eject_hosts: false
  preconnect: true
  servers:
    - 127.0.0.1:$redis_port:1
YML
nutcracker -c "$tmp/nutcracker.yml" -s "$(free_port)" -a 127.0.0.1 > "$tmp/nutcracker.log" 2>&1 &
pids+=($!)
wait_port "${port[twemproxy]}"

# fill the key space so GETs hit
redis-benchmark -p "$redis_port" -c 20 -n "$KEYSPACE" -r "$KEYSPACE" -d "$VALUE" -t set -q > /dev/null

for t in "${unavailable[@]}"; do echo "target unavailable: $t: $PAKE serve has no --redis-listen"; done
echo "# redis-benchmark -c $CLIENTS -n $REQUESTS -r $KEYSPACE -d $VALUE -P $PIPELINE -t get,set, $ROUNDS rounds, $(nproc) cores"
declare -A get set
for round in $(seq 1 "$ROUNDS"); do
  for t in $TARGETS; do
    [ -n "${port[$t]:-}" ] || continue
    out=$(redis-benchmark -p "${port[$t]}" -c "$CLIENTS" -n "$REQUESTS" -r "$KEYSPACE" -d "$VALUE" \
          -P "$PIPELINE" -t get,set --csv 2>/dev/null || true)
    g=$(echo "$out" | awk -F'","' '/^"GET"/ {print $2}')
    s=$(echo "$out" | awk -F'","' '/^"SET"/ {print $2}')
    echo "round $round $t get_rps=${g:-0} set_rps=${s:-0}"
    get[$t]+="${g:-0} "; set[$t]+="${s:-0} "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
echo
printf "%-10s %12s %12s %10s %13s\n" target get_rps set_rps get/direct get/twemproxy
dg=$(echo "${get[direct]:-0}" | median); tg=$(echo "${get[twemproxy]:-0}" | median)
for t in $TARGETS; do
  [ -n "${get[$t]:-}" ] || continue
  g=$(echo "${get[$t]}" | median); s=$(echo "${set[$t]}" | median)
  printf "%-10s %12.0f %12.0f %10s %13s\n" "$t" "$g" "$s" \
    "$(awk -v a="$g" -v b="$dg" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }')" \
    "$(awk -v a="$g" -v b="$tg" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }')"
done
