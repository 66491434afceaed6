//! The Postgres client-library compatibility matrix (issue 16): one scenario script each for
//! asyncpg and psycopg 3 (Python; psycopg's libpq pipeline mode included) and node-postgres,
//! run straight against the lab's Postgres and through Pake in transaction mode; the two
//! transcripts must agree step for step. The scenarios cover the forward path: prepared
//! statements invalidated by DDL and the driver's re-prepare, named and unnamed statements
//! across Syncs, server errors mid-batch and mid-pipeline, cancel, COPY both ways,
//! `pg_terminate_backend` on the server behind a client (the server's own 57P01), a LATIN9
//! client sending non-UTF-8 bytes, and the ParameterStatus values a client is given.
//!
//! The libraries are installed by `scripts/deps.sh` (pip's `asyncpg` and `psycopg[binary]`,
//! npm's `pg` and `pg-copy-streams` into `tests/pg/compat/node_modules`).

use crate::harness::Env;
use std::path::PathBuf;

use pake::lab::transcript::Transcript;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pg/compat")
}

/// Run one library's scenario against `url`; its transcript.
async fn scenario(lib: &str, url: &str, prefix: &str) -> Transcript {
    let (program, script) = match lib {
        "asyncpg" => ("python3", "scenario_asyncpg.py"),
        "psycopg" => ("python3", "scenario_psycopg.py"),
        _ => ("node", "scenario.js"),
    };
    pake::lab::transcript::run(
        &dir(),
        program,
        script,
        &[url, prefix],
        std::time::Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("{lib}: {e}"))
}

/// Every step of `want` must be the same in `got`.
fn same_steps(lib: &str, want: &Transcript, got: &Transcript) {
    for (step, w) in want {
        assert_eq!(
            got.get(step),
            Some(w),
            "{lib} step {step}: direct {w}, through Pake {:?}",
            got.get(step)
        );
    }
    assert_eq!(want.len(), got.len(), "{lib}: {got:?}");
}

/// The scenario direct, then through Pake (transaction mode, twice: the second run meets
/// the statements the first left on Pake's servers); the transcripts must agree.
async fn matrix(lib: &str) -> Transcript {
    let env = Env::start().await;
    let direct = scenario(lib, &env.lab.url("postgres"), "direct").await;
    let mut through = Transcript::new();
    for run in ["pake1", "pake2"] {
        through = scenario(lib, &env.url("postgres"), run).await;
        same_steps(lib, &direct, &through);
    }
    // no server-side error made Pake end a client (08006 lost server, 08P01 protocol):
    // the terminated client got the server's own 57P01, not Pake's
    let (_, metrics) = crate::harness::http_get(&env.admin_url("/metrics")).await;
    for code in ["08006", "08P01"] {
        let line = format!("pake_pg_client_errors_total{{sqlstate=\"{code}\"}}");
        assert!(!metrics.contains(&line), "{lib}: Pake reported {code}");
    }
    through
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_asyncpg() {
    let t = matrix("asyncpg").await;
    // the causes issue 16 names, spelled out
    assert_eq!(
        t["cached_after_alter"],
        serde_json::json!([[1, "x"], [2, "x"]])
    );
    assert_eq!(t["named_later"], 42);
    assert_eq!(t["unnamed_across_sync"], 42);
    assert_eq!(t["executemany_error"], "error: 23505");
    assert_eq!(t["executemany_count"], 2);
    assert_eq!(t["param_client_encoding"], "UTF8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_psycopg() {
    let t = matrix("psycopg").await;
    assert_eq!(
        t["prepared_after_alter"],
        serde_json::json!([[1, "x"], [2, "x"]])
    );
    assert_eq!(t["terminated_victim"], "error: 57P01");
    assert_eq!(t["cancel"], "error: 57014");
    assert_eq!(t["after_raw_pipeline"], serde_json::json!([8]));
    assert_eq!(t["latin9"][0], "LATIN9");
    assert_eq!(t["latin9"][2][0], "TUPLES_OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_node_postgres() {
    let t = matrix("node").await;
    assert_eq!(t["error_mid"][3], "ok");
    assert_eq!(t["pipeline_error"][2], serde_json::json!([[3]]));
    assert_eq!(t["param_client_encoding"], "UTF8");
}
