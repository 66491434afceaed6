//! Read/write split on a lab primary + streaming replica: plain reads go to the replica,
//! everything that might write (or that Pake cannot be sure about) to the primary, reads
//! follow the session's own writes, and lagging or dead replicas stop getting reads.

use crate::harness::{eventually, http_get, Env, Opts};
use pake::config::{Dur, LagLimit};
use pake::lab::PgOptions;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn with_replica(tweak: fn(&mut pake::config::Config)) -> Opts {
    Opts {
        pool_size: 4,
        lab: PgOptions {
            replica: true,
            ..PgOptions::default()
        },
        tweak,
        ..Opts::default()
    }
}

fn fast_checks(c: &mut pake::config::Config) {
    c.routing.health_check_interval = Dur::millis(100);
}

/// Where does this statement run? (`true`: the replica)
async fn on_replica(c: &tokio_postgres::Client, sql: &str) -> bool {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let v = msgs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"));
    v == "t"
}

async fn replica_ready(env: &Env) {
    let c = env.client().await;
    let ok = eventually(Duration::from_secs(20), || async {
        on_replica(&c, "select pg_is_in_recovery()").await
    })
    .await;
    assert!(ok, "reads never reached the replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_to_replica_transactions_to_primary() {
    let env = Env::with(with_replica(fast_checks)).await;
    replica_ready(&env).await;
    let c = env.client().await;
    assert!(on_replica(&c, "select pg_is_in_recovery()").await);
    assert!(on_replica(&c, "SELECT pg_is_in_recovery() FROM (VALUES (1)) v").await);
    // extended protocol too (tokio-postgres prepares, then binds)
    let row = c
        .query_one("select pg_is_in_recovery()", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    // inside an explicit transaction: the primary
    c.batch_execute("BEGIN").await.unwrap();
    assert!(!on_replica(&c, "select pg_is_in_recovery()").await);
    c.batch_execute("COMMIT").await.unwrap();
    assert!(!on_replica(&c, "begin; select pg_is_in_recovery(); commit").await);
    // read-only transactions: the replica (a fresh session: the batch above counts as a
    // possible write, so this one's reads wait for the replica to catch up)
    let c = env.client().await;
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert!(on_replica(&c, "select pg_is_in_recovery()").await);
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SET TRANSACTION READ ONLY").await.unwrap();
    assert!(on_replica(&c, "select pg_is_in_recovery()").await);
    c.batch_execute("COMMIT").await.unwrap();
    // an empty deferred transaction commits without touching a server
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    assert!(on_replica(&c, "select pg_is_in_recovery()").await);
    // per-target metrics
    let (_, text) = http_get(&env.admin_url("/metrics")).await;
    let replica_target = format!("127.0.0.1:{}", env.lab.replica.as_ref().unwrap().port);
    let routed = text
        .lines()
        .find(|l| l.starts_with("pake_pg_routed_total") && l.contains(&replica_target))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(routed >= 5.0, "{text}");
    assert!(text.contains("pake_pg_replica_lag_bytes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misroute_cases_land_on_the_primary() {
    let env = Env::with(with_replica(fast_checks)).await;
    let d = env.direct().await;
    d.batch_execute(
        "create sequence s; create table t (id int primary key, v int); insert into t values (1, 1), (2, 2);
         create function bump() returns int language sql volatile as 'update t set v = v + 1 where id = 1 returning v';",
    )
    .await
    .unwrap();
    replica_ready(&env).await;
    let c = env.client().await;
    for sql in [
        "with x as (insert into t values (3, 3) returning id) select pg_is_in_recovery() from x",
        "with x as (update t set v = v where id = 1 returning id) select pg_is_in_recovery() from x",
        "select pg_is_in_recovery(), nextval('s')",
        "select pg_is_in_recovery() from t where id = 1 for no key update",
        "select pg_is_in_recovery() from t where id = 1 for update",
        "select pg_is_in_recovery() from t where id = 1 for key share",
        "select pg_is_in_recovery(), pg_advisory_xact_lock(1)",
        "select pg_is_in_recovery(), txid_current()",
        "select pg_is_in_recovery(), bump()",
        "select pg_is_in_recovery(), set_config('application_name', 'x', true)",
        "/* pake:primary */ select pg_is_in_recovery()",
        "select pg_is_in_recovery(); select 1 from t limit 0 for update",
    ] {
        assert!(!on_replica(&c, sql).await, "{sql} must run on the primary");
    }
    // a statement sqlparser cannot parse (but PostgreSQL can) goes to the primary
    let unparseable = "select pg_is_in_recovery() from rows from (generate_series(1, 1)) x";
    assert!(pake::pg::route::classify::parse(unparseable).is_none());
    assert!(!on_replica(&c, unparseable).await);
    // and the hint the other way
    assert!(on_replica(&c, "/* pake:replica */ select pg_is_in_recovery()").await);
    // the session pin
    c.batch_execute("SET pake.route = 'primary'").await.unwrap();
    assert!(!on_replica(&c, "select pg_is_in_recovery()").await);
    c.batch_execute("SET pake.route = 'auto'").await.unwrap();
    // automatic again: once the replica has this session's writes
    let back = eventually(Duration::from_secs(10), || async {
        on_replica(&c, "select pg_is_in_recovery()").await
    })
    .await;
    assert!(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_replicas_can_be_turned_off() {
    let env = Env::with(with_replica(|c| {
        fast_checks(c);
        c.users[0].read_from_replicas = Some(false);
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = env.client().await;
    for _ in 0..5 {
        assert!(!on_replica(&c, "select pg_is_in_recovery()").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_never_misses() {
    let env = Env::with(with_replica(fast_checks)).await;
    let own = ten_thousand_pairs(&env).await;
    println!("read-your-writes: 10000 insert+select, 0 misses, {own} of the checks served by the caught-up replica");
}

/// The replica applies WAL 200 ms late (`recovery_min_apply_delay`): every read right after
/// its own write must still see it (on the primary), and others' reads keep the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_never_misses_on_a_replica_kept_200ms_behind() {
    let env = Env::with(with_replica(fast_checks)).await;
    let replica = pake::lab::postgres::connect(&env.lab.replica_url("postgres").unwrap())
        .await
        .unwrap();
    for sql in [
        "ALTER SYSTEM SET recovery_min_apply_delay = '200ms'",
        "SELECT pg_reload_conf()",
    ] {
        replica.batch_execute(sql).await.unwrap();
    }
    let delay = eventually(Duration::from_secs(5), || async {
        let rows = replica
            .simple_query("SHOW recovery_min_apply_delay")
            .await
            .unwrap();
        rows.iter().any(|m| {
            matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("200ms"))
        })
    })
    .await;
    assert!(delay, "the replica applies WAL late");
    let own = ten_thousand_pairs(&env).await;
    println!("read-your-writes, replica 200 ms behind: 10000 pairs, 0 misses, {own} served by the replica");
}

/// 10,000 insert → select-by-key pairs on one session through Pake with a bystander reading
/// alongside; asserts no miss, the bystander on the replica, and the writer back on the
/// replica once it caught up. Returns how many of the writer's checks the replica served.
async fn ten_thousand_pairs(env: &Env) -> u64 {
    env.direct()
        .await
        .batch_execute("create table ryw (v int)")
        .await
        .unwrap();
    replica_ready(env).await;
    let c = env.client().await;
    let insert = c.prepare("insert into ryw values ($1)").await.unwrap();
    let check = c
        .prepare("select count(*), bool_or(pg_is_in_recovery()) from ryw where v = $1")
        .await
        .unwrap();
    // a bystander that never writes keeps reading from the replica meanwhile
    let bystander = env.client().await;
    let replica_reads = Arc::new(AtomicU64::new(0));
    let counter = replica_reads.clone();
    let by = tokio::spawn(async move {
        for _ in 0..50 {
            if on_replica(&bystander, "select pg_is_in_recovery()").await {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut misses = 0;
    let mut own_replica_reads = 0u64;
    for i in 0..10_000 {
        c.execute(&insert, &[&i]).await.unwrap();
        let row = c.query_one(&check, &[&i]).await.unwrap();
        let n: i64 = row.get(0);
        if n != 1 {
            misses += 1;
        }
        if row.get::<_, Option<bool>>(1) == Some(true) {
            own_replica_reads += 1;
        }
    }
    by.await.unwrap();
    assert_eq!(misses, 0, "a read did not see the session's own write");
    assert!(
        replica_reads.load(Ordering::Relaxed) > 0,
        "plain reads still reach the replica"
    );
    // once the replica has caught up, the writer's reads go back to it (on a loaded
    // machine replaying 10,000 inserts and the monitor seeing it took more than 5 s once)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let back = eventually(Duration::from_secs(20), || async {
        on_replica(&c, "select pg_is_in_recovery()").await
    })
    .await;
    assert!(back);
    own_replica_reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_replay_bans_the_replica_until_it_catches_up() {
    let env = Env::with(with_replica(|c| {
        fast_checks(c);
        c.routing.max_replica_lag = LagLimit::Time(Dur::millis(500));
        c.routing.ban_time = Dur::millis(500);
    }))
    .await;
    env.direct()
        .await
        .batch_execute("create table ticks (n int)")
        .await
        .unwrap();
    replica_ready(&env).await;
    let replica = pake::lab::postgres::connect(&env.lab.replica_url("postgres").unwrap())
        .await
        .unwrap();
    replica
        .batch_execute("select pg_wal_replay_pause()")
        .await
        .unwrap();
    let primary = env.direct().await;
    let c = env.client().await;
    let banned = eventually(Duration::from_secs(20), || async {
        primary
            .batch_execute("insert into ticks values (1)")
            .await
            .unwrap();
        !on_replica(&c, "select pg_is_in_recovery()").await
    })
    .await;
    assert!(banned, "reads must leave a replica that stopped replaying");
    // while banned, reads keep working on the primary
    for _ in 0..10 {
        primary
            .batch_execute("insert into ticks values (2)")
            .await
            .unwrap();
        assert!(!on_replica(&c, "select pg_is_in_recovery()").await);
    }
    let (_, text) = http_get(&env.admin_url("/metrics")).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("pake_pg_replica_banned") && l.ends_with(" 1")),
        "{text}"
    );
    replica
        .batch_execute("select pg_wal_replay_resume()")
        .await
        .unwrap();
    let back = eventually(Duration::from_secs(20), || async {
        on_replica(&c, "select pg_is_in_recovery()").await
    })
    .await;
    assert!(back, "the replica takes reads again once it has caught up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_killed_mid_load_reads_keep_succeeding() {
    let mut env = Env::with(with_replica(fast_checks)).await;
    replica_ready(&env).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let late_failures = Arc::new(AtomicU64::new(0));
    let killed_at = Arc::new(parking_lot::Mutex::new(None::<std::time::Instant>));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (url, stop, ok, failed, late, killed_at) = (
            env.url("postgres"),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            late_failures.clone(),
            killed_at.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut c = pake::lab::postgres::connect(&url).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                match c.query_one("select count(*) from pg_class", &[]).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let is_late = killed_at
                            .lock()
                            .is_some_and(|t| t.elapsed() > Duration::from_millis(1000));
                        if is_late {
                            late.fetch_add(1, Ordering::Relaxed);
                        }
                        // the session ended (its server died): reconnect, as apps do
                        c = pake::lab::postgres::connect(&url).await.unwrap();
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| env.lab.replica.as_mut().unwrap().crash());
    *killed_at.lock() = Some(std::time::Instant::now());
    let before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let after = ok.load(Ordering::Relaxed);
    assert!(
        after > before + 20,
        "reads continued after the replica died ({before} → {after})"
    );
    assert!(
        failed.load(Ordering::Relaxed) <= 4,
        "only requests in flight on the dead replica may fail: {}",
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(
        late_failures.load(Ordering::Relaxed),
        0,
        "no failures after the health-check interval"
    );
}

/// How many rows of `failover_t` a server holds, straight from it.
async fn rows_on(url: &str) -> i64 {
    let c = pake::lab::postgres::connect(url).await.expect("direct");
    c.query_one("select count(*) from failover_t", &[])
        .await
        .expect("count")
        .get(0)
}

/// Insert `id` through a new client of Pake; whether it was acknowledged.
async fn insert_through(env: &Env, id: i32) -> bool {
    let Ok(c) = pake::lab::postgres::connect(&env.url("postgres")).await else {
        return false;
    };
    c.execute("insert into failover_t values ($1)", &[&id])
        .await
        .is_ok()
}

async fn failover_lab() -> Env {
    let env = Env::with(with_replica(fast_checks)).await;
    replica_ready(&env).await;
    let c = env.client().await;
    c.batch_execute("create table failover_t (id int primary key)")
        .await
        .unwrap();
    assert!(insert_through(&env, 0).await);
    // the replica has the table and its row before anyone promotes it
    let replica_url = env.lab.replica_url("postgres").unwrap();
    let replicated = eventually(Duration::from_secs(10), || async {
        let Ok(c) = pake::lab::postgres::connect(&replica_url).await else {
            return false;
        };
        c.query_one("select count(*) from failover_t", &[])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 1)
    })
    .await;
    assert!(replicated, "the replica caught up");
    env
}

async fn failovers(env: &Env) -> String {
    let (_, text) = http_get(&env.admin_url("/metrics")).await;
    text.lines()
        .filter(|l| l.starts_with("pake_pg_primary_failovers_total"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_replica_promoted_after_the_primary_died() {
    let mut env = failover_lab().await;
    tokio::task::block_in_place(|| env.lab.primary.crash());
    tokio::task::block_in_place(|| env.lab.promote_replica()).expect("promote");
    let promoted = std::time::Instant::now();
    let mut id = 1;
    let flowing = eventually(Duration::from_secs(10), || {
        id += 1;
        insert_through(&env, id)
    })
    .await;
    assert!(flowing, "writes never reached the promoted replica");
    eprintln!("writes flow {:?} after promotion", promoted.elapsed());
    let replica_url = env.lab.replica_url("postgres").unwrap();
    assert!(
        rows_on(&replica_url).await >= 2,
        "the write landed on the new primary"
    );
    assert!(
        failovers(&env).await.ends_with(" 1"),
        "one failover counted: {}",
        failovers(&env).await
    );
    // SHOW DATABASES names the new primary
    let port = env.lab.replica.as_ref().unwrap().port.to_string();
    let admin = pake::lab::postgres::connect(&env.url("pake"))
        .await
        .unwrap();
    let rows = admin.simple_query("SHOW DATABASES").await.unwrap();
    let shown = rows.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => {
            r.get("name") == Some("postgres") && r.get("port") == Some(port.as_str())
        }
        _ => false,
    });
    assert!(
        shown,
        "SHOW DATABASES shows the promoted replica's port {port}"
    );
}

/// The replica is promoted while the old primary keeps running (a failover manager that
/// could not stop it): the newer timeline wins and the old primary gets no more writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_timeline_takes_the_writes_and_the_old_primary_gets_none() {
    let env = failover_lab().await;
    tokio::task::block_in_place(|| env.lab.promote_replica()).expect("promote");
    let replica_url = env.lab.replica_url("postgres").unwrap();
    let moved = eventually(Duration::from_secs(10), || async {
        insert_through(&env, 1000).await;
        rows_on(&replica_url).await > 1
    })
    .await;
    assert!(moved, "writes never moved to the promoted replica");
    let old_before = rows_on(&env.lab.url("postgres")).await;
    for id in 1..=20 {
        assert!(insert_through(&env, id).await, "insert {id} acknowledged");
    }
    assert_eq!(
        rows_on(&env.lab.url("postgres")).await,
        old_before,
        "no write reached the fenced old primary"
    );
    assert_eq!(
        rows_on(&replica_url).await,
        22,
        "every write is on the new primary"
    );
}
