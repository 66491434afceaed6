//! The chaos suite's results: one row per scenario, printed as a Markdown table (ready for
//! BENCHMARKS.md) and written as `OUT/chaos.json`.

use super::{Outcome, Plan, Scenario};
use crate::bench::report::Machine;
use crate::bench::BenchError;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChaosReport {
    pub machine: Machine,
    /// Unix time the run started.
    pub started_at: u64,
    pub plan: Plan,
    pub rows: Vec<Row>,
}

/// Whether a scenario ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ran,
    /// The lab cannot build this topology yet, or a program is missing.
    Unavailable,
    /// Setup or verification failed (the reason says which).
    Failed,
}

/// One scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub what: String,
    pub status: Status,
    /// Why it did not run, or failed.
    pub reason: Option<String>,
    /// Ops the clients attempted (each connect-and-query or command counts once).
    pub ops: u64,
    /// Ops that failed, as the clients saw them.
    pub errors: u64,
    /// Of those, errors before the fault (a steady state that was not clean).
    pub errors_before_fault: u64,
    /// Successful ops slower than the plan's stall threshold.
    pub stalled: u64,
    pub max_latency_ms: f64,
    /// Fault to the first prompt success after the last disrupted op; 0 when no op was
    /// disrupted; absent when the clients were not served again (or it did not run).
    pub recovery_ms: Option<f64>,
    pub writes_acked: u64,
    pub acked_found: u64,
    pub lost: u64,
    /// Failed writes, and how many of them were applied all the same.
    pub writes_unacked: u64,
    pub unacked_found: u64,
    /// Acknowledged writes may be lost by design (asynchronous replication).
    pub loss_allowed: bool,
    /// Error texts and counts, most frequent first.
    pub error_kinds: Vec<(String, u64)>,
    pub notes: Vec<String>,
}

impl Row {
    fn empty(s: &Scenario, status: Status, reason: Option<String>) -> Row {
        Row {
            scenario: s.name.into(),
            what: s.what.into(),
            status,
            reason,
            ops: 0,
            errors: 0,
            errors_before_fault: 0,
            stalled: 0,
            max_latency_ms: 0.0,
            recovery_ms: None,
            writes_acked: 0,
            acked_found: 0,
            lost: 0,
            writes_unacked: 0,
            unacked_found: 0,
            loss_allowed: s.loss_allowed,
            error_kinds: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn ran(s: &Scenario, o: Outcome) -> Row {
        let sum = &o.summary;
        Row {
            ops: sum.ops,
            errors: sum.errors,
            errors_before_fault: sum.errors_before_fault,
            stalled: sum.stalled,
            max_latency_ms: ms(sum.max_latency),
            recovery_ms: sum.recovery.map(ms),
            writes_acked: o.verdict.acked,
            acked_found: o.verdict.acked_found,
            lost: o.verdict.lost(),
            writes_unacked: o.verdict.unacked,
            unacked_found: o.verdict.unacked_found,
            error_kinds: sum.kinds.clone(),
            notes: o.notes,
            ..Row::empty(s, Status::Ran, None)
        }
    }

    pub fn unavailable(s: &Scenario, reason: String) -> Row {
        Row::empty(s, Status::Unavailable, Some(reason))
    }

    pub fn failed(s: &Scenario, reason: String) -> Row {
        Row::empty(s, Status::Failed, Some(reason))
    }

    /// What makes the run fail: not run for a reason other than "unavailable", not
    /// recovered, or an acknowledged write lost where none may be.
    pub fn problem(&self) -> Option<String> {
        match self.status {
            Status::Unavailable => None,
            Status::Failed => Some(format!(
                "{}: {}",
                self.scenario,
                self.reason.as_deref().unwrap_or("failed")
            )),
            Status::Ran if self.recovery_ms.is_none() => {
                Some(format!("{}: clients were not served again", self.scenario))
            }
            Status::Ran if self.lost > 0 && !self.loss_allowed => Some(format!(
                "{}: {} acknowledged write(s) lost",
                self.scenario, self.lost
            )),
            Status::Ran => None,
        }
    }
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

impl ChaosReport {
    /// The Markdown table, then one line per scenario with its errors and notes.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| scenario | ops | client errors | stalls >1 s | recovery | writes acked | acked found | lost |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            if r.status != Status::Ran {
                let what = match r.status {
                    Status::Unavailable => "not available yet",
                    _ => "failed",
                };
                let _ = writeln!(out, "| {} | {what} | | | | | | |", r.scenario);
                continue;
            }
            let recovery = match r.recovery_ms {
                Some(ms) if ms <= 0.0 => "0 (no disruption)".to_string(),
                Some(ms) => format!("{:.2} s", ms / 1000.0),
                None => "not recovered".to_string(),
            };
            let lost = if r.loss_allowed && r.lost > 0 {
                format!("{} (async replication)", r.lost)
            } else {
                r.lost.to_string()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                r.ops,
                r.errors,
                r.stalled,
                recovery,
                r.writes_acked,
                r.acked_found,
                lost
            );
        }
        out.push('\n');
        for r in &self.rows {
            let mut parts: Vec<String> = r.reason.iter().cloned().collect();
            parts.extend(r.notes.iter().cloned());
            if r.errors_before_fault > 0 {
                parts.push(format!(
                    "{} error(s) before the fault",
                    r.errors_before_fault
                ));
            }
            if r.writes_unacked > 0 {
                parts.push(format!(
                    "{} failed write(s), {} of them applied anyway",
                    r.writes_unacked, r.unacked_found
                ));
            }
            if !r.error_kinds.is_empty() {
                let kinds: Vec<String> = r
                    .error_kinds
                    .iter()
                    .take(3)
                    .map(|(k, n)| format!("{n}× {k}"))
                    .collect();
                parts.push(format!("errors: {}", kinds.join("; ")));
            }
            if r.status == Status::Ran {
                parts.push(format!("slowest op {:.0} ms", r.max_latency_ms));
            }
            let _ = writeln!(out, "- **{}**: {}", r.scenario, parts.join("; "));
        }
        out
    }

    /// Write `DIR/chaos.json`; returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, BenchError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("chaos.json");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| BenchError::Client(format!("encoding results: {e}")))?;
        std::fs::write(&path, text)?;
        Ok(path)
    }

    pub fn read(path: &Path) -> Result<ChaosReport, BenchError> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| BenchError::Scenario {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::chaos::{ledger::Summary, Verdict};

    fn outcome(lost: u64) -> Outcome {
        Outcome {
            summary: Summary {
                ops: 100,
                errors: 7,
                recovery: Some(std::time::Duration::from_millis(2500)),
                ..Summary::default()
            },
            verdict: Verdict {
                acked: 90,
                acked_found: 90 - lost,
                unacked: 7,
                unacked_found: 1,
            },
            notes: vec!["primary down 2.0 s".into()],
        }
    }

    #[test]
    fn table_has_a_row_per_scenario_and_problems_are_named() {
        let named = |n| super::super::scenario(n).expect("scenario in the list");
        let pg = named("pg-primary-kill");
        let redis = named("redis-cluster-primary-kill");
        let report = ChaosReport {
            machine: Machine::default(),
            started_at: 0,
            plan: Plan::smoke(),
            rows: vec![
                Row::ran(pg, outcome(0)),
                Row::ran(redis, outcome(2)),
                Row::unavailable(
                    named("redis-sentinel-failover"),
                    "not available yet: no lab".into(),
                ),
            ],
        };
        let t = report.table();
        assert!(
            t.contains("| pg-primary-kill | 100 | 7 | 0 | 2.50 s | 90 | 90 | 0 |"),
            "{t}"
        );
        assert!(t.contains("| 2 (async replication) |"), "{t}");
        assert!(
            t.contains("| redis-sentinel-failover | not available yet |"),
            "{t}"
        );
        assert!(report.rows.iter().all(|r| r.problem().is_none()));
        let lost_pg = Row::ran(pg, outcome(1));
        assert!(lost_pg
            .problem()
            .is_some_and(|p| p.contains("1 acknowledged")));
    }
}
