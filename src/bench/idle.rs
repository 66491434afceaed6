//! Memory per idle client: the proxy's resident set (VmRSS) with one warm client, then with
//! N more logged-in clients that each ran one query and went quiet, divided by N. Measured
//! for every target that is a single process (Pake, PgBouncer); direct Postgres forks a
//! backend per client, so it has no such figure.

use super::env::Target;
use super::measure::Client;
use super::report::{CaseReport, TargetReport};
use super::rng::Rng;
use super::runner::{open_clients, open_counted, Shape};
use super::scenario::Scenario;
use indicatif::ProgressBar;
use std::time::Duration;

/// Resident memory of `pid` in KiB, from `/proc/PID/status`.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub async fn run_case(
    s: &Scenario,
    env: &super::env::Env,
    clients: usize,
    progress: &ProgressBar,
) -> CaseReport {
    let shape = Shape::of(s);
    let mut targets = Vec::new();
    for t in &env.targets {
        progress.set_message(format!("{}: {clients} idle clients on {}", s.name, t.name));
        targets.push(measure(t, &shape, clients).await);
        progress.inc(1);
    }
    CaseReport {
        clients,
        active: 0,
        rate: None,
        targets,
    }
}

async fn measure(t: &Target, shape: &Shape, n: usize) -> TargetReport {
    let mut report = TargetReport {
        name: t.name.clone(),
        ..TargetReport::default()
    };
    let Some(pid) = t.pid else {
        report.first_error = Some("not a single process: no per-client memory figure".into());
        return report;
    };
    let mut rng = Rng::new(7);
    // one warm client first: pools, caches and buffers that every client shares
    let mut warm = open_clients(t, shape, 1).await;
    for c in warm.iter_mut().flatten() {
        let _ = c.request(&mut rng).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = vm_rss_kib(pid);
    let (mut idle, failed) = open_counted(t, shape, n).await;
    report.errors = failed.errors;
    report.first_error = failed.first_error;
    for c in &mut idle {
        if let Err(e) = c.request(&mut rng).await {
            report.errors += 1;
            report.first_error.get_or_insert(e);
        } else {
            report.ops += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = vm_rss_kib(pid);
    report.rss_before_kib = before;
    report.rss_after_kib = after;
    if let (Some(b), Some(a)) = (before, after) {
        let held = idle.len().max(1) as f64;
        report.rss_per_client_kib = Some(a.saturating_sub(b) as f64 / held);
    }
    drop(idle);
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    report
}
