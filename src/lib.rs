//! Pake: a performance-tuning proxy for PostgreSQL (and Redis).
//!
//! * [`pg`]: the Postgres wire proxy — pooling, prepared statements in transaction mode,
//!   cancellation, session-state isolation.
//! * [`config`]: the typed TOML configuration and the quick-start flags.
//! * [`obs`]: metrics, logs, admin HTTP.
//! * [`lab`]: real PostgreSQL servers in temp dirs, for tests, benches and `pake demo`.
//! * [`bench`]: the load generator behind `pake bench` (scenarios in `loadtests/`).
//! * [`redis`]: the Redis proxy — RESP2/RESP3, standalone or cluster, coherent L1 cache.
//! * [`app`]: wiring it all into a running process (`pake serve`).
//! * [`ops`]: the health check for orchestrators (`pake orchestration --health-check`).
#![deny(unsafe_code)]
#![warn(clippy::large_futures)]

pub mod app;
pub mod bench;
pub mod config;
pub mod demo;
pub mod faults;
pub mod insight;
pub mod lab;
pub mod limits;
pub mod obs;
pub mod ops;
pub mod pg;
pub mod reactor;
pub mod redis;
pub mod tls;
