#!/usr/bin/env bash
# Run redis-py's own test suite against one Redis URL (straight at Redis, or at Pake in
# front of it) and print the failing tests, for the README's compatibility table.
# usage: scripts/redis-py-suite.sh redis://127.0.0.1:6380/0 [out-file]
# The Redis behind the URL should run with --enable-debug-command yes (as the suite
# expects). Compare two runs with: comm -13 <(grep -E '^(FAILED|ERROR)' direct | sed 's/ - .*//' | sort) <(... pake ...)
set -euo pipefail
url=${1:?usage: $0 REDIS_URL [OUT]}
out=${2:-/dev/stdout}
version=8.1.0
here=$(cd "$(dirname "$0")/.." && pwd)
dir="$here/target/redis-py-suite"
if [ ! -d "$dir/redis-$version/tests" ]; then
  mkdir -p "$dir"
  python3 -m pip download -q "redis==$version" --no-binary :all: --no-deps -d "$dir"
  tar xzf "$dir/redis-$version.tar.gz" -C "$dir"
fi
python3 -c 'import pytest, pytest_asyncio, pytest_timeout, redis' 2>/dev/null ||
  python3 -m pip install -q "redis==$version" pytest pytest-asyncio pytest-timeout pytest-cov pytest-forked numpy ujson xxhash pybreaker
cd "$dir/redis-$version"
# test_sync/test_psync dial port 6380 themselves instead of the URL: left out
python3 -m pytest -q -p no:cacheprovider --timeout 20 --timeout-method thread \
  --redis-url "$url" --protocol 3 \
  tests/test_commands.py tests/test_monitor.py tests/test_pipeline.py tests/test_pubsub.py \
  tests/test_function.py tests/test_connection.py tests/test_scripting.py tests/test_encoding.py \
  tests/test_lock.py tests/test_connection_pool.py -k "not test_sync and not test_psync" -rfE >"$out" 2>&1 || true
grep -E '^(FAILED|ERROR)' "$out" | sed 's/ - .*//' || true
