#!/usr/bin/env bash
# Run asyncpg's own test suite against one Postgres URL (straight at Postgres, or at Pake in
# front of it) and print the failing tests, for the README's compatibility table.
# usage: scripts/pg-driver-suite.sh postgres://USER:PASS@HOST:PORT/DB [out-file]
# The user must be a superuser (the suite creates roles, databases and extensions).
# Compare two runs with: comm -13 <(grep -E '^(FAILED|ERROR)' direct | sed 's/ - .*//' | sort) <(... pake ...)
set -euo pipefail
url=${1:?usage: $0 POSTGRES_URL [OUT]}
out=${2:-/dev/stdout}
version=0.32.0
here=$(cd "$(dirname "$0")/.." && pwd)
dir="$here/target/pg-driver-suite"
if [ ! -d "$dir/run/tests" ]; then
  mkdir -p "$dir/run"
  # only the sdist ships the tests (asyncpg's build needs Cython: metadata is prepared once)
  python3 -m pip download -q "asyncpg==$version" --no-binary asyncpg --no-deps -d "$dir"
  tar xzf "$dir/asyncpg-$version.tar.gz" -C "$dir"
  # run the tests outside the source tree, against the installed (compiled) asyncpg
  cp -r "$dir/asyncpg-$version/tests" "$dir/run/"
fi
python3 -c 'import pytest, pytest_timeout, asyncpg' 2>/dev/null ||
  python3 -m pip install -q "asyncpg==$version" pytest pytest-timeout
# postgres://user:pass@host:port/db → the PG* variables asyncpg's test base reads
rest=${url#*://}
creds=${rest%%@*}
hostpart=${rest#*@}
export PGUSER=${creds%%:*} PGPASSWORD=${creds#*:}
export PGHOST=${hostpart%%:*}
port_db=${hostpart#*:}
export PGPORT=${port_db%%/*} PGDATABASE=${port_db#*/}
cd "$dir/run"
# test_connect manages the server's own configuration (pg_hba, SSL files, restarts) and
# test__sourcecode lints asyncpg's source: neither is about the connection under test
python3 -m pytest -q -p no:cacheprovider --timeout 60 tests \
  --ignore tests/test_connect.py --ignore tests/test__sourcecode.py -rfE >"$out" 2>&1 || true
grep -E '^(FAILED|ERROR)' "$out" | sed 's/ - .*//' || true
