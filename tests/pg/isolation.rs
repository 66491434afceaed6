//! Session state never leaks from one client to the next through a pooled server, and a
//! client that leaves mid-transaction has its transaction rolled back.

use crate::harness::{code, Env, Opts};
use std::time::Duration;

/// One server, so every client gets the same one after the previous.
fn one_server() -> Opts {
    Opts {
        pool_size: 1,
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_temp_table_advisory_lock_listen_do_not_leak() {
    // session_state = "reset": the state is dropped at the end of each transaction (the
    // default, "pin", would keep `a` on the only server: see session_state.rs)
    let env = Env::with(Opts {
        tweak: |c| c.pool.session_state = pake::config::SessionState::Reset,
        ..one_server()
    })
    .await;
    let a = env.client().await;
    let pid_a: i32 = a
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    a.batch_execute("set search_path = pg_catalog; set statement_timeout = 12345")
        .await
        .unwrap();
    a.batch_execute("create temp table mine (x int)")
        .await
        .unwrap();
    a.query_one("select pg_advisory_lock(42)", &[])
        .await
        .unwrap();
    a.batch_execute("listen chan").await.unwrap();
    a.batch_execute("prepare sqlprep as select 1")
        .await
        .unwrap();

    let b = env.client().await;
    let pid_b: i32 = b
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pid_a, pid_b, "same server connection (pool of 1)");
    let sp: String = b.query_one("show search_path", &[]).await.unwrap().get(0);
    assert_eq!(sp, "\"$user\", public");
    let st: String = b
        .query_one("show statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(st, "0");
    let e = b.batch_execute("select * from mine").await.unwrap_err();
    assert_eq!(code(&e), "42P01", "temp table is gone");
    let got: bool = b
        .query_one("select pg_try_advisory_lock(42)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(got, "advisory lock was released");
    b.query_one("select pg_advisory_unlock(42)", &[])
        .await
        .unwrap();
    let listening: i64 = b
        .query_one("select count(*) from pg_listening_channels()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(listening, 0);
    let e = b.batch_execute("execute sqlprep").await.unwrap_err();
    assert_eq!(code(&e), "26000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_local_and_transaction_scoped_state_keep_the_fast_path() {
    let env = Env::with(one_server()).await;
    let a = env.client().await;
    a.batch_execute(
        "begin; set local search_path = pg_catalog; select pg_advisory_xact_lock(7); commit",
    )
    .await
    .unwrap();
    let b = env.client().await;
    let sp: String = b.query_one("show search_path", &[]).await.unwrap().get(0);
    assert_eq!(sp, "\"$user\", public");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_are_per_client() {
    let env = Env::with(one_server()).await;
    let a = env.client().await;
    let stmt = a.prepare("select 'from a'::text").await.unwrap();
    let v: String = a.query_one(&stmt, &[]).await.unwrap().get(0);
    assert_eq!(v, "from a");
    // client b's first statement gets the same name from tokio-postgres ("s0": a counter
    // per connection), for other text
    let b = env.client().await;
    let stmt_b = b.prepare("select 'from b'::text").await.unwrap();
    let v: String = b.query_one(&stmt_b, &[]).await.unwrap().get(0);
    assert_eq!(v, "from b");
    let v: String = a.query_one(&stmt, &[]).await.unwrap().get(0);
    assert_eq!(v, "from a");
    // and the server-side names never show to clients
    let names: Vec<String> = b
        .query("select name from pg_prepared_statements", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(names.iter().all(|n| n.starts_with("pake_")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_transaction_rolls_back() {
    let env = Env::with(one_server()).await;
    let setup = env.client().await;
    setup
        .batch_execute("create table acct (id int primary key, bal int)")
        .await
        .unwrap();
    setup
        .batch_execute("insert into acct values (1, 100)")
        .await
        .unwrap();
    drop(setup);
    let a = env.client().await;
    a.batch_execute("begin; update acct set bal = 0 where id = 1; select pg_advisory_xact_lock(1)")
        .await
        .unwrap();
    drop(a); // gone without COMMIT, holding a row lock
    let b = env.client().await;
    let bal: i32 = tokio::time::timeout(
        Duration::from_secs(10),
        b.query_one("select bal from acct where id = 1 for update nowait", &[]),
    )
    .await
    .expect("no hang")
    .unwrap()
    .get(0);
    assert_eq!(bal, 100, "the update was rolled back and the lock released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_query_cancels_and_recovers_the_server() {
    let env = Env::with(one_server()).await;
    let mut raw = crate::harness::Raw::login(&env, "pake", "pake", "postgres")
        .await
        .unwrap();
    raw.send(&crate::harness::frame(
        b'Q',
        b"begin; select pg_sleep(60)\0",
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(raw); // the socket closes mid-query, no Terminate
    let started = std::time::Instant::now();
    let b = env.client().await;
    let v: i32 = b.query_one("select 5", &[]).await.unwrap().get(0);
    assert_eq!(v, 5);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the abandoned query was canceled, not waited out"
    );
    // one simple Query is its own transaction: not inside the abandoned one
    let msgs = b
        .simple_query("select (now() = statement_timestamp())::text")
        .await
        .unwrap();
    let fresh = msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(
        fresh.as_deref(),
        Some("true"),
        "b is not inside a's transaction"
    );
}
