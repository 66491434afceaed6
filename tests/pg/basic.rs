//! The everyday protocol through Pake with tokio-postgres: simple and extended queries,
//! prepared statements, pipelining, COPY, errors inside transactions, session mode.

use crate::harness::{code, Env, Opts};
use futures_util::future::join_all;
use pake::config::PoolMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries() {
    let env = Env::start().await;
    let c = env.client().await;
    let v: i32 = c.query_one("select 40 + 2", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    let msgs = c
        .simple_query("select 'a' as x union all select 'b'; select 3")
        .await
        .unwrap();
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(rows, ["a", "b", "3"]);
    // parameters of several types through the extended protocol
    let row = c
        .query_one(
            "select $1::text || '!', $2::int8 * 2, $3::bool",
            &[&"hi", &21i64, &true],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "hi!");
    assert_eq!(row.get::<_, i64>(1), 42);
    assert!(row.get::<_, bool>(2));
    // a large result streams through
    let rows = c
        .query(
            "select g, repeat('x', 1000) from generate_series(1, 5000) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows[4999].get::<_, i32>(0), 5000);
    // a single 20 MB value
    let big: String = c
        .query_one("select repeat('y', 20000000)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(big.len(), 20_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_survive_server_changes() {
    // pool of 2, 6 clients each preparing and reusing statements across transactions:
    // every execution may land on a different server
    let env = Env::with(Opts {
        pool_size: 2,
        ..Opts::default()
    })
    .await;
    let tasks = (0..6).map(|i| {
        let url = env.url("postgres");
        tokio::spawn(async move {
            let c = pake::lab::postgres::connect(&url).await.unwrap();
            let add = c.prepare("select $1::int + $2::int").await.unwrap();
            let echo = c.prepare("select $1::text").await.unwrap();
            for n in 0..50 {
                let v: i32 = c.query_one(&add, &[&i, &n]).await.unwrap().get(0);
                assert_eq!(v, i + n);
                let s: String = c
                    .query_one(&echo, &[&format!("c{i}-{n}")])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(s, format!("c{i}-{n}"));
            }
            // statements can be closed and re-prepared under the same text
            drop(add);
            let add2 = c.prepare("select $1::int + $2::int").await.unwrap();
            let v: i32 = c.query_one(&add2, &[&1, &1]).await.unwrap().get(0);
            assert_eq!(v, 2);
        })
    });
    for r in join_all(tasks).await {
        r.unwrap();
    }
    assert!(env.server_backends().await <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_answer_in_order() {
    let env = Env::start().await;
    let c = env.client().await;
    let stmt = c.prepare("select $1::int").await.unwrap();
    // tokio-postgres pipelines concurrent requests on one connection
    let futs = (0..200).map(|i| {
        let c = &c;
        let stmt = &stmt;
        async move {
            let v: i32 = c.query_one(stmt, &[&i]).await.unwrap().get(0);
            v
        }
    });
    let got = join_all(futs).await;
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_mid_transaction_and_mid_batch() {
    let env = Env::start().await;
    let c = env.client().await;
    c.batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    c.batch_execute("begin; insert into t values (1)")
        .await
        .unwrap();
    let e = c
        .execute("insert into t values (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23505");
    let e = c.query("select 1", &[]).await.unwrap_err();
    assert_eq!(code(&e), "25P02", "transaction is aborted until rollback");
    c.batch_execute("rollback").await.unwrap();
    let n: i64 = c
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // an error in the middle of a pipelined batch: one insert wins, the other fails, and
    // the statements around them are unaffected
    let insert = c.prepare("insert into t values (5)").await.unwrap();
    let a = c.execute(&insert, &[]);
    let b = c.execute(&insert, &[]);
    let after = c.query_one("select count(*) from t", &[]);
    let (a, b, after) = tokio::join!(a, b, after);
    let (ok, bad) = if a.is_ok() { (a, b) } else { (b, a) };
    assert_eq!(ok.unwrap(), 1);
    assert_eq!(code(&bad.unwrap_err()), "23505");
    let n: i64 = after.unwrap().get(0);
    assert_eq!(n, 1);
    // a statement that fails to parse
    let e = c.prepare("selec 1").await.unwrap_err();
    assert_eq!(code(&e), "42601");
    let v: i32 = c.query_one("select 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_stream() {
    use futures_util::{SinkExt, StreamExt};
    let env = Env::start().await;
    let c = env.client().await;
    c.batch_execute("create table nums (n int, s text)")
        .await
        .unwrap();
    let sink = c.copy_in("copy nums from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in 0..100 {
        let mut data = String::new();
        for i in 0..1000 {
            let n = chunk * 1000 + i;
            data.push_str(&format!("{n}\trow {n}\n"));
        }
        sink.send(bytes::Bytes::from(data)).await.unwrap();
    }
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, 100_000);
    let stream = c
        .copy_out("copy (select n from nums order by n) to stdout")
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(text.lines().count(), 100_000);
    assert_eq!(text.lines().last(), Some("99999"));
    // a COPY that fails midway reports the error and leaves the connection usable
    let sink = c.copy_in("copy nums (n) from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\nnot-a-number\n"))
        .await
        .unwrap();
    let e = sink.finish().await.unwrap_err();
    assert_eq!(code(&e), "22P02");
    let n: i64 = c
        .query_one("select count(*) from nums", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_the_server() {
    let env = Env::with(Opts {
        mode: PoolMode::Session,
        pool_size: 2,
        ..Opts::default()
    })
    .await;
    let c = env.client().await;
    let pid1: i32 = c
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    c.batch_execute("set search_path = pg_catalog")
        .await
        .unwrap();
    let pid2: i32 = c
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pid1, pid2);
    let sp: String = c.query_one("show search_path", &[]).await.unwrap().get(0);
    assert_eq!(sp, "pg_catalog");
    drop(c);
    // the next session on that server starts clean (reset query ran)
    let ok = crate::harness::eventually(std::time::Duration::from_secs(5), || async {
        let c = env.client().await;
        let sp: String = c.query_one("show search_path", &[]).await.unwrap().get(0);
        sp == "\"$user\", public"
    })
    .await;
    assert!(ok);
}
