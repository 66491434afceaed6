#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain: libFuzzer (through the libfuzzer-sys
# crate, which builds it from source with the system C++ compiler) linked into targets built
# with SanitizerCoverage passes and no sanitizer. No cargo-fuzz install, no nightly.
#
#   scripts/fuzz.sh build               build every target (fuzz/target, instrumented)
#   scripts/fuzz.sh run [SECONDS] [T..] fuzz each target for SECONDS (default 60), or until
#                                       FUZZ_RUNS execs if that comes first (unset: no
#                                       limit), FUZZ_JOBS targets at a time (default: the
#                                       number of cores); new inputs go to
#                                       fuzz/work/corpus/<target>, crashes to
#                                       fuzz/work/artifacts/<target>
#   scripts/fuzz.sh check [SECONDS]     each target for SECONDS (default 4; FUZZ_JOBS at a time) from the saved
#                                       seeds in fuzz/corpus/<target>, nothing written there
#   scripts/fuzz.sh list                the target names
#
# Exit status is non-zero when a target crashed, leaked or timed out; the input that did it
# is kept under fuzz/work/artifacts/<target>/ and named in the output.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

host=$(rustc -vV | sed -n 's/^host: //p')
profile=release
# slowest first, so `run` with FUZZ_JOBS > 1 keeps every core busy to the end
targets=(sql_fingerprint pg_frontend sql_normalize resp_decode pg_startup redis_keys pg_scram)

build() {
  # --target keeps the coverage flags off build scripts and proc macros
  RUSTFLAGS="-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cforce-frame-pointers" \
    cargo build --profile "$profile" --locked --target "$host" --bins
}

# run_one TARGET SECONDS CORPUS_DIRS... : prints one summary line, returns libFuzzer's status
run_one() {
  local t=$1 secs=$2
  shift 2
  local art="work/artifacts/$t"
  mkdir -p "$art"
  local log
  log=$(mktemp)
  local rc=0
  # rss_limit: a target that needs more than 2 GB for a 4 KB input is a bug; -timeout: a
  # single input taking 10 s is one too (the normaliser and the lexer must stay linear)
  "target/$host/$profile/$t" "$@" -max_total_time="$secs" -runs="${FUZZ_RUNS:--1}" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$art/" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  local execs speed
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  printf '%-16s %12s execs %9s execs/s  %s\n' "$t" "${execs:-?}" "${speed:-?}" \
    "$([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)")"
  if [ $rc -ne 0 ]; then
    grep -E 'panicked|ERROR|SUMMARY|Test unit written|==[0-9]+==' "$log" | head -n 20 >&2 || true
  fi
  rm -f "$log"
  return $rc
}

# side_by_side SECONDS MODE: every target, at most FUZZ_JOBS (default: the cores) at once,
# each printing into its own file, shown in order; MODE `keep` grows work/corpus/<target>,
# `scratch` writes new inputs to a temporary directory (the committed seeds stay as they are)
side_by_side() {
  local secs=$1 mode=$2 jobs out t failed=0
  jobs=${FUZZ_JOBS:-$(nproc)}
  out=$(mktemp -d)
  for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    (
      dir="$out/$t.corpus"
      [ "$mode" = keep ] && dir="work/corpus/$t"
      mkdir -p "$dir"
      rc=0
      run_one "$t" "$secs" "$dir" "corpus/$t" >"$out/$t" 2>&1 || rc=$?
      echo "$rc" >"$out/$t.rc"
    ) &
  done
  wait || true
  for t in "${targets[@]}"; do
    cat "$out/$t"
    [ "$(cat "$out/$t.rc" 2>/dev/null)" = 0 ] || failed=1
  done
  rm -rf "$out"
  return $failed
}

cmd=${1:-run}
shift || true
case "$cmd" in
  list) printf '%s\n' "${targets[@]}" ;;
  build) build ;;
  run)
    secs=${1:-60}
    shift || true
    [ $# -gt 0 ] && targets=("$@")
    build
    side_by_side "$secs" keep
    ;;
  check)
    secs=${1:-4}
    profile=fuzz-check
    build
    side_by_side "$secs" scratch
    ;;
  *) echo "usage: $0 build | run [SECONDS] [TARGET...] | check [SECONDS] | list" >&2; exit 2 ;;
esac
