//! A pgbench-S-shaped load to compare two endpoints in one run — Pake with analysis on vs off
//! (the issue's ≥ 0.97× target). Each client runs the pgbench "select only" transaction
//! (`SELECT abalance FROM pgbench_accounts WHERE aid = $1`, random aid) on a prepared
//! statement; rounds alternate between the two URLs so drift (caches, CPU frequency, other
//! load) hits both alike.
//!
//! The same comparison with pgbench itself, against two Pake listeners (insight on/off):
//! ```text
//! pgbench -i -s 10 -h 127.0.0.1 -p PRIMARY_PORT postgres
//! for r in 1 2 3; do
//!   pgbench -S -M prepared -c 50 -j 2 -T 20 -h 127.0.0.1 -p PAKE_ON_PORT  postgres
//!   pgbench -S -M prepared -c 50 -j 2 -T 20 -h 127.0.0.1 -p PAKE_OFF_PORT postgres
//! done   # compare the "tps =" lines: on / off
//! ```

use crate::lab::postgres::{connect, describe};
use crate::lab::LabError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much load.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub clients: usize,
    /// Per round and URL.
    pub round: Duration,
    pub rounds: usize,
    /// Rows in pgbench_accounts (aid 1..=accounts).
    pub accounts: i32,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            clients: 20,
            round: Duration::from_secs(5),
            rounds: 3,
            accounts: 100_000,
        }
    }
}

/// Transactions per second of each URL, and `b / a`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub tps_a: f64,
    pub tps_b: f64,
    pub ratio: f64,
}

/// Create and fill `pgbench_accounts` (as `pgbench -i` would, minus the other tables) at
/// `url`, unless it already has rows.
pub async fn prepare(url: &str, accounts: i32) -> Result<(), LabError> {
    let c = connect(url).await?;
    c.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS pgbench_accounts (aid int PRIMARY KEY, bid int, \
         abalance int, filler char(84));
         INSERT INTO pgbench_accounts SELECT g, 1, 0, '' FROM generate_series(1, {accounts}) g
         WHERE NOT EXISTS (SELECT 1 FROM pgbench_accounts);
         ANALYZE pgbench_accounts;"
    ))
    .await
    .map_err(|e| LabError::Client(describe(&e)))
}

/// Run `spec` against `a` and `b`, alternating rounds; both must have `pgbench_accounts`.
pub async fn compare(a: &str, b: &str, spec: &LoadSpec) -> Result<Comparison, LabError> {
    let (mut done_a, mut done_b) = (0u64, 0u64);
    for _ in 0..spec.rounds.max(1) {
        done_a += run(a, spec).await?;
        done_b += run(b, spec).await?;
    }
    let secs = spec.round.as_secs_f64() * spec.rounds.max(1) as f64;
    let (tps_a, tps_b) = (done_a as f64 / secs, done_b as f64 / secs);
    Ok(Comparison {
        tps_a,
        tps_b,
        ratio: if tps_a > 0.0 { tps_b / tps_a } else { 0.0 },
    })
}

/// One round against `url`: transactions completed.
pub async fn run(url: &str, spec: &LoadSpec) -> Result<u64, LabError> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + spec.round;
    let mut tasks = Vec::new();
    for i in 0..spec.clients.max(1) {
        let client = connect(url).await?;
        let done = done.clone();
        let accounts = spec.accounts.max(1);
        tasks.push(tokio::spawn(async move {
            let stmt = client
                .prepare("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
                .await
                .map_err(|e| LabError::Client(describe(&e)))?;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1);
            while Instant::now() < deadline {
                // xorshift: a cheap, reproducible aid sequence per client
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let aid = (x % accounts as u64) as i32 + 1;
                client
                    .query_opt(&stmt, &[&aid])
                    .await
                    .map_err(|e| LabError::Client(describe(&e)))?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), LabError>(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| LabError::Client(format!("load task: {e}")))??;
    }
    Ok(done.load(Ordering::Relaxed))
}
