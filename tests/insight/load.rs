//! The load-comparison driver the end-to-end on/off test will use: it runs, counts
//! transactions on both sides and reports their ratio (no timing asserted here).

use pake::insight::load::{compare, prepare, LoadSpec};
use pake::lab::{PgLab, PgOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_driver_compares_two_urls() {
    let lab = tokio::task::spawn_blocking(|| PgLab::start(PgOptions::default()))
        .await
        .expect("lab thread")
        .expect("lab");
    let url = lab.url("postgres");
    prepare(&url, 1000).await.expect("prepare");
    // idempotent: a second prepare leaves the table as it is
    prepare(&url, 1000).await.expect("prepare again");
    let c = lab.client("postgres").await.expect("client");
    let n: i64 = c
        .query_one("select count(*) from pgbench_accounts", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1000);
    let spec = LoadSpec {
        clients: 2,
        round: Duration::from_millis(300),
        rounds: 2,
        accounts: 1000,
    };
    let r = compare(&url, &url, &spec).await.expect("load runs");
    assert!(r.tps_a > 0.0 && r.tps_b > 0.0, "{r:?}");
    assert!((r.ratio - r.tps_b / r.tps_a).abs() < 1e-9);
}
