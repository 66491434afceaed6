//! `pake chaos`: the chaos suite. Each scenario starts real servers from the lab and the
//! real `pake serve` binary in front of them, runs a steady paced load through Pake, injects
//! one fault (kill -9 of a Postgres primary or replica, of a Redis Cluster primary…), keeps
//! the load on until every client is served again and a few seconds more, then checks every
//! acknowledged write against what the servers hold. It reports, never asserts a time:
//! client errors, stalls, time to recovery, writes acknowledged vs found.
//!
//! * [`SCENARIOS`]: the list; a scenario is a name and one async function.
//! * [`load`]: paced clients; [`ledger`]: what they saw; [`Verdict`]: acked vs found.
//! * [`pg`], [`redis`]: the scenarios; [`report`]: table and JSON; [`cli`]: the command.

pub mod cli;
pub mod ledger;
pub mod load;
pub mod pg;
pub mod redis;
pub mod report;

use super::peers::pake::PakeBinary;
use super::BenchError;
use ledger::Summary;
use load::{Load, Pace};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Timings and load shared by every scenario of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Concurrent clients (connections through Pake).
    pub clients: usize,
    /// Ops per second per client.
    pub rate: f64,
    /// Load before the fault.
    pub steady_secs: f64,
    /// How long a killed server stays down before it is restarted (scenarios that restart).
    pub down_secs: f64,
    /// Load kept on after every client is served again.
    pub settle_secs: f64,
    /// Give up waiting for recovery after this long (the row then says so).
    pub limit_secs: f64,
    /// An op without an answer after this long fails.
    pub op_timeout_secs: f64,
    /// A successful op slower than this counts as a stall (and as a disruption).
    pub stall_ms: u64,
}

impl Plan {
    /// The suite's defaults: about a minute and a half for all scenarios.
    pub fn standard() -> Plan {
        Plan {
            clients: 8,
            rate: 50.0,
            steady_secs: 3.0,
            down_secs: 2.0,
            settle_secs: 3.0,
            limit_secs: 60.0,
            op_timeout_secs: 5.0,
            stall_ms: 1000,
        }
    }

    /// Fractions of a second per phase: proves the scenarios run (the smoke test).
    pub fn smoke() -> Plan {
        Plan {
            clients: 4,
            steady_secs: 0.5,
            down_secs: 0.5,
            settle_secs: 0.5,
            limit_secs: 30.0,
            ..Plan::standard()
        }
    }

    pub fn pace(&self) -> Pace {
        Pace {
            rate: self.rate,
            op_timeout: secs(self.op_timeout_secs),
            stall: Duration::from_millis(self.stall_ms),
        }
    }
}

/// Seconds from the command line (negative or NaN → zero).
pub fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

/// What a scenario needs: the plan and the Pake to run.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub plan: Plan,
    pub bin: PakeBinary,
}

/// What a scenario found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub summary: Summary,
    pub verdict: Verdict,
    /// What happened, in a few words each (ports, promotions, routing before and after).
    pub notes: Vec<String>,
}

/// Acknowledged writes against what the servers hold after recovery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    pub acked: u64,
    pub acked_found: u64,
    /// Failed writes (outcome unknown to the client) that were applied all the same.
    pub unacked: u64,
    pub unacked_found: u64,
}

impl Verdict {
    pub fn of(summary: &Summary, present: &HashSet<u64>) -> Verdict {
        let found = |ids: &[u64]| ids.iter().filter(|id| present.contains(id)).count() as u64;
        Verdict {
            acked: summary.acked.len() as u64,
            acked_found: found(&summary.acked),
            unacked: summary.unacked.len() as u64,
            unacked_found: found(&summary.unacked),
        }
    }

    pub fn lost(&self) -> u64 {
        self.acked - self.acked_found
    }
}

pub type Run = Pin<Box<dyn Future<Output = Result<Outcome, BenchError>> + Send>>;

/// One chaos scenario: adding one is a row here and one async function.
pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    /// Acknowledged writes may be lost by design (Redis replicates asynchronously): the
    /// loss is reported, not a failure of the run.
    pub loss_allowed: bool,
    pub run: fn(Ctx) -> Run,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "pg-primary-kill",
        what: "kill -9 the Postgres primary under write load, restart it on its port and data dir",
        loss_allowed: false,
        run: |ctx| Box::pin(pg::primary_kill(ctx)),
    },
    Scenario {
        name: "pg-replica-kill",
        what: "kill -9 the streaming replica under read+write load; reads fall back to the primary",
        loss_allowed: false,
        run: |ctx| Box::pin(pg::replica_kill(ctx)),
    },
    Scenario {
        name: "pg-replica-promote",
        what: "kill -9 the Postgres primary under write load and promote the replica (synchronous replication); writes move to it",
        loss_allowed: false,
        run: |ctx| Box::pin(pg::replica_promote(ctx)),
    },
    Scenario {
        name: "redis-cluster-primary-kill",
        what: "kill -9 a primary of a 3-primary Redis Cluster (1 replica each) under write load",
        loss_allowed: true,
        run: |ctx| Box::pin(redis::cluster_primary_kill(ctx)),
    },
    Scenario {
        name: "redis-sentinel-failover",
        what: "force a Sentinel failover (SENTINEL FAILOVER) under write load",
        loss_allowed: true,
        run: |ctx| Box::pin(redis::sentinel_failover(ctx)),
    },
];

pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Consecutive successes each client needs, all started after the fault, to count as served.
const STREAK: usize = 3;

/// For faults without a repair step: errors may take a moment to show (a health check, a
/// node timeout), so "served again" is judged on ops started this long after the fault.
pub const GRACE: Duration = Duration::from_secs(1);

/// After the fault (at `fault`): wait until every client has been served again by ops
/// started at or after `since` (or the plan's limit passes), keep the load on for the settle
/// time, stop it, and sum up. Notes say when the limit was hit.
pub async fn until_recovered(
    load: Load,
    plan: &Plan,
    fault: Duration,
    since: Duration,
    notes: &mut Vec<String>,
) -> Summary {
    let deadline = tokio::time::Instant::now() + secs(plan.limit_secs);
    while !load.ledger.settled(since, STREAK) {
        if tokio::time::Instant::now() > deadline {
            notes.push(format!(
                "clients were not all served again within {} s",
                plan.limit_secs
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(secs(plan.settle_secs)).await;
    load.stop().await.summary(fault)
}

/// Run a blocking lab step (start, kill, restart) without stalling the load's tasks.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BenchError> + Send + 'static,
) -> Result<T, BenchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BenchError::Client(format!("lab thread: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_counts_acked_and_unacked_found() {
        let summary = Summary {
            acked: vec![1, 2, 3],
            unacked: vec![4, 5],
            ..Summary::default()
        };
        let present: HashSet<u64> = [1, 3, 5].into_iter().collect();
        let v = Verdict::of(&summary, &present);
        assert_eq!(
            v,
            Verdict {
                acked: 3,
                acked_found: 2,
                unacked: 2,
                unacked_found: 1
            }
        );
        assert_eq!(v.lost(), 1);
    }

    #[test]
    fn scenario_names_are_unique_and_found() {
        for s in SCENARIOS {
            assert_eq!(scenario(s.name).map(|f| f.name), Some(s.name));
        }
        let names: HashSet<_> = SCENARIOS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), SCENARIOS.len());
    }
}
