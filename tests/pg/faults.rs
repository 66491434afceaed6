//! Faults: the server dies mid-query or restarts, checkout waits time out, clients idle too
//! long, queries are canceled, the proxy shuts down.

use crate::harness::{code, eventually, Env, Opts, Raw};
use pake::config::Dur;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dies_mid_query_then_comes_back() {
    let mut env = Env::start().await;
    let c = env.client().await;
    let slow = tokio::spawn(async move { c.batch_execute("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| env.lab.primary.crash());
    let e = slow.await.unwrap().unwrap_err();
    assert!(
        code(&e) == "08006" || e.is_closed(),
        "client sees the lost connection: {e}"
    );
    // while the server is down, new requests fail fast with 08006
    let mut raw = Raw::login(&env, "pake", "pake", "postgres").await;
    if let Ok(r) = raw.as_mut() {
        r.send(&crate::harness::frame(b'Q', b"select 1\0")).await;
        let (sqlstate, _) = r.error().await.expect("an error");
        assert_eq!(sqlstate, "08006");
    } else {
        assert_eq!(raw.err().as_deref(), Some("08006"));
    }
    tokio::task::block_in_place(|| env.lab.primary.start()).unwrap();
    let back = eventually(Duration::from_secs(20), || async {
        match pake::lab::postgres::connect(&env.url("postgres")).await {
            Ok(c) => c.query_one("select 1", &[]).await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        back,
        "Pake reconnects once Postgres is back, without a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_servers_killed_behind_the_pool_are_replaced() {
    let env = Env::start().await;
    let c = env.client().await;
    for _ in 0..3 {
        c.query_one("select 1", &[]).await.unwrap();
    }
    // each query_one's statement is closed after it returns (Close + Sync, which Pake runs
    // on a server): one more request behind them makes sure they are done, so the servers
    // are killed idle in the pool, not while serving this client (a different case: the
    // client then gets the server's FATAL)
    c.batch_execute("select 1").await.unwrap();
    // terminate every pooled server connection from the outside
    let d = env.direct().await;
    let pids: Vec<i32> = d
        .query(
            "select pid from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!pids.is_empty());
    for pid in &pids {
        d.execute("select pg_terminate_backend($1)", &[pid])
            .await
            .unwrap();
    }
    // pg_terminate_backend only signals: wait until the backends are really gone, so the
    // servers are dead while idle in the pool (not dying under the next query)
    let gone = eventually(Duration::from_secs(10), || async {
        let left: i64 = d
            .query_one(
                "select count(*) from pg_stat_activity where pid = any($1)",
                &[&pids],
            )
            .await
            .unwrap()
            .get(0);
        left == 0
    })
    .await;
    assert!(gone, "the pooled servers were terminated");
    // the dead idle server is noticed at checkout; the query runs on a fresh one
    let v: i32 = c.query_one("select 11", &[]).await.unwrap().get(0);
    assert_eq!(v, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_wait_timeout_answers_instead_of_hanging() {
    let env = Env::with(Opts {
        pool_size: 1,
        tweak: |c| c.pool.query_wait_timeout = Dur::millis(300),
        ..Opts::default()
    })
    .await;
    let holder = env.client().await;
    holder.batch_execute("begin").await.unwrap(); // holds the only server
    let waiter = env.client().await;
    let e = waiter.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(code(&e), "57014");
    holder.batch_execute("commit").await.unwrap();
    // the waiter's connection is still usable
    let v: i32 = waiter.query_one("select 2", &[]).await.unwrap().get(0);
    assert_eq!(v, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_timeout() {
    let env = Env::with(Opts {
        pool_size: 1,
        tweak: |c| c.pool.idle_transaction_timeout = Dur::millis(300),
        ..Opts::default()
    })
    .await;
    let mut raw = Raw::login(&env, "pake", "pake", "postgres").await.unwrap();
    raw.send(&crate::harness::frame(b'Q', b"begin\0")).await;
    assert_eq!(raw.error().await, Some(("25P03".into(), "FATAL".into())));
    assert!(raw.closed().await);
    // the server went back (rolled back) for the next client
    let c = env.client().await;
    let v: i32 = c.query_one("select 3", &[]).await.unwrap().get(0);
    assert_eq!(v, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout() {
    let env = Env::with(Opts {
        tweak: |c| c.pool.client_idle_timeout = Dur::millis(300),
        ..Opts::default()
    })
    .await;
    let mut raw = Raw::login(&env, "pake", "pake", "postgres").await.unwrap();
    assert_eq!(raw.error().await, Some(("57P05".into(), "FATAL".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_query_only() {
    let env = Env::start().await;
    let c = env.client().await;
    let token = c.cancel_token();
    let c2 = env.client().await;
    let slow = tokio::spawn(async move { c.batch_execute("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = slow.await.unwrap().unwrap_err();
    assert_eq!(code(&e), "57014");
    assert!(started.elapsed() < Duration::from_secs(20));
    // a cancel with a client's key while it is idle touches nobody
    let token2 = c2.cancel_token();
    let c3 = env.client().await;
    let running = tokio::spawn(async move {
        c3.query_one("select pg_sleep(1)::text || 'done'", &[])
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    token2.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let v: String = running.await.unwrap().unwrap().get(0);
    assert_eq!(v, "done");
}

/// A cancel for a statement that waits for a server (every server busy) ends the wait with
/// the server's 57014, at once: drivers' query timeouts (pgjdbc's `setQueryTimeout`) work
/// while the pool is saturated, and the statement never runs. The client goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_the_wait_for_a_server() {
    let env = Env::with(Opts {
        pool_size: 1,
        ..Opts::default()
    })
    .await;
    let (holder, waiter) = (env.client().await, env.client().await);
    holder
        .batch_execute("create table queued (a int)")
        .await
        .expect("create");
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .batch_execute("SELECT 1")
        .await
        .expect("the only server is held");
    let token = waiter.cancel_token();
    let waiter = std::sync::Arc::new(waiter);
    let queued = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.batch_execute("insert into queued values (1)").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!queued.is_finished(), "the insert waits for the server");
    let started = std::time::Instant::now();
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel");
    let e = queued.await.expect("task").expect_err("canceled");
    assert_eq!(code(&e), "57014");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "canceled while waiting"
    );
    holder.batch_execute("COMMIT").await.expect("commit");
    let n: i64 = waiter
        .query_one("select count(*) from queued", &[])
        .await
        .expect("the client goes on")
        .get(0);
    assert_eq!(n, 0, "the canceled statement never ran");
    // a cancel while nothing waits or runs touches nobody, later waits included
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel");
    tokio::time::sleep(Duration::from_millis(200)).await; // handled before the next wait
    holder
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("held again");
    let later = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.batch_execute("insert into queued values (2)").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.batch_execute("COMMIT").await.expect("commit");
    later
        .await
        .expect("task")
        .expect("a later wait is not canceled");
}

/// A cancel sent while a client's statement runs may reach the backend after that
/// statement's transaction ended (the postmaster signals it asynchronously; drivers send
/// cancels on timeouts, racing the reply): the server it went to is closed at the end of the
/// transaction instead of going to the next client, whose statement it could cancel. A
/// cancel while nothing runs (idle, or idle in a transaction) is not sent at all: the
/// server would ignore it, unless its signal landed on the client's next statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_a_cancel_went_to_never_serves_another_client() {
    async fn pid(c: &tokio_postgres::Client) -> i32 {
        let row = c.query_one("select pg_backend_pid()", &[]).await;
        row.expect("pid").get(0)
    }
    let env = Env::with(Opts {
        pool_size: 1,
        ..Opts::default()
    })
    .await;
    let a = env.client().await;
    let b = env.client().await;
    // without a cancel the one server goes from client to client
    let first = pid(&a).await;
    assert_eq!(pid(&b).await, first);
    // idle in a transaction: the cancel is not sent, the transaction goes on
    a.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(pid(&a).await, first);
    // (a simple query after it: tokio-postgres's Close of pid()'s statement is done)
    a.batch_execute("select 1").await.expect("select");
    let token = a.cancel_token();
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel");
    let ignored = eventually(Duration::from_secs(10), || async {
        cancels(&env, "ignored").await == 1
    })
    .await;
    assert!(ignored, "a cancel while nothing runs is ignored");
    assert_eq!(cancels(&env, "sent").await, 0);
    assert_eq!(pid(&a).await, first, "the transaction was not canceled");
    // a statement of the transaction runs when the cancel arrives: it is canceled
    let sleeper = tokio::spawn(async move {
        let r = a.batch_execute("select pg_sleep(30)").await;
        (r, a)
    });
    let direct = env.direct().await;
    let running = eventually(Duration::from_secs(10), || async {
        let row = direct
            .query_one(
                "select count(*) from pg_stat_activity \
                 where query = 'select pg_sleep(30)' and state = 'active'",
                &[],
            )
            .await;
        row.is_ok_and(|r| r.get::<_, i64>(0) == 1)
    })
    .await;
    assert!(running, "the statement runs");
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel");
    let (r, a) = sleeper.await.expect("task");
    let e = r.expect_err("the statement was canceled");
    assert_eq!(code(&e), "57014", "{e}");
    // (counted once the postmaster has closed the cancel connection, maybe after the error)
    let sent = eventually(Duration::from_secs(10), || async {
        cancels(&env, "sent").await == 1
    })
    .await;
    assert!(sent, "the cancel was sent");
    a.batch_execute("ROLLBACK").await.expect("rollback");
    let second = pid(&b).await;
    b.batch_execute("select 1").await.expect("select");
    assert_ne!(second, first, "the canceled server went to the next client");
    assert_eq!(pid(&b).await, second, "other servers are reused as before");
    // a cancel while the client is idle sends nothing and costs no server (cancel_query
    // returns once sent: let Pake handle it before the next statement, which it could
    // cancel, running or waiting for a server, as a late cancel does)
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel");
    let ignored = eventually(Duration::from_secs(10), || async {
        cancels(&env, "ignored").await == 2
    })
    .await;
    assert!(ignored, "an idle client's cancel is ignored");
    assert_eq!(pid(&a).await, second);
    assert_eq!(cancels(&env, "sent").await, 1, "nothing more was sent");
}

/// `pake_pg_cancel_requests_total{outcome}` from the admin listener (0 before the first).
async fn cancels(env: &Env, outcome: &str) -> u64 {
    let (_, text) = crate::harness::http_get(&env.admin_url("/metrics")).await;
    let series = format!("pake_pg_cancel_requests_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Two Pakes behind one address: a load balancer sends the client's CancelRequest to the
/// instance that does not hold the query; `[peering]` passes it on to the one that does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_another_instance_reaches_the_query() {
    use pake::config::peering::{Peer, Peering};
    // chosen when the first Pake is configured, after its lab has started: a port picked
    // before the lab's seconds of startup was once taken meanwhile by a parallel test
    let chosen = std::sync::Arc::new(std::sync::OnceLock::<[u16; 2]>::new());
    let instance = move |id: u8| -> crate::harness::LabTweak {
        let chosen = chosen.clone();
        std::sync::Arc::new(move |c, _| {
            let ports = *chosen.get_or_init(|| {
                let free = || pake::lab::process::free_port().expect("a free port");
                [free(), free()]
            });
            c.general.pg_listen = ([127, 0, 0, 1], ports[usize::from(id - 1)]).into();
            c.peering = Peering {
                peer_id: id,
                peers: (1..=2u8)
                    .map(|i| Peer {
                        id: i,
                        address: format!("127.0.0.1:{}", ports[usize::from(i - 1)]),
                    })
                    .collect(),
            };
        })
    };
    let env = Env::with(Opts {
        tweak_lab: Some(instance(1)),
        ..Opts::default()
    })
    .await;
    let other = crate::harness::start_pake(
        &env.lab,
        &Opts {
            tweak_lab: Some(instance(2)),
            ..Opts::default()
        },
    )
    .await;
    let c = env.client().await;
    let token = c.cancel_token();
    let slow = tokio::spawn(async move { c.batch_execute("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let to_other = tokio::net::TcpStream::connect(other.pg_addr).await.unwrap();
    token
        .cancel_query_raw(to_other, tokio_postgres::NoTls)
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(20), slow)
        .await
        .expect("the query was canceled through the other instance")
        .unwrap()
        .unwrap_err();
    assert_eq!(code(&e), "57014");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_clients_with_57p01() {
    let env = Env::start().await;
    let mut raw = Raw::login(&env, "pake", "pake", "postgres").await.unwrap();
    env.pake.drain(Duration::from_secs(1)).await;
    assert_eq!(raw.error().await, Some(("57P01".into(), "FATAL".into())));
    assert!(
        tokio::net::TcpStream::connect(env.pake.pg_addr)
            .await
            .is_err(),
        "the listener is closed"
    );
}
