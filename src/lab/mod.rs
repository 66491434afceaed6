//! Real servers (PostgreSQL; Redis standalone, cluster and Sentinel) on free ports in temp
//! dirs, for tests, benches and `pake demo`. This is product code: each test owns its
//! servers, so tests run in parallel, and everything is stopped and deleted on drop — also
//! when a test panics, and (by a parent-death signal) when the process is killed outright.

pub mod certs;
pub mod cli;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod transcript;
pub mod zipf;

pub use postgres::{HbaAuth, PgInstance, PgLab, PgOptions};
pub use redis::{RedisLab, RedisNode, RedisOptions, Topology};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("missing prerequisite: {0}")]
    Missing(String),
    #[error("{what} failed:\n{output}")]
    Failed { what: String, output: String },
    #[error("lab I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("lab client: {0}")]
    Client(String),
}

/// Poll `cond` until it holds or `limit` passes (for tests and load drivers waiting on a
/// real server: replication, tracking re-armed, a metric moving).
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}
