//! Adaptive pools: `min_pool_size` kept warm, growth to `pool_size` under a burst, shrinking
//! back after `server_idle_timeout`, and the reserve for clients that waited too long.

use crate::harness::{code, eventually, http_get, Env, Opts};
use pake::config::Dur;
use std::time::{Duration, Instant};

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_minimum_grow_under_burst_shrink_when_idle() {
    let env = Env::with(Opts {
        pool_size: 6,
        tweak: |c| {
            c.pool.min_pool_size = 2;
            c.pool.server_idle_timeout = Dur::millis(600);
        },
        ..Opts::default()
    })
    .await;
    // logging in creates the pool; it opens the minimum on its own
    let first = env.client().await;
    let warm = eventually(Duration::from_secs(5), || async {
        env.server_backends().await == 2
    })
    .await;
    assert!(
        warm,
        "min_pool_size connections are opened without any query"
    );
    // a burst of 6 open transactions grows the pool to its size
    let mut clients = vec![first];
    for _ in 0..5 {
        clients.push(env.client().await);
    }
    for c in &clients {
        c.batch_execute("begin; select 1").await.unwrap();
    }
    assert_eq!(env.server_backends().await, 6);
    let (_, text) = http_get(&env.admin_url("/metrics")).await;
    let labels = "{database=\"postgres\",state=\"active\",target=\"primary\",user=\"pake\"}";
    assert_eq!(metric(&text, &format!("pake_pg_servers{labels}")), 6.0);
    for c in &clients {
        c.batch_execute("commit").await.unwrap();
    }
    // idle past server_idle_timeout: back down to the minimum, not below
    let shrunk = eventually(Duration::from_secs(10), || async {
        env.server_backends().await == 2
    })
    .await;
    assert!(shrunk, "idle servers close down to min_pool_size");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.server_backends().await, 2, "and stay at the minimum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_only_after_waiting_reserve_pool_timeout() {
    let env = Env::with(Opts {
        pool_size: 2,
        tweak: |c| {
            c.pool.reserve_pool_size = 2;
            c.pool.reserve_pool_timeout = Dur::millis(300);
            c.pool.query_wait_timeout = Dur::millis(1500);
        },
        ..Opts::default()
    })
    .await;
    let holders: Vec<_> = futures_util::future::join_all((0..2).map(|_| env.client())).await;
    for c in &holders {
        c.batch_execute("begin; select 1").await.unwrap();
    }
    // the third client waits the reserve timeout, then gets a reserve connection
    let third = env.client().await;
    let started = Instant::now();
    third.batch_execute("begin; select 1").await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "reserve used only after waiting: {waited:?}"
    );
    let fourth = env.client().await;
    fourth.batch_execute("begin; select 1").await.unwrap();
    assert_eq!(env.server_backends().await, 4, "pool_size + reserve");
    // the reserve is spent: a fifth waits until query_wait_timeout
    let fifth = env.client().await;
    let e = fifth.batch_execute("select 1").await.unwrap_err();
    assert_eq!(code(&e), "57014");
    for c in holders.iter().chain([&third, &fourth]) {
        c.batch_execute("commit").await.unwrap();
    }
    // reserve connections close once no one waits
    let back = eventually(Duration::from_secs(5), || async {
        env.server_backends().await <= 2
    })
    .await;
    assert!(back);
    let (_, text) = http_get(&env.admin_url("/metrics")).await;
    assert_eq!(
        metric(&text, "pake_pg_reserve_connections_total{database=\"postgres\",target=\"primary\",user=\"pake\"}"),
        2.0
    );
}
