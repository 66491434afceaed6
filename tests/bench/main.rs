//! Smoke test of `pake bench`: the real binary runs real scenarios from `loadtests/` for a
//! second or so per target — lab PostgreSQL, Pake as a subprocess, PgBouncer, Redis,
//! twemproxy — and must finish with every target that ran reporting throughput and zero
//! errors. It asserts completion, never a speed: the numbers of a smoke run mean nothing.
//! `chaos` does the same for `pake chaos` (servers killed under load).

mod chaos;
mod own;

use pake::bench::report::{ScenarioReport, TargetReport};
use std::path::Path;
use std::process::Command;

/// Run `pake bench --smoke` on one scenario file and read its JSON back.
fn smoke(scenario: &str, extra: &[&str]) -> (ScenarioReport, tempfile::TempDir) {
    let out = tempfile::tempdir().expect("temp dir");
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("loadtests")
        .join(format!("{scenario}.toml"));
    let run = Command::new(env!("CARGO_BIN_EXE_pake"))
        .arg("bench")
        .arg("--scenario")
        .arg(&file)
        .arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .args(extra)
        .output()
        .expect("run pake bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "pake bench failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(scenario), "no table printed:\n{stdout}");
    let json = out.path().join(format!("{scenario}.json"));
    let report = ScenarioReport::read(&json).expect("results JSON");
    assert!(
        out.path().join(format!("{scenario}.svg")).exists(),
        "no SVG chart written"
    );
    (report, out)
}

fn target<'a>(r: &'a ScenarioReport, name: &str) -> &'a TargetReport {
    let case = r.cases.first().expect("a case");
    case.targets
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("target {name} did not run: {:?}", r.unavailable))
}

fn assert_clean(t: &TargetReport) {
    assert_eq!(t.errors, 0, "{}: {:?}", t.name, t.first_error);
    assert!(
        t.ops > 0 && t.ops_per_sec > 0.0,
        "{}: no operations",
        t.name
    );
    assert!(
        t.p50_us > 0 && t.p99_us >= t.p50_us,
        "{}: no latencies",
        t.name
    );
}

#[test]
fn pg_select_only_runs_every_target_without_errors() {
    let (r, out) = smoke("pg-select-only", &["--pake-workers", "1"]);
    assert!(r.unavailable.is_empty(), "{:?}", r.unavailable);
    for name in ["direct", "pake", "pgbouncer"] {
        assert_clean(target(&r, name));
    }
    assert_eq!(target(&r, "direct").ratio, Some(1.0));
    // the summary reads the JSON back and writes the Markdown block
    let md = out.path().join("BENCH.md");
    let run = Command::new(env!("CARGO_BIN_EXE_pake"))
        .args(["bench", "--summarize-only", "--out"])
        .arg(out.path())
        .arg("--markdown")
        .arg(&md)
        .output()
        .expect("run pake bench --summarize-only");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&md).expect("markdown written");
    assert!(
        text.contains("### pg-select-only") && text.contains("| pake |"),
        "{text}"
    );
}

#[test]
fn pg_many_clients_open_loop_runs_without_errors() {
    let (r, _out) = smoke(
        "pg-many-clients",
        &["--clients", "4,20", "--pake-workers", "1"],
    );
    assert_eq!(r.cases.len(), 2);
    for case in &r.cases {
        for t in &case.targets {
            assert_clean(t);
        }
    }
}

#[test]
fn idle_memory_is_measured_for_pake_and_pgbouncer() {
    let (r, _out) = smoke("idle-memory", &["--clients", "100", "--pake-workers", "1"]);
    for name in ["pake", "pgbouncer"] {
        let t = target(&r, name);
        assert_eq!(t.errors, 0, "{name}: {:?}", t.first_error);
        assert_eq!(t.ops, 100, "{name}: every idle client ran its query");
        assert!(t.rss_per_client_kib.is_some(), "{name}: no RSS figure");
    }
}

#[test]
fn redis_getset_runs_direct_and_twemproxy_without_errors() {
    let (r, _out) = smoke("redis-getset", &["--pake-workers", "1"]);
    for name in ["direct", "twemproxy"] {
        assert_clean(target(&r, name));
    }
    // Pake's Redis targets run once this build has the Redis proxy, and must be clean too
    for t in &r.cases[0].targets {
        assert_clean(t);
    }
    for u in &r.unavailable {
        assert!(u.target.starts_with("pake"), "{u:?}");
    }
}

/// Every client tracks (RESP3): Redis and Pake each push invalidations to the clients that
/// read a key another one writes, and nobody takes a push for a reply.
#[test]
fn redis_client_tracking_pushes_invalidations_through_pake_as_from_redis() {
    let (r, _out) = smoke("redis-client-tracking", &["--pake-workers", "1"]);
    for t in &r.cases[0].targets {
        assert_clean(t);
        let pushes = t.pushes_per_op.unwrap_or_default();
        assert!(pushes > 0.0, "{}: no invalidation reached a client", t.name);
    }
    assert!(r.unavailable.is_empty(), "{:?}", r.unavailable);
    assert!(r.cases[0].targets.iter().any(|t| t.name == "pake"));
}

#[test]
fn redis_remote_runs_every_target_through_the_delaying_link() {
    let (r, _out) = smoke("redis-remote", &["--pake-workers", "1"]);
    assert_eq!(r.scenario.link.map(|l| l.delay_us), Some(250));
    for t in &r.cases[0].targets {
        assert_clean(t);
        if t.name != "direct" {
            assert!(t.cpu_us_per_op.is_some(), "{}: no CPU/op", t.name);
        }
    }
    // behind a 250 µs one-way link no round trip is faster than 500 µs, whoever forwards
    // it, except GETs Pake answers from its L1
    let direct = target(&r, "direct");
    assert!(direct.p50_us >= 500, "direct p50 {} µs", direct.p50_us);
    for u in &r.unavailable {
        assert!(u.target.starts_with("pake"), "{u:?}");
    }
}
