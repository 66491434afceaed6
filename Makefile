# Two commands: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

.PHONY: demo test deps build release lint fmt fuzz fuzz-check bench bench-micro bench-smoke bench-pg bench-redis bench-syscalls chaos abuse clean check-deploy

## Start a local lab (Postgres primary + replica, Redis Cluster), put Pake in front, run a
## short load (pgbench, a query missing an index, redis-benchmark), print the query report
## with its index advice and how to connect.
demo: deps release
	./target/release/pake demo

## Everything CI runs: formatting, lints, deployment files, unit and integration tests against real servers,
## and every fuzz target for a few seconds from its saved corpus.
test: deps lint check-deploy
	CARGO=$(CARGO) ./scripts/test.sh
	$(MAKE) fuzz-check

## Coverage-guided fuzzing on the stable toolchain (libFuzzer through libfuzzer-sys, see
## scripts/fuzz.sh): every target in fuzz/ until FUZZ_RUNS execs (10 M) or FUZZ_SECONDS (2 h),
## whichever comes first, one target per core; prints execs and execs/s per target, fails on
## a crash (the input is kept in fuzz/work/artifacts/<target>/).
FUZZ_SECONDS ?= 7200
FUZZ_RUNS ?= 10000000
fuzz: deps
	FUZZ_RUNS=$(FUZZ_RUNS) ./scripts/fuzz.sh run $(FUZZ_SECONDS)

## Each fuzz target for FUZZ_CHECK_SECONDS from the committed seeds in fuzz/corpus/.
FUZZ_CHECK_SECONDS ?= 4
fuzz-check: deps
	./scripts/fuzz.sh check $(FUZZ_CHECK_SECONDS)

deps:
	@./scripts/deps.sh

build:
	$(CARGO) build

release:
	$(CARGO) build --release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --all

## Offline validation of docker/: promtool (rules + rule tests), compose schema and references,
## Kubernetes manifests, Dockerfile, Grafana dashboard (see scripts/check-deploy.sh).
check-deploy:
	./scripts/check-deploy.sh

## Every load scenario in loadtests/ end to end (lab servers and peers included), results as
## JSON + SVG in bench-results/, and the results block of BENCHMARKS.md rewritten. ~30 min.
bench: deps release
	rm -f bench-results/*.json bench-results/*.svg
	./target/release/pake bench --scenario loadtests/*.toml --out bench-results --markdown BENCHMARKS.md

## Criterion micro-benchmarks (listed in BENCHMARKS.md).
bench-micro:
	$(CARGO) bench

## Seconds per scenario: proves every scenario runs (the numbers mean nothing).
bench-smoke: deps build
	./target/debug/pake bench --smoke --scenario loadtests/*.toml --out bench-results/smoke

## pgbench -S side by side: direct Postgres, Pake, PgBouncer (see loadtests/pgbench-compare.sh).
bench-pg: deps release
	./loadtests/pgbench-compare.sh

## redis-benchmark side by side: direct Redis, Pake (L1 on/off), twemproxy.
bench-redis: deps release
	./loadtests/redis-benchmark-compare.sh

## System calls per transaction, Pake and PgBouncer (strace -c; see loadtests/syscalls.sh).
bench-syscalls: deps release
	./loadtests/syscalls.sh

## Chaos suite: kill -9 servers under load through Pake (Postgres primary and replica, a Redis
## Cluster primary) and a forced Sentinel failover; client errors, recovery time, writes
## acknowledged vs found. ~1 min.
## Table on stdout, JSON in bench-results/chaos/ (see BENCHMARKS.md, "Chaos suite").
chaos: deps release
	./loadtests/chaos.sh --out bench-results/chaos

## Abuse suite: a 200k-key MGET, 1M pipelined commands never read, a slow reader, 2^31
## lengths, deep nesting, garbage startups, 2,000 stalled logins, huge statements — against
## both listeners while a good client keeps asking. Per case: answer, peak and settled RSS,
## the good client's worst latency. ~3 min; table on stdout, JSON in bench-results/abuse.json.
abuse: deps release
	./loadtests/abuse.sh

clean:
	$(CARGO) clean
