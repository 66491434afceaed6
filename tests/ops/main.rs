//! Operations tests: the `pake orchestration --health-check` binary against real servers
//! (lab PostgreSQL with a replica, redis-server, a `pake serve` subprocess), and the
//! deployment configs in `docker/` loaded by Pake's own config code. Each test owns its
//! servers.

mod deploy;
mod harness;
mod health;
