//! The Postgres client-library compatibility matrix (issue 16): one scenario script each for
//! asyncpg and psycopg 3 (Python; psycopg's libpq pipeline mode included), node-postgres
//! and pgjdbc (Java), run straight against the lab's Postgres and through Pake in
//! transaction mode; the two transcripts must agree step for step. The scenarios cover the
//! forward path: prepared statements invalidated by DDL and the driver's re-prepare, named
//! and unnamed statements across Syncs, server errors mid-batch and mid-pipeline, cancel,
//! COPY both ways, `pg_terminate_backend` on the server behind a client (the server's own
//! 57P01), a LATIN9 client sending non-UTF-8 bytes, and the ParameterStatus values a client
//! is given. pgjdbc's scenario is written as a Java developer uses the driver and adds
//! session state: its named statements after `prepareThreshold` executions (and
//! `prepareThreshold` 1, 0 and -1), `executeBatch` (Parse/Bind/Execute without Syncs between)
//! with and without autocommit and with an error mid-batch, savepoints and `autosave`,
//! `Statement.cancel` and `setQueryTimeout`, `SET`, `SET SESSION CHARACTERISTICS`,
//! `setTransactionIsolation` and `setReadOnly` across transactions, temp tables,
//! `CopyManager`, `LargeObjectManager` (fastpath function calls), `isValid`, `getMetaData`,
//! a database created at run time, and LISTEN/NOTIFY through `getNotifications`.
//!
//! The libraries are installed by `scripts/deps.sh` (pip's `asyncpg` and `psycopg[binary]`,
//! npm's `pg` and `pg-copy-streams` into `tests/pg/compat/node_modules`, Debian's
//! `libpostgresql-jdbc-java`, run as a single-file Java program: no build tool).

use crate::harness::Env;
use std::path::PathBuf;

use pake::lab::transcript::Transcript;

/// Debian's pgjdbc (`libpostgresql-jdbc-java`).
const PGJDBC: &str = "/usr/share/java/postgresql.jar";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pg/compat")
}

/// Run one library's scenario against `url`; its transcript.
async fn scenario(lib: &str, url: &str, prefix: &str) -> Transcript {
    let (command, script): (&[&str], _) = match lib {
        "asyncpg" => (&["python3"], "scenario_asyncpg.py"),
        "psycopg" => (&["python3"], "scenario_psycopg.py"),
        "jdbc" => (&["java", "-cp", PGJDBC], "Scenario.java"),
        _ => (&["node"], "scenario.js"),
    };
    pake::lab::transcript::run(
        &dir(),
        command,
        script,
        &[url, prefix],
        std::time::Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("{lib}: {e}"))
}

/// Steps whose results differ through Pake by design, a pooling limit the README's
/// driver-compatibility section documents: left out of the comparison (each library's test
/// asserts what Pake answers instead).
fn pooling_limits(lib: &str) -> &'static [&'static str] {
    match lib {
        // the pid in BackendKeyData (getBackendPID) names the client connection, for its
        // cancels; `pg_backend_pid()` is the pid of the server running the transaction, which
        // changes between transactions: no pid can be both
        "jdbc" => &["backend_pid"],
        _ => &[],
    }
}

/// Every step of `want` must be the same in `got`.
fn same_steps(lib: &str, want: &Transcript, got: &Transcript) {
    let limits = pooling_limits(lib);
    for (step, w) in want.iter().filter(|(s, _)| !limits.contains(&s.as_str())) {
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
    assert_eq!(t["cancel"], "error: 57014");
    assert_eq!(t["after_cancel"], serde_json::json!([[1]]));
    assert_eq!(t["param_client_encoding"], "UTF8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_jdbc() {
    let t = matrix("jdbc").await;
    let rows = serde_json::json!([[1, "x"], [2, "x"]]);
    // a named statement (S_n after prepareThreshold executions) re-prepared after ALTER
    assert_eq!(t["kept_after_alter"], rows);
    assert_eq!(t["threshold_after_alter"][6], "server-prepared");
    assert_eq!(t["alter_in_transaction"], "error: 0A000");
    assert_eq!(
        t["autosave_conservative"][1][0],
        serde_json::json!([1, "x", 7])
    );
    assert_eq!(t["batch_error_autocommit"][0], "23505");
    assert_eq!(t["batch_after_error"][1], 16);
    assert_eq!(t["cancel"], "error: 57014");
    assert_eq!(t["query_timeout"], "error: 57014");
    assert_eq!(t["session_characteristics"][0], "serializable");
    assert_eq!(t["set_transaction_isolation"][2], "repeatable read");
    assert_eq!(t["set_read_only_always"][3], "error: 25006");
    assert_eq!(t["temp_table"][2], 3);
    assert_eq!(t["large_object"], serde_json::json!(["large", 18]));
    assert_eq!(t["new_database"], serde_json::json!(["P_db", 1, 0]));
    assert_eq!(
        t["listen_notify"][1],
        serde_json::json!(["P_ch", "two", "other"])
    );
    // what it found in Pake, fixed
    assert_eq!(t["discard_all"][2], serde_json::json!([[2, "x"]]));
    assert_eq!(t["autosave_settings"][1], "9MB");
    assert_eq!(t["connection_properties"][0], "pg_catalog,public");
    assert_eq!(
        t["timeout_while_queued"],
        serde_json::json!(["error: 57014", "within the timeout", 4])
    );
    // a pooling limit (see pooling_limits): the pids differ, also within a transaction
    assert_eq!(t["backend_pid"], serde_json::json!([false, false]));
}
