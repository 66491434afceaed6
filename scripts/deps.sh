#!/usr/bin/env bash
# Install what `make demo` / `make test` need on Debian, only what is missing.
# Runs apt-get as root (directly, or through sudo when available).
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)

[ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || need+=(postgresql-15)
have psql || need+=(postgresql-client-15)
have pgbench || [ -x "${pgbin:-/nonexistent}/pgbench" ] || need+=(postgresql-contrib)
ls /usr/share/postgresql/*/extension/hypopg.control >/dev/null 2>&1 || need+=(postgresql-15-hypopg)
have redis-server || need+=(redis-server)
have redis-cli || need+=(redis-tools)
have pgbouncer || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
have nutcracker || [ -x /usr/sbin/nutcracker ] || need+=(nutcracker)
have promtool || need+=(prometheus)
have curl || need+=(curl)
have python3 || need+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv) # check-deploy's validators
# headless browser: the insight tests open the HTML report in it
have chromium || need+=(chromium)
have cc || need+=(build-essential)
# the Redis client-library matrix (tests/redis/matrix.rs): redis-py and ioredis
have node || need+=(nodejs)
have npm || need+=(npm)
# the Postgres client-library matrix (tests/pg/matrix.rs): pgjdbc, run as a single-file
# Java program (no build tool, no Maven Central)
have javac || need+=(default-jdk-headless) # single-file source programs need the JDK
[ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)

if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing: ${need[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    have sudo || { echo "need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # no services started by package scripts are needed: the lab runs its own servers
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

here=$(cd "$(dirname "$0")/.." && pwd)
if ! python3 -c 'import redis' 2>/dev/null; then
  echo "==> installing redis-py (pip)"
  python3 -m pip install -q redis 2>/dev/null || python3 -m pip install -q --break-system-packages redis
fi
# the Postgres client-library matrix (tests/pg/matrix.rs): asyncpg, psycopg 3, node-postgres
if ! python3 -c 'import asyncpg, psycopg' 2>/dev/null; then
  echo "==> installing asyncpg and psycopg (pip)"
  pkgs=(asyncpg==0.32.0 'psycopg[binary]==3.3.9')
  python3 -m pip install -q "${pkgs[@]}" 2>/dev/null || python3 -m pip install -q --break-system-packages "${pkgs[@]}"
fi
if [ ! -d "$here/tests/pg/compat/node_modules/pg" ]; then
  echo "==> installing node-postgres (npm)"
  npm install --prefix "$here/tests/pg/compat" --no-audit --no-fund --silent >/dev/null
fi
if [ ! -d "$here/tests/redis/compat/node_modules/ioredis" ]; then
  echo "==> installing ioredis (npm)"
  npm install --prefix "$here/tests/redis/compat" --no-audit --no-fund --silent >/dev/null
fi

if ! have cargo; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "cargo is installed in ~/.cargo/bin: add it to PATH" >&2
  else
    echo "==> installing Rust (rustup)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt >/dev/null
  fi
fi
echo "==> prerequisites present"
