//! Operations tests: the `pake orchestration --health-check` binary against real servers
//! (lab PostgreSQL with a replica, redis-server, a `pake serve` subprocess); the alert rules
//! and dashboard queries of `docker/` evaluated by a real Prometheus scraping a real Pake;
//! and the deployment configs loaded by Pake's own config code. Each test owns its servers.

mod deploy;
mod harness;
mod health;
mod monitoring;
mod shape;
