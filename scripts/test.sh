#!/usr/bin/env bash
# Every test target (`make test`): built once, then run as two groups side by side, and the
# timing-sensitive insight suite alone after them.
#
# The integration suites wait on real servers far more than they compute: alone, the Redis
# suite keeps a 2-core machine 23 % busy over its ~110 s, the Postgres suite 73 % over its
# ~120 s; side by side the two take ~130 s. So the light, waiting-bound suites (Redis, the
# load-test harness, the CLI) run as one group beside everything else (the library's unit
# tests, the Postgres, insight and operations suites, the benches' smoke runs); each group
# is one `cargo test` whose binaries run one after another as usual, with the tests inside
# a binary in parallel as usual. A test target added under tests/ joins the heavier group
# unless listed in `light`. Each group's output goes to its own log, printed whole once both
# are done, so what CI shows reads as two ordinary `cargo test` runs. Exit status: non-zero
# when either group failed (both always run to the end: --no-fail-fast).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

light=(redis bench cli)
# alone, after both groups: the insight suite's index-advice checks compare savings measured
# from statement timings, and near-ties between a full and a partial index flip when the
# machine is shared (recover::drop_and_recover_through_pake failed once beside the others)
alone=(insight)

# every integration test target: tests/<name>.rs and tests/<name>/main.rs
rest=()
for f in tests/*.rs tests/*/main.rs; do
  [ -e "$f" ] || continue
  name=${f#tests/}
  name=${name%/main.rs}
  name=${name%.rs}
  [[ " ${light[*]} ${alone[*]} " == *" $name "* ]] || rest+=("$name")
done

args() { for t in "$@"; do printf -- '--test\n%s\n' "$t"; done; }
mapfile -t light_args < <(args "${light[@]}")
mapfile -t rest_args < <(args "${rest[@]}")
mapfile -t alone_args < <(args "${alone[@]}")

# one build, its output shown as it comes
$CARGO test --all-targets --no-run

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
start=$(date +%s)
$CARGO test --no-fail-fast "${light_args[@]}" >"$logs/light" 2>&1 &
light_pid=$!
rc_rest=0
$CARGO test --no-fail-fast --lib --bins --benches "${rest_args[@]}" >"$logs/rest" 2>&1 || rc_rest=$?
rc_light=0
wait "$light_pid" || rc_light=$?

echo "==> group 1: the library, ${rest[*]}, the bins and benches (exit $rc_rest)"
cat "$logs/rest"
echo "==> group 2: ${light[*]} (exit $rc_light)"
cat "$logs/light"
echo "==> both groups ran in $(($(date +%s) - start)) s side by side"
echo "==> alone: ${alone[*]}"
rc_alone=0
$CARGO test --no-fail-fast "${alone_args[@]}" || rc_alone=$?
echo "==> tests ran in $(($(date +%s) - start)) s"
[ "$rc_rest" -eq 0 ] && [ "$rc_light" -eq 0 ] && [ "$rc_alone" -eq 0 ]
