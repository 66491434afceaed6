//! Read/write split across streaming replicas.
//!
//! * [`classify`]: is a statement read-only (once per shape, with sqlparser).
//! * [`topology`]: per database, the replicas' health and lag, the primary's WAL position,
//!   the function catalog, bans; sampled by a monitor on side connections.
//! * The session's `route` step combines these with the session's state (transaction,
//!   `SET pake.route`, read-your-writes) to pick the primary or a replica for each request.

pub mod classify;
pub mod topology;

pub use classify::{Class, Classification, Route};
pub use topology::Topology;
