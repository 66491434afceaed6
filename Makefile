# Two commands: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

.PHONY: demo test deps build release lint fmt bench bench-pg clean check-deploy

## Start a local lab (Postgres), put Pake in front, run a short load test, show how to connect.
demo: deps release
	./target/release/pake demo

## Everything CI runs: formatting, lints, deployment files, unit and integration tests against real servers.
test: deps lint check-deploy
	$(CARGO) test --all-targets --no-fail-fast

deps:
	@./scripts/deps.sh

build:
	$(CARGO) build

release:
	$(CARGO) build --release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Offline validation of docker/: promtool (rules + rule tests), compose schema and references,
## Kubernetes manifests, Dockerfile, Grafana dashboard (see scripts/check-deploy.sh).
check-deploy:
	./scripts/check-deploy.sh

## Criterion micro-benchmarks.
bench:
	$(CARGO) bench

## pgbench -S side by side: direct Postgres, Pake, PgBouncer (see loadtests/pgbench-compare.sh).
bench-pg: deps release
	./loadtests/pgbench-compare.sh

clean:
	$(CARGO) clean
