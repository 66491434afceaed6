//! Real client programs through Pake: psql and pgbench in every protocol mode.

use crate::harness::{pg_bin, Env, Opts};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_works() {
    let env = Env::start().await;
    let url = env.url("postgres");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(pg_bin("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(&url)
            .args([
                "-c",
                "create table p (id int, name text)",
                "-c",
                "insert into p select g, 'n' || g from generate_series(1, 100) g",
                "-c",
                "select count(*), max(name) from p",
                "-c",
                "\\copy p to stdout",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("100|n99"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.contains('\t')).count(), 100);
}

/// pgbench with 50 clients over a pool of 5: no failed transaction, and Postgres never sees
/// more than 5 pooled server connections from Pake.
async fn pgbench_mode(mode: &'static str) {
    let env = Env::with(Opts {
        pool_size: 5,
        ..Opts::default()
    })
    .await;
    let init = Command::new(pg_bin("pgbench"))
        .args(["-i", "-s", "1", "-q"])
        .arg(env.lab.url("postgres"))
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    // watch the server side while pgbench runs
    let peak = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, stop) = (peak.clone(), stop.clone());
        let d = env.direct().await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n: i64 = d
                    .query_one(
                        // Pake's side connections (EXPLAIN of a slow statement, the replica
                        // monitor) are not pooled: only the pool's servers count
                        "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid() \
                         and application_name not in ('pake-insight', 'pake-monitor')",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                peak.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let url = env.url("postgres");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(pg_bin("pgbench"))
            .args(["-c", "50", "-j", "2", "-t", "40", "-n", "-M", mode])
            .arg(&url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench -M {mode}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of transactions actually processed: 2000/2000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        (1..=5).contains(&peak),
        "server saw {peak} connections from Pake"
    );
    // the bank is consistent: TPC-B keeps sum(abalance) = sum(delta) of history
    let d = env.direct().await;
    let row = d
        .query_one(
            "select (select sum(abalance) from pgbench_accounts), (select coalesce(sum(delta),0) from pgbench_history), (select count(*) from pgbench_history)",
            &[],
        )
        .await
        .unwrap();
    let (accounts, history, n): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(accounts, history);
    assert_eq!(n, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple() {
    pgbench_mode("simple").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_extended() {
    pgbench_mode("extended").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared() {
    pgbench_mode("prepared").await;
}

/// An `application_name` longer than PostgreSQL keeps: psql through Pake sees the server's
/// NOTICE (42622) and the same cut value as directly (tokio-postgres's own suite counts the
/// notice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_application_name_is_cut_with_the_servers_notice() {
    let env = Env::start().await;
    let name = format!("%C3%A9{}", "x".repeat(65));
    let run = |url: String| {
        let url = format!("{url}?application_name={name}");
        tokio::task::spawn_blocking(move || {
            let out = Command::new(pg_bin("psql"))
                .args(["-X", "-A", "-t", "-c", "show application_name"])
                .arg(&url)
                .output()
                .unwrap();
            assert!(out.status.success(), "{url}: {out:?}");
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let direct = run(env.lab.url("postgres")).await.unwrap();
    let pake = run(env.url("postgres")).await.unwrap();
    assert!(direct.1.contains("NOTICE:  identifier \"é"), "{direct:?}");
    assert_eq!(pake, direct);
}
