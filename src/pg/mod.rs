//! The Postgres side of Pake: a wire-protocol proxy that pools server connections.
//!
//! Request path (see `session` for the steps):
//! `listener` → `login` (`startup`, `auth`) → `session` (`request` → `attach`/`pool` →
//! `response`) → `server`. Framing is in `wire`, errors and their SQLSTATEs in `error`.

pub mod auth;
pub mod auth_query;
pub mod build;
pub mod cancel;
pub mod cluster;
pub mod console;
pub mod encoding;
pub mod error;
pub use crate::limits;
pub mod listener;
pub mod login;
pub mod login_params;
#[cfg(test)]
pub mod memory;
pub mod notify;
pub mod params;
pub mod passthrough;
pub mod pending;
pub mod pending_settings;
pub mod pool;
pub mod prepared;
pub mod prepared_view;
pub mod proxy;
pub mod reload;
pub mod replication;
pub mod route;
pub mod server;
pub mod session;
pub mod spare;
pub mod sql;
pub mod startup;
pub mod stream;
pub mod wildcard;
pub mod wire;

/// The pool, the server connection and the session, in memory under paused time.
#[cfg(test)]
mod tests;
