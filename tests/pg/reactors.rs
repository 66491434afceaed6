//! Postgres clients on reactor threads (`[general] pg_threads`): each thread has its own
//! SO_REUSEPORT listener and runs its clients' sessions; the pools stay shared. Clients on
//! both threads are served side by side, a drain ends every thread's clients, and the
//! threads end with them.

use crate::harness::{Env, Opts};
use std::time::{Duration, Instant};

/// Threads of this process whose name starts with `prefix`.
fn threads(prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// Whether `f` holds within 10 s.
async fn wait_for(f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

#[tokio::test]
async fn clients_on_reactor_threads_are_served_and_drained() {
    let env = Env::with(Opts {
        tweak: |c| c.general.pg_threads = 2,
        ..Opts::default()
    })
    .await;
    // only this test of the binary runs Postgres reactors (a thread names itself once it
    // runs, so wait for it)
    assert!(
        wait_for(|| threads("pake-pg-") == 2).await,
        "{} reactor threads",
        threads("pake-pg-")
    );

    // more clients than servers (pool 5), each in transactions of its own, all at once
    let mut set = tokio::task::JoinSet::new();
    for i in 0..16i64 {
        let c = env.client().await;
        set.spawn(async move {
            for j in 0..40i64 {
                c.batch_execute("BEGIN").await?;
                let row = c
                    .query_one("SELECT $1::int8 * 1000 + $2::int8", &[&i, &j])
                    .await?;
                assert_eq!(row.get::<_, i64>(0), i * 1000 + j);
                c.batch_execute("COMMIT").await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        });
    }
    while let Some(done) = set.join_next().await {
        done.expect("client task")
            .expect("every transaction through a reactor");
    }

    // a client still connected when the drain ends is closed; the threads then end
    let idle = env.client().await;
    env.pake.drain(Duration::from_millis(500)).await;
    assert!(idle.simple_query("SELECT 1").await.is_err());
    assert!(
        wait_for(|| threads("pake-pg-") == 0).await,
        "reactor threads outlived their clients"
    );
}
