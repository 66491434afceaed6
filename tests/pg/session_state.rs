//! Issue 16: session state in transaction mode. Session-level settings follow the client
//! from server to server (replayed on checkout), and answer as on a direct connection.

use crate::harness::{pg_bin, Env, Opts};
use std::collections::HashSet;
use tokio_postgres::{Client, SimpleQueryMessage};

/// The first value of the first row of a simple query (`SHOW x` and the like).
async fn simple_value(c: &Client, sql: &str) -> String {
    let msgs = c.simple_query(sql).await.expect(sql);
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no row from {sql}"))
}

async fn pid(c: &Client) -> i32 {
    c.query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

/// What the session answers for the settings these tests change: through `SHOW`, through
/// `current_setting` (extended protocol), and the isolation of a fresh transaction.
async fn observe(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["search_path", "statement_timeout", "work_mem"] {
        out.push(simple_value(c, &format!("SHOW {name}")).await);
    }
    for name in ["my.var", "default_transaction_isolation"] {
        let v: Option<String> = c
            .query_one("select current_setting($1, true)", &[&name])
            .await
            .expect("current_setting")
            .get(0);
        out.push(v.unwrap_or_default());
    }
    out.push(simple_value(c, "BEGIN; SHOW transaction_isolation; COMMIT").await);
    out
}

const SETTINGS: &str = "SET search_path = app, public; \
    SET SESSION statement_timeout TO '1234ms'; \
    SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ";
const SET_CONFIG: &str = "SELECT set_config('my.var', 'hello, world', false)";

/// Two clients on a pool of two servers: while one holds a server in a transaction, the
/// other runs on the second, so both use both servers in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_the_client_across_servers() {
    let env = Env::with(Opts {
        pool_size: 2,
        ..Opts::default()
    })
    .await;
    let direct = env.direct().await;
    let (a, b) = (env.client().await, env.client().await);
    let plain = observe(&direct).await;
    for c in [&direct, &a] {
        c.batch_execute(SETTINGS).await.expect("set");
        c.execute(SET_CONFIG, &[]).await.expect("set_config");
        c.batch_execute("SET work_mem = '7MB'").await.expect("set");
    }
    let want = observe(&direct).await;
    assert_eq!(want[0], "app, public");
    assert_eq!(want[4], "repeatable read");
    assert_eq!(want[5], "repeatable read");
    assert_ne!(want, plain);

    let (mut a_pids, mut b_pids) = (HashSet::new(), HashSet::new());
    for round in 0..4 {
        // b holds one server, a runs on the other
        b.batch_execute("BEGIN").await.expect("begin");
        b_pids.insert(pid(&b).await);
        assert_eq!(observe(&a).await, want, "client a, round {round}");
        a_pids.insert(pid(&a).await);
        b.batch_execute("COMMIT").await.expect("commit");
        // and the other way round: b must not see a's settings
        a.batch_execute("BEGIN").await.expect("begin");
        a_pids.insert(pid(&a).await);
        assert_eq!(observe(&b).await, plain, "client b, round {round}");
        b_pids.insert(pid(&b).await);
        a.batch_execute("COMMIT").await.expect("commit");
    }
    assert!(a_pids.len() >= 2, "a used one server only: {a_pids:?}");
    assert!(
        a_pids.intersection(&b_pids).count() >= 1,
        "a and b never shared a server: {a_pids:?} {b_pids:?}"
    );
}

/// A rolled-back or failed transaction undoes its SETs; SET LOCAL ends with its
/// transaction; RESET, RESET ALL and DISCARD ALL go back — all as on a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_undone_as_on_a_direct_connection() {
    let env = Env::with(Opts {
        pool_size: 2,
        ..Opts::default()
    })
    .await;
    let direct = env.direct().await;
    let (a, other) = (env.client().await, env.client().await);
    let steps: &[&str] = &[
        "SET work_mem = '3MB'",
        "BEGIN; SET work_mem = '7MB'; ROLLBACK",
        "SET statement_timeout = '5s'; SELECT 1/0",
        "BEGIN; SET LOCAL search_path = nowhere; COMMIT",
        "SET search_path = s2; SET work_mem = '11MB'",
        "RESET work_mem",
        "SET statement_timeout = '7s'; RESET ALL",
        "SET my.var = 'x'; SET work_mem = '13MB'",
        "DISCARD ALL",
    ];
    for (i, step) in steps.iter().enumerate() {
        let direct_result = direct
            .batch_execute(step)
            .await
            .map_err(|e| e.code().cloned());
        let pake_result = a.batch_execute(step).await.map_err(|e| e.code().cloned());
        assert_eq!(direct_result, pake_result, "step {i}: {step}");
        // run the check on whichever server is free while the other is held
        let hold = i % 2 == 0;
        if hold {
            other.batch_execute("BEGIN").await.expect("begin");
            pid(&other).await;
        }
        assert_eq!(
            observe(&a).await,
            observe(&direct).await,
            "after step {i}: {step}"
        );
        if hold {
            other.batch_execute("COMMIT").await.expect("commit");
        }
    }
}

/// `SET default_transaction_read_only` holds in later transactions on any server, as on a
/// direct connection: a write is refused with 25006.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_default_holds_across_transactions() {
    let env = Env::with(Opts {
        pool_size: 2,
        ..Opts::default()
    })
    .await;
    let setup = env.client().await;
    setup
        .batch_execute("create table ro (id int)")
        .await
        .expect("create");
    for set in [
        "SET default_transaction_read_only = on",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    ] {
        let (c, other) = (env.client().await, env.client().await);
        c.batch_execute(set).await.expect("set");
        for round in 0..3 {
            other.batch_execute("BEGIN").await.expect("begin");
            pid(&other).await;
            let err = c
                .batch_execute("insert into ro values (1)")
                .await
                .expect_err("write in a read-only session");
            assert_eq!(
                err.code(),
                Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
                "{set}, round {round}"
            );
            other.batch_execute("COMMIT").await.expect("commit");
            other
                .execute("insert into ro values (2)", &[])
                .await
                .expect("other writes");
        }
    }
}

/// A SET no longer makes the server need `server_reset_query`: with none configured, a
/// dirty server would be closed, yet the one server of the pool stays the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_keeps_its_server_without_a_reset_query() {
    let env = Env::with(Opts {
        pool_size: 1,
        tweak: |c| c.pool.server_reset_query = String::new(),
        ..Opts::default()
    })
    .await;
    let (a, b) = (env.client().await, env.client().await);
    let first = pid(&a).await;
    a.batch_execute("SET work_mem = '5MB'").await.expect("set");
    a.execute(SET_CONFIG, &[]).await.expect("set_config");
    assert_eq!(simple_value(&b, "SHOW work_mem").await, "4MB");
    assert_eq!(simple_value(&a, "SHOW work_mem").await, "5MB");
    assert_eq!(pid(&b).await, first, "the server was replaced");
    assert_eq!(pid(&a).await, first, "the server was replaced");
    // state that cannot be carried still needs the reset: without one the server goes
    a.batch_execute("CREATE TEMP TABLE gone (id int)")
        .await
        .expect("temp");
    assert_ne!(
        pid(&b).await,
        first,
        "a server with a temp table was reused"
    );
}

/// psql: its settings answer as on a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_settings_match_direct() {
    let env = Env::with(Opts {
        pool_size: 2,
        ..Opts::default()
    })
    .await;
    let script = [
        "SET search_path = a, \"B c\"",
        "SELECT set_config('app.user', 'it''s me', false)",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SHOW search_path",
        "SELECT current_setting('app.user')",
        "BEGIN",
        "SHOW transaction_isolation",
        "COMMIT",
        "RESET search_path",
        "SHOW search_path",
    ];
    let run = move |url: String| {
        let mut cmd = std::process::Command::new(pg_bin("psql"));
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(url);
        for s in script {
            cmd.args(["-c", s]);
        }
        cmd.output().expect("psql")
    };
    let (pake_url, direct_url) = (env.url("postgres"), env.lab.url("postgres"));
    let (through, direct) = tokio::task::spawn_blocking(move || (run(pake_url), run(direct_url)))
        .await
        .expect("psql thread");
    assert!(
        through.status.success(),
        "{}",
        String::from_utf8_lossy(&through.stderr)
    );
    let out = String::from_utf8_lossy(&through.stdout);
    assert_eq!(out, String::from_utf8_lossy(&direct.stdout));
    assert!(
        out.contains("a, \"B c\"") && out.contains("it's me") && out.contains("serializable"),
        "{out}"
    );
}
