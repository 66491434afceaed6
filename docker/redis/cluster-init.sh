#!/usr/bin/env bash
# One-shot job: make a Redis Cluster of the nodes in REDIS_NODES (3 primaries, no
# replicas) once they all answer PING. Idempotent: exits 0 when the cluster exists.
# redis-cli --cluster create wants IP addresses, so the service names are resolved first.
set -euo pipefail

read -r -a nodes <<<"${REDIS_NODES:-redis-1 redis-2 redis-3}"
port=${REDIS_PORT:-6379}

cluster_ok() { redis-cli -h "${nodes[0]}" -p "$port" cluster info | grep -q '^cluster_state:ok'; }

if cluster_ok; then
  echo "cluster already created"
  exit 0
fi

addrs=()
for node in "${nodes[@]}"; do
  until redis-cli -h "$node" -p "$port" ping | grep -q PONG; do
    echo "waiting for $node"
    sleep 1
  done
  addrs+=("$(getent hosts "$node" | awk '{ print $1; exit }'):$port")
done

redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes
until cluster_ok; do sleep 1; done
echo "cluster ready: ${addrs[*]}"
