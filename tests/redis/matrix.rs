//! The client-library compatibility matrix (issue 16): the same scenario script, in redis-py
//! (Python) and ioredis (Node), RESP2 and RESP3, run straight against Redis and through
//! Pake; the two transcripts must agree step for step, except the steps listed in
//! [`PAKE_DIFFERS`] where Pake deliberately answers otherwise (and those are checked for
//! Pake's answer). Against a cluster the script runs through Pake only (a plain client:
//! Pake is the cluster client) and its results are checked against a single Redis's.
//!
//! The libraries are installed by `scripts/deps.sh` (pip's `redis`, npm's `ioredis` into
//! `tests/redis/compat/node_modules`).

use crate::harness::{Env, Mode};
use std::path::PathBuf;

use pake::lab::transcript::Transcript;

/// Steps where Pake answers differently from the Redis the lab runs, on purpose:
/// CLIENT SETINFO and its `lib-name`/`lib-ver` are Pake's own (the lab's Redis may predate
/// them), and CLIENT TRACKING is refused (Pake keeps its own cache coherent).
const PAKE_DIFFERS: [&str; 2] = ["setinfo", "client_info_lib"];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/redis/compat")
}

/// Run one library's scenario; its transcript.
async fn scenario(lib: &str, url: &str, proto: u8, mode: &str) -> Transcript {
    let (program, script) = match lib {
        "python" => ("python3", "scenario.py"),
        _ => ("node", "scenario.js"),
    };
    let proto = proto.to_string();
    pake::lab::transcript::run(
        &dir(),
        &[program],
        script,
        &[url, &proto, mode],
        std::time::Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("{lib} RESP{proto} {mode}: {e}"))
}

fn pake_url(env: &Env) -> String {
    format!("redis://{}", env.addr())
}

/// Pake's answers where it differs on purpose.
fn check_pake_only_steps(lib: &str, t: &Transcript) {
    let ok = |v: &serde_json::Value| v == "OK" || v == true;
    assert!(ok(&t["setinfo"]), "{lib}: {t:?}");
    let lib_name = if lib == "python" {
        "compat-py"
    } else {
        "compat-js"
    };
    assert!(
        t["client_info_lib"].to_string().contains(lib_name),
        "{lib}: {:?}",
        t["client_info_lib"]
    );
    // answered by Pake's own tracking table, as Redis answers it
    assert!(ok(&t["client_tracking"]), "{lib}: {t:?}");
}

/// Every step of `want` but `skip` and [`PAKE_DIFFERS`] must be the same in `got`.
fn same_steps(what: &str, want: &Transcript, got: &Transcript, skip: &[&str]) {
    for (step, w) in want {
        if PAKE_DIFFERS.contains(&step.as_str()) || skip.contains(&step.as_str()) {
            continue;
        }
        assert_eq!(
            got.get(step),
            Some(w),
            "{what} step {step}: want {w}, got {:?}",
            got.get(step)
        );
    }
    assert_eq!(want.len(), got.len(), "{what}: {got:?}");
}

async fn standalone_matrix(lib: &str) {
    let env = Env::start(Mode::Standalone).await;
    for proto in [2, 3] {
        let direct = scenario(lib, &env.lab.url(), proto, "standalone").await;
        let through = scenario(lib, &pake_url(&env), proto, "standalone").await;
        same_steps(&format!("{lib} RESP{proto}"), &direct, &through, &[]);
        check_pake_only_steps(lib, &through);
        // the steps a library's own suite tripped on, spelled out
        assert_eq!(through["client_kill_id"], 1, "{lib}");
        assert_eq!(through["client_killed_gone"], false, "{lib}");
        assert_eq!(through["client_list_has_both"], true, "{lib}");
        assert_eq!(through["hello_proto"], proto, "{lib}");
        assert!(
            !through["watch_other_slots"].to_string().contains("error"),
            "{lib}: {}",
            through["watch_other_slots"]
        );
    }
}

async fn cluster_matrix(lib: &str) {
    let single = Env::start(Mode::Standalone).await;
    let env = Env::start(Mode::Cluster).await;
    for proto in [2, 3] {
        let want = scenario(lib, &single.lab.url(), proto, "cluster").await;
        let got = scenario(lib, &pake_url(&env), proto, "cluster").await;
        same_steps(
            &format!("{lib} RESP{proto} cluster"),
            &want,
            &got,
            &["select_db1"],
        );
        // a cluster has only database 0 (Redis's own refusal)
        let refusal = got["select_db1"].as_str().unwrap_or_default();
        assert!(refusal.starts_with("error:"), "{lib}: {refusal}");
        check_pake_only_steps(lib, &got);
        assert_eq!(got["scan_all"], true, "{lib}: SCAN visits every node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_redis_py_standalone() {
    standalone_matrix("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_ioredis_standalone() {
    standalone_matrix("node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_redis_py_cluster() {
    cluster_matrix("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_ioredis_cluster() {
    cluster_matrix("node").await;
}
