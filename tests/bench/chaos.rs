//! Smoke test of `pake chaos`: the real binary runs the chaos scenarios with fractions of a
//! second per phase — lab servers killed under load, Pake as a subprocess — and the
//! invariants that must hold are checked on its JSON: every acknowledged Postgres write is
//! found after recovery, errors are counted op by op, every scenario asked for has its row
//! (Sentinel included). Never a time: those are reported.

use pake::bench::chaos::report::{ChaosReport, Row, Status};
use std::process::Command;

/// Run `pake chaos --smoke` on `scenarios`; the run must succeed (it fails by itself on a
/// lost acknowledged write where none may be lost, or on clients never served again).
fn chaos(scenarios: &str) -> ChaosReport {
    let out = tempfile::tempdir().expect("temp dir");
    let run = Command::new(env!("CARGO_BIN_EXE_pake"))
        .args(["chaos", "--smoke", "--scenario", scenarios, "--out"])
        .arg(out.path())
        .output()
        .expect("run pake chaos");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "pake chaos failed\n{stdout}\n{stderr}"
    );
    let report = ChaosReport::read(&out.path().join("chaos.json")).expect("chaos.json");
    for name in scenarios.split(',') {
        assert!(
            stdout.contains(&format!("| {name} |")),
            "no row for {name}:\n{stdout}"
        );
    }
    report
}

fn row<'a>(r: &'a ChaosReport, name: &str) -> &'a Row {
    r.rows
        .iter()
        .find(|row| row.scenario == name)
        .unwrap_or_else(|| panic!("no row {name}: {:?}", r.rows))
}

/// A scenario that ran, recovered, and accounted for every op it attempted.
fn assert_ran(r: &Row) {
    assert_eq!(r.status, Status::Ran, "{}: {:?}", r.scenario, r.reason);
    assert!(
        r.recovery_ms.is_some(),
        "{}: not recovered: {:?}",
        r.scenario,
        r.notes
    );
    assert!(r.writes_acked > 0, "{}: nothing acknowledged", r.scenario);
    assert_eq!(r.acked_found + r.lost, r.writes_acked, "{}", r.scenario);
    let kinds: u64 = r.error_kinds.iter().map(|(_, n)| n).sum();
    assert_eq!(kinds, r.errors, "{}: every error has a kind", r.scenario);
    assert_eq!(
        r.errors_before_fault, 0,
        "{}: {:?}",
        r.scenario, r.error_kinds
    );
}

#[test]
fn chaos_pg_kills_lose_no_acknowledged_write() {
    let r = chaos("pg-primary-kill,pg-replica-kill,pg-replica-promote");
    let primary = row(&r, "pg-primary-kill");
    assert_ran(primary);
    assert_eq!(primary.lost, 0, "{:?}", primary.notes);
    assert!(
        primary.errors > 0,
        "clients saw the primary go: {primary:?}"
    );
    // writers only: every attempt was either acknowledged or failed
    assert_eq!(primary.ops, primary.writes_acked + primary.writes_unacked);
    assert_eq!(primary.errors, primary.writes_unacked);

    let replica = row(&r, "pg-replica-kill");
    assert_ran(replica);
    assert_eq!(replica.lost, 0, "{:?}", replica.notes);
    assert!(
        replica.notes.iter().any(|n| n.contains("after the kill")),
        "routing after the kill is reported: {:?}",
        replica.notes
    );

    // synchronous replication: nothing acknowledged is lost when the replica takes over
    let promote = row(&r, "pg-replica-promote");
    assert_ran(promote);
    assert_eq!(promote.lost, 0, "{:?}", promote.notes);
    assert!(
        promote
            .notes
            .iter()
            .any(|n| n.contains("after the promotion")),
        "writes flowed to the promoted replica: {:?}",
        promote.notes
    );
}

#[test]
fn chaos_redis_failovers_are_followed() {
    let r = chaos("redis-cluster-primary-kill,redis-sentinel-failover");
    let kill = row(&r, "redis-cluster-primary-kill");
    assert_ran(kill);
    assert!(kill.loss_allowed, "async replication: losses are reported");
    assert_eq!(kill.ops, kill.writes_acked + kill.writes_unacked);
    assert!(
        kill.notes.iter().any(|n| n.contains("was primary")),
        "the promotion is observed: {:?}",
        kill.notes
    );

    let sentinel = row(&r, "redis-sentinel-failover");
    assert_ran(sentinel);
    assert_eq!(
        sentinel.ops,
        sentinel.writes_acked + sentinel.writes_unacked
    );
    assert!(
        sentinel
            .notes
            .iter()
            .any(|n| n.contains("SENTINEL FAILOVER"))
            && sentinel.notes.iter().any(|n| n.contains("was primary")),
        "the forced failover and the promotion are reported: {:?}",
        sentinel.notes
    );
}
