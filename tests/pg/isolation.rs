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
    // and each client sees its own names, not the servers' `pake_<id>` (more in
    // `pg_prepared_statements_as_directly`)
    // (tokio-postgres names statements from a process-wide counter)
    let view = "select name ~ '^s[0-9]+$', statement from pg_prepared_statements";
    assert_eq!(rows(&b, view).await, [["t", "select 'from b'::text"]]);
    assert_eq!(rows(&a, view).await, [["t", "select 'from a'::text"]]);
}

/// A simple Query's rows as text (NULL as "NULL").
async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    let msgs = c.simple_query(sql).await.unwrap();
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// What a client reads in `pg_prepared_statements` through Pake in transaction mode is what
/// it reads directly: its names, texts, declared or inferred types, prepare order, SQL
/// PREPAREs, through a simple Query, a WITH, a qualified name, and a prepared statement
/// that reads the view again after the client prepared more (psycopg's own tests read it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_prepared_statements_as_directly() {
    use tokio_postgres::types::Type;
    let env = Env::with(Opts {
        pool_size: 2,
        ..Opts::default()
    })
    .await;
    // another client's statements on the same servers must not show
    let other = env.client().await;
    let mut others = Vec::new();
    for i in 0..3 {
        others.push(other.prepare(&format!("select {i}")).await.unwrap());
    }
    // (tokio-postgres names statements from a process-wide counter: names are compared
    // to the client's own)
    let view = "select statement, parameter_types::text, from_sql \
                from pg_prepared_statements order by prepare_time";
    let counting = "select count(*) from pg_catalog.pg_prepared_statements";
    let mut seen = Vec::new();
    for c in [env.direct().await, env.client().await] {
        let mut got = Vec::new();
        let date = c.prepare_typed("select $1", &[Type::DATE]).await.unwrap();
        let int = c.prepare("select $1::int + 1").await.unwrap();
        // a prepared statement reading the view sees itself and what comes after
        let count = c.prepare(counting).await.unwrap();
        let n: i64 = c.query_one(&count, &[]).await.unwrap().get(0);
        got.push(vec![n.to_string()]);
        let later = c.prepare("select 'later'").await.unwrap();
        let n: i64 = c.query_one(&count, &[]).await.unwrap().get(0);
        got.push(vec![n.to_string()]);
        got.extend(rows(&c, view).await);
        // the client's names (s<n>), not the servers' pake_<id>
        let names = "select count(*) from pg_prepared_statements where name ~ '^s[0-9]+$'";
        got.extend(rows(&c, names).await);
        let with = "with x as (select 1 as one) select count(*) + min(one) \
                    from pg_prepared_statements, x";
        got.extend(rows(&c, with).await);
        // SQL PREPARE (Pake keeps the client on its server for it)
        c.batch_execute("prepare mine(int) as select $1")
            .await
            .unwrap();
        got.extend(
            rows(
                &c,
                "select name, from_sql from pg_prepared_statements where from_sql",
            )
            .await,
        );
        seen.push(got);
        drop((date, int, later));
    }
    assert_eq!(seen[0][0], ["3"], "direct: {:?}", seen[0]);
    assert_eq!(seen[1], seen[0], "through Pake, then directly");
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

/// The per-client view is bounded: a client whose statements would make the rewritten text
/// pass 8 MiB gets 54000 saying so, and its connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_prepared_statements_past_its_limit_is_a_clear_error() {
    let env = Env::with(one_server()).await;
    let c = env.client().await;
    let mut held = Vec::new();
    for i in 0..3 {
        let text = format!("select '{}' as s{i}", "x".repeat(3 << 20));
        held.push(c.prepare(&text).await.unwrap());
    }
    let e = c
        .simple_query("select count(*) from pg_prepared_statements")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "54000", "{e:?}");
    let msg = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        msg.as_deref()
            .is_some_and(|m| m.contains("pg_prepared_statements") && m.contains("3 prepared")),
        "{msg:?}"
    );
    let n: i64 = c
        .query_one("select 41::int8 + 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 42);
    drop(held);
}
