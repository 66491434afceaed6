//! Issue 16: session state in transaction mode. Session-level settings follow the client
//! from server to server (replayed on checkout), and answer as on a direct connection.

use crate::harness::{pg_bin, Env, Opts};
use std::collections::HashSet;
use std::time::Duration;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Pake in transaction mode with `n` servers per pool.
async fn pool_of(n: usize) -> Env {
    Env::with(Opts {
        pool_size: n,
        ..Opts::default()
    })
    .await
}

/// A client through Pake runs a statement in `db` and leaves (its server stays pooled there).
async fn use_and_leave(env: &Env, db: &str) {
    let c = pake::lab::postgres::connect(&env.url(db))
        .await
        .unwrap_or_else(|e| panic!("connect to {db}: {e}"));
    c.batch_execute("select 1").await.expect("use it");
}

/// The client's connection is closed (or refuses statements) within 10 s.
async fn closed_soon(c: &Client) -> bool {
    crate::harness::eventually(Duration::from_secs(10), || async {
        c.is_closed() || c.batch_execute("select 1").await.is_err()
    })
    .await
}

/// Pake in session mode on a fresh lab.
async fn session_mode() -> Env {
    Env::with(Opts {
        mode: pake::config::PoolMode::Session,
        ..Opts::default()
    })
    .await
}

/// A client named `victim` through Pake, and the pid Pake gave it (from SHOW CLIENTS).
async fn victim(env: &Env) -> (Client, String) {
    let victim =
        pake::lab::postgres::connect(&format!("{}?application_name=victim", env.url("postgres")))
            .await
            .expect("victim");
    let admin = pake::lab::postgres::connect(&env.url("pake"))
        .await
        .expect("console");
    let (cols, rows) = crate::console::show(&admin, "SHOW CLIENTS").await;
    let (name, pid) = (
        crate::console::col(&cols, "application_name"),
        crate::console::col(&cols, "remote_pid"),
    );
    let victim_pid = rows
        .iter()
        .find(|r| r[name] == "victim")
        .map(|r| r[pid].clone())
        .expect("victim in SHOW CLIENTS");
    (victim, victim_pid)
}

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
    let env = pool_of(2).await;
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

/// A driver's own setting switch, as asyncpg turns JIT off around its type introspection:
/// `set_config` among other columns of a prepared SELECT, then back through a bound
/// parameter; then psycopg's way, the unnamed statement with both arguments bound, in a
/// transaction. Each follows the client to every server (before, each reset its server and
/// was lost there: asyncpg's introspection then ran with JIT on, 0.1–0.7 s instead of 10
/// ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_in_prepared_selects_follows_the_client() {
    let env = pool_of(2).await;
    let (a, b) = (env.client().await, env.client().await);
    let default = simple_value(&b, "SHOW work_mem").await;
    let off = a
        .prepare("SELECT current_setting('work_mem') AS cur, set_config('work_mem', '7MB', false) AS new")
        .await
        .expect("prepare");
    let row = a.query_one(&off, &[]).await.expect("switch");
    assert_eq!(row.get::<_, String>(0), default);
    assert_eq!(row.get::<_, String>(1), "7MB");
    let first = pid(&a).await;
    let mut servers = HashSet::new();
    for round in 0..4 {
        // b holds one server (a BEGIN takes one only with its first statement), a runs
        // on the other
        b.batch_execute("BEGIN").await.expect("begin");
        pid(&b).await;
        assert_eq!(
            simple_value(&a, "SHOW work_mem").await,
            "7MB",
            "round {round}"
        );
        servers.insert(pid(&a).await);
        b.batch_execute("COMMIT").await.expect("commit");
        // and the other way round
        a.batch_execute("BEGIN").await.expect("begin");
        servers.insert(pid(&a).await);
        assert_eq!(
            simple_value(&a, "SHOW work_mem").await,
            "7MB",
            "round {round}"
        );
        assert_eq!(
            simple_value(&b, "SHOW work_mem").await,
            default,
            "round {round}"
        );
        a.batch_execute("COMMIT").await.expect("commit");
    }
    assert!(servers.len() >= 2, "a used one server only: {servers:?}");
    assert!(
        servers.contains(&first),
        "the server a switched on was replaced"
    );
    let back = a
        .prepare("SELECT set_config('work_mem', $1, false)")
        .await
        .expect("prepare");
    a.query_one(&back, &[&"5MB"]).await.expect("restore");
    work_mem_follows(&a, &b, "5MB", "bound").await;
    // the unnamed statement (psycopg's `execute("select set_config(%s, %s, false)", …)`),
    // in a transaction that commits
    a.batch_execute("BEGIN").await.expect("begin");
    let text = tokio_postgres::types::Type::TEXT;
    a.query_typed(
        "SELECT set_config($1, $2, false)",
        &[(&"work_mem", text.clone()), (&"6MB", text)],
    )
    .await
    .expect("unnamed set_config");
    a.batch_execute("COMMIT").await.expect("commit");
    work_mem_follows(&a, &b, "6MB", "unnamed").await;
}

/// `a` sees `want` as its work_mem on the server `b` leaves it while holding the other in
/// a transaction, and again after.
async fn work_mem_follows(a: &Client, b: &Client, want: &str, what: &str) {
    for round in 0..2 {
        b.batch_execute("BEGIN").await.expect("begin");
        pid(b).await;
        assert_eq!(
            simple_value(a, "SHOW work_mem").await,
            want,
            "{what}, round {round}"
        );
        b.batch_execute("COMMIT").await.expect("commit");
        assert_eq!(
            simple_value(a, "SHOW work_mem").await,
            want,
            "{what}, round {round}"
        );
    }
}

/// A rolled-back or failed transaction undoes its SETs; SET LOCAL ends with its
/// transaction; RESET, RESET ALL and DISCARD ALL go back — all as on a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_undone_as_on_a_direct_connection() {
    let env = pool_of(2).await;
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

/// Settings through savepoints, each statement its own request as drivers send them
/// (pgjdbc's `autosave` sets a savepoint before each statement and rolls back to it when
/// one fails): `ROLLBACK TO` undoes only what came after its savepoint, and the transaction
/// commits the rest — as on a direct connection, on any server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_savepoints_as_on_a_direct_connection() {
    let env = pool_of(2).await;
    let direct = env.direct().await;
    let (a, other) = (env.client().await, env.client().await);
    let steps: &[&[&str]] = &[
        // autosave: the SET before the failing statement's savepoint stays
        &[
            "BEGIN",
            "SET work_mem = '9MB'",
            "SAVEPOINT autosave",
            "SELECT 1/0",
            "ROLLBACK TO SAVEPOINT autosave",
            "SAVEPOINT autosave",
            "SET statement_timeout = '8s'",
            "COMMIT",
        ],
        // what came after the savepoint is undone, without any error
        &[
            "BEGIN",
            "SAVEPOINT a",
            "SET work_mem = '10MB'",
            "SAVEPOINT b",
            "SET search_path = sp",
            "RELEASE SAVEPOINT b",
            "ROLLBACK TO a",
            "SET my.var = 'after'",
            "COMMIT",
        ],
        // the latest savepoint of a name; an error after the ROLLBACK TO fails it all
        &[
            "BEGIN",
            "SAVEPOINT s",
            "SET work_mem = '12MB'",
            "SAVEPOINT s",
            "SET work_mem = '14MB'",
            "ROLLBACK TO s",
            "SELECT 1/0",
            "COMMIT",
        ],
    ];
    for (i, step) in steps.iter().enumerate() {
        for sql in *step {
            let direct_result = direct
                .batch_execute(sql)
                .await
                .map_err(|e| e.code().cloned());
            let pake_result = a.batch_execute(sql).await.map_err(|e| e.code().cloned());
            assert_eq!(direct_result, pake_result, "step {i}: {sql}");
        }
        // the check runs on the server the other client leaves free
        other.batch_execute("BEGIN").await.expect("begin");
        pid(&other).await;
        assert_eq!(observe(&a).await, observe(&direct).await, "after step {i}");
        other.batch_execute("COMMIT").await.expect("commit");
        assert_eq!(observe(&a).await, observe(&direct).await, "after step {i}");
    }
}

/// `SET default_transaction_read_only` holds in later transactions on any server, as on a
/// direct connection: a write is refused with 25006.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_default_holds_across_transactions() {
    let env = pool_of(2).await;
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
        tweak: |c| {
            c.pool.server_reset_query = String::new();
            c.pool.session_state = pake::config::SessionState::Reset;
        },
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
    // state that cannot be carried (session_state = "reset") still needs the reset:
    // without one the server goes
    a.batch_execute("CREATE TEMP TABLE gone (id int)")
        .await
        .expect("temp");
    assert_ne!(
        pid(&b).await,
        first,
        "a server with a temp table was reused"
    );
}

/// A startup parameter is replayed as the startup packet gives it: a list such as
/// `search_path=pg_catalog,public` (pgjdbc's `currentSchema`, `-c search_path=a,b` in
/// options) stays a list of two schemas on every server, not one schema of that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_list_parameters_stay_lists() {
    let env = pool_of(2).await;
    let options = "?options=-c%20search_path%3Dpg_catalog%2Cpublic";
    let direct = pake::lab::postgres::connect(&format!("{}{options}", env.lab.url("postgres")))
        .await
        .expect("direct");
    let a = pake::lab::postgres::connect(&format!("{}{options}", env.url("postgres")))
        .await
        .expect("through pake");
    let other = env.client().await;
    let want = simple_value(&direct, "SHOW search_path").await;
    assert_eq!(want, "pg_catalog,public");
    for hold in [false, true, false] {
        // the check runs on the server the other client leaves free
        if hold {
            other.batch_execute("BEGIN").await.expect("begin");
            pid(&other).await;
        }
        assert_eq!(simple_value(&a, "SHOW search_path").await, want);
        let schema: String = a
            .query_one("select current_schema()", &[])
            .await
            .expect("current_schema")
            .get(0);
        assert_eq!(schema, "pg_catalog");
        if hold {
            other.batch_execute("COMMIT").await.expect("commit");
        }
    }
}

/// psql: its settings answer as on a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_settings_match_direct() {
    let env = pool_of(2).await;
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

/// The `pinned` column of SHOW CLIENTS for the clients of database `postgres`, and the
/// pinned-clients gauge.
async fn pinned_view(env: &Env) -> (Vec<String>, f64) {
    let admin = pake::lab::postgres::connect(&env.url("pake"))
        .await
        .expect("console");
    let (cols, rows) = crate::console::show(&admin, "SHOW CLIENTS").await;
    let (db, pinned) = (
        crate::console::col(&cols, "database"),
        crate::console::col(&cols, "pinned"),
    );
    let reasons = rows
        .iter()
        .filter(|r| r[db] == "postgres" && !r[pinned].is_empty())
        .map(|r| r[pinned].clone())
        .collect();
    let (_, metrics) = crate::harness::http_get(&env.admin_url("/metrics")).await;
    let gauge = metrics
        .lines()
        .filter(|l| l.starts_with("pake_pg_pinned_clients{") && l.contains("database=\"postgres\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    (reasons, gauge)
}

async fn temp_tables_on_server(c: &Client) -> i64 {
    c.query_one(
        "select count(*) from pg_class where relpersistence = 't' and relkind = 'r'",
        &[],
    )
    .await
    .expect("count temp tables")
    .get(0)
}

/// `session_state = "pin"` (the default): a temp table created in one transaction is there
/// in the next; the client is shown pinned until DISCARD ALL, then its server goes back to
/// the pool clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_table_pins_the_client_until_discard_all() {
    let env = pool_of(1).await;
    let a = env.client().await;
    let server = pid(&a).await;
    // one dropped when its transaction commits leaves nothing to pin (pgjdbc users create
    // them in a multi-statement execute)
    a.batch_execute("CREATE TEMP TABLE gone (id int) ON COMMIT DROP; INSERT INTO gone VALUES (1)")
        .await
        .expect("temp on commit drop");
    assert_eq!(pinned_view(&env).await, (vec![], 0.0));
    let b = env.client().await;
    assert_eq!(
        pid(&b).await,
        server,
        "not pinned: the server serves others"
    );
    drop(b);
    a.batch_execute("CREATE TEMP TABLE t (id int)")
        .await
        .expect("temp");
    a.batch_execute("INSERT INTO t VALUES (1), (2)")
        .await
        .expect("insert");
    a.execute("INSERT INTO t VALUES ($1)", &[&3i32])
        .await
        .expect("insert");
    assert_eq!(simple_value(&a, "SELECT count(*) FROM t").await, "3");
    assert_eq!(
        pinned_view(&env).await,
        (vec!["temp table".to_string()], 1.0)
    );
    // DISCARD TEMP inside a transaction that rolls back ends nothing
    a.batch_execute("BEGIN; DISCARD TEMP; ROLLBACK")
        .await
        .expect("DISCARD TEMP rolled back");
    assert_eq!(pinned_view(&env).await.1, 1.0);
    assert_eq!(simple_value(&a, "SELECT count(*) FROM t").await, "3");
    a.batch_execute("DISCARD ALL").await.expect("discard");
    assert_eq!(pinned_view(&env).await, (vec![], 0.0));
    // the only server is back in the pool, without the temp table
    let b = env.client().await;
    assert_eq!(pid(&b).await, server);
    assert_eq!(temp_tables_on_server(&b).await, 0);
    assert_eq!(simple_value(&a, "SELECT 7").await, "7");
    drop(b);
    // a pinned client that leaves: its server is reset and reused, clean
    a.batch_execute("CREATE TEMP TABLE u (id int)")
        .await
        .expect("temp");
    drop(a);
    let c = env.client().await;
    assert_eq!(pid(&c).await, server);
    assert_eq!(temp_tables_on_server(&c).await, 0);
    assert_eq!(pinned_view(&env).await, (vec![], 0.0));
}

/// `session_state = "error"`: the statement is refused with 0A000, in and out of a
/// transaction, through both protocols, and the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_mode_refuses_state_that_would_pin() {
    let env = Env::with(Opts {
        pool_size: 1,
        tweak: |c| c.pool.session_state = pake::config::SessionState::Error,
        ..Opts::default()
    })
    .await;
    let a = env.client().await;
    let refused = tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED;
    let e = a
        .batch_execute("CREATE TEMP TABLE t (id int)")
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Some(&refused));
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("session_state"), "{msg}");
    let e = a
        .execute("SELECT pg_advisory_lock(1)", &[])
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Some(&refused));
    // inside a transaction the refusal fails the transaction, as any error would
    a.batch_execute("BEGIN").await.expect("begin");
    let e = a
        .batch_execute("DECLARE c CURSOR WITH HOLD FOR SELECT 1")
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Some(&refused));
    let e = a
        .batch_execute("SELECT 1")
        .await
        .expect_err("aborted transaction");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
    );
    a.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(temp_tables_on_server(&a).await, 0);
    assert_eq!(pinned_view(&env).await, (vec![], 0.0));
    // settings still follow the client in error mode
    a.batch_execute("SET work_mem = '6MB'").await.expect("set");
    assert_eq!(simple_value(&a, "SHOW work_mem").await, "6MB");
}

/// A session advisory lock taken in one transaction is still held by the client in the
/// next, on the same server, while another client runs elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_lock_held_across_transactions() {
    let env = pool_of(2).await;
    let direct = env.direct().await;
    let (a, b) = (env.client().await, env.client().await);
    a.batch_execute("SELECT pg_advisory_lock(42)")
        .await
        .expect("lock");
    for _ in 0..3 {
        b.batch_execute("BEGIN").await.expect("begin");
        b.batch_execute("SELECT 1")
            .await
            .expect("b runs on the other server");
        let held: i64 = direct
            .query_one(
                "select count(*) from pg_locks where locktype = 'advisory' and objid = 42 and granted",
                &[],
            )
            .await
            .expect("locks")
            .get(0);
        assert_eq!(held, 1);
        assert_eq!(
            simple_value(&a, "SELECT pg_try_advisory_lock(42)::text").await,
            "true",
            "re-entrant on the same backend"
        );
        b.batch_execute("COMMIT").await.expect("commit");
    }
    assert_eq!(pinned_view(&env).await.0, vec!["advisory lock".to_string()]);
    assert_eq!(
        simple_value(&a, "SELECT pg_advisory_unlock(42)::text").await,
        "true"
    );
    a.batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .expect("unlock all");
    assert_eq!(pinned_view(&env).await, (vec![], 0.0));
}

/// A `WITH HOLD` cursor declared in one transaction is fetched in later ones; CLOSE lets the
/// client go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hold_cursor_fetched_in_later_transactions() {
    let env = pool_of(2).await;
    let (a, b) = (env.client().await, env.client().await);
    a.batch_execute("DECLARE c CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 5) g")
        .await
        .expect("declare");
    for want in ["1", "2", "3"] {
        b.batch_execute("BEGIN").await.expect("begin");
        b.batch_execute("SELECT 1").await.expect("b");
        assert_eq!(simple_value(&a, "FETCH 1 FROM c").await, want);
        b.batch_execute("COMMIT").await.expect("commit");
    }
    assert_eq!(
        pinned_view(&env).await.0,
        vec!["cursor with hold".to_string()]
    );
    a.batch_execute("CLOSE c").await.expect("close");
    assert_eq!(pinned_view(&env).await, (vec![], 0.0));
}

/// `session_state` follows RELOAD and shows in SHOW CONFIG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_applies_on_reload() {
    let lab = tokio::task::spawn_blocking(|| pake::lab::PgLab::start(Default::default()))
        .await
        .expect("lab thread")
        .expect("lab");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pake.toml");
    let file = |mode: &str| {
        format!(
            "[general]\npg_listen = \"127.0.0.1:0\"\nadmin_users = [\"pake\"]\n\n\
             [pool]\npool_size = 2\nsession_state = \"{mode}\"\n\n\
             [[databases]]\nname = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\n\n\
             [[users]]\nname = \"pake\"\npassword = \"pake\"\n",
            lab.primary.port
        )
    };
    std::fs::write(&path, file("error")).expect("write");
    let config = pake::config::Config::load(&path).expect("config");
    let source = pake::pg::proxy::ConfigSource {
        path: Some(path.clone()),
        overrides: pake::config::QuickStart::default(),
    };
    let running = pake::app::start_with(config, Some(source))
        .await
        .expect("start");
    let url = |db: &str| {
        format!(
            "postgres://pake:pake@127.0.0.1:{}/{db}",
            running.pg_addr.port()
        )
    };
    let admin = pake::lab::postgres::connect(&url("pake"))
        .await
        .expect("console");
    let app = pake::lab::postgres::connect(&url("postgres"))
        .await
        .expect("app");
    let setting = |rows: &[Vec<String>]| {
        rows.iter()
            .find(|r| r[0] == "pool.session_state")
            .map(|r| r[1].clone())
    };
    let (_, rows) = crate::console::show(&admin, "SHOW CONFIG").await;
    assert_eq!(setting(&rows).as_deref(), Some("error"));
    let e = app
        .batch_execute("CREATE TEMP TABLE t ()")
        .await
        .expect_err("refused");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED)
    );
    std::fs::write(&path, file("pin")).expect("write");
    admin.simple_query("RELOAD").await.expect("reload");
    let (_, rows) = crate::console::show(&admin, "SHOW CONFIG").await;
    assert_eq!(setting(&rows).as_deref(), Some("pin"));
    app.batch_execute("CREATE TEMP TABLE t ()")
        .await
        .expect("pinned now");
    app.batch_execute("SELECT * FROM t")
        .await
        .expect("still there");
}

/// Quick start serves any database name on its server: one created at run time, and a
/// maintenance database, with no config change; one that does not exist gets the server's
/// 3D000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_database_name_through_the_wildcard() {
    let env = Env::start().await;
    let direct = env.direct().await;
    direct
        .batch_execute("CREATE DATABASE made_at_run_time")
        .await
        .expect("create database");
    for db in ["made_at_run_time", "template1"] {
        let c = pake::lab::postgres::connect(&env.url(db))
            .await
            .unwrap_or_else(|e| panic!("connect to {db}: {e}"));
        let name: String = c
            .query_one("select current_database()", &[])
            .await
            .expect("current_database")
            .get(0);
        assert_eq!(name, db);
    }
    let e = tokio_postgres::connect(&env.url("no_such_db"), tokio_postgres::NoTls)
        .await
        .map(|_| ())
        .expect_err("no such database");
    assert_eq!(crate::harness::code(&e), "3D000", "{e}");
}

/// The databases served through the wildcard are bounded: past the cap a login gets a clear
/// 53300, and the pools of a database no client uses any more make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_databases_are_bounded() {
    let env = Env::with(Opts {
        tweak: |c| c.general.max_wildcard_databases = 1,
        ..Opts::default()
    })
    .await;
    let direct = env.direct().await;
    for db in ["wild_a", "wild_b"] {
        direct
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create database");
    }
    let a = pake::lab::postgres::connect(&env.url("wild_a"))
        .await
        .expect("first wildcard database");
    a.batch_execute("select 1").await.expect("a");
    let e = tokio_postgres::connect(&env.url("wild_b"), tokio_postgres::NoTls)
        .await
        .map(|_| ())
        .expect_err("over the cap");
    assert_eq!(crate::harness::code(&e), "53300", "{e}");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("max_wildcard_databases"), "{msg}");
    // configured databases do not count
    env.client()
        .await
        .batch_execute("select 1")
        .await
        .expect("postgres");
    drop(a);
    let url = env.url("wild_b");
    let admitted = crate::harness::eventually(std::time::Duration::from_secs(10), || {
        let url = url.clone();
        async move { pake::lab::postgres::connect(&url).await.is_ok() }
    })
    .await;
    assert!(admitted, "the idle database's pools were not dropped");
}

/// `pg_terminate_backend(<the pid Pake gave a client>)` closes that client's connection
/// with 57P01 and answers `t`; the caller keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_the_pid_pake_handed_out_closes_that_client() {
    let env = pool_of(2).await;
    let (victim, victim_pid) = victim(&env).await;
    victim.batch_execute("select 1").await.expect("victim runs");
    let killer = env.client().await;
    let answer = simple_value(
        &killer,
        &format!("SELECT pg_terminate_backend({victim_pid})"),
    )
    .await;
    assert_eq!(answer, "t");
    let closed = closed_soon(&victim).await;
    assert!(closed, "the terminated client still runs queries");
    assert_eq!(simple_value(&killer, "SELECT 5").await, "5");
    // a pid that is not one of Pake's clients is the server's business: it answers `f`
    // (with a WARNING) for a pid that is no backend of its own
    let answer = simple_value(&killer, "SELECT pg_terminate_backend(1)").await;
    assert_eq!(answer, "f");
}

/// asyncpg's first call: Parse and Describe sent with a Flush (answered by the server, which
/// stays in that batch), then Bind, Execute and Sync; named and unnamed.
async fn terminate_after_a_flush(env: &Env, raw: &mut crate::harness::Raw) {
    use crate::harness::frame;
    for name in ["s_flush", ""] {
        let (victim3, pid3) = victim(env).await;
        let parse = format!("{name}\0select pg_terminate_backend($1)\0\0\0");
        let mut req = frame(b'P', parse.as_bytes());
        req.extend(frame(b'D', format!("S{name}\0").as_bytes()));
        req.extend(frame(b'H', b""));
        raw.send(&req).await;
        // ParameterStatus may come first: the server checked out for this client last served
        // the victim (application_name=victim), and Pake's SET bringing it in line reports
        // the client's own value; the protocol allows it at any time
        let unprompted = |t: &str| t.replace('S', "");
        let mut tags = String::new();
        while !tags.ends_with('T') {
            let (tag, _) = raw.read().await.expect("a reply");
            tags.push(tag as char);
        }
        assert_eq!(
            unprompted(&tags),
            "1tT",
            "{name:?}: the server answers the flushed batch"
        );
        let mut bind = format!("\0{name}\0").into_bytes();
        bind.extend_from_slice(b"\0\0\0\x01");
        bind.extend_from_slice(&(pid3.len() as i32).to_be_bytes());
        bind.extend_from_slice(pid3.as_bytes());
        bind.extend_from_slice(b"\0\0");
        let mut req = frame(b'B', &bind);
        req.extend(frame(b'E', b"\0\0\0\0\0"));
        req.extend(frame(b'S', b""));
        raw.send(&req).await;
        let reply = raw.until_ready().await;
        assert_eq!(reply.tags, "2DCZ", "{name:?}: {reply:?}");
        assert_eq!(reply.value.as_deref(), Some(&b"t"[..]));
        let closed = closed_soon(&victim3).await;
        assert!(closed, "{name:?}: the terminated client still runs queries");
        // the server's batch was ended: the next request is served
        raw.send(&crate::harness::query("select 7")).await;
        let reply = raw.until_ready().await;
        assert_eq!(
            (unprompted(&reply.tags).as_str(), reply.value.as_deref()),
            ("TDCZ", Some(&b"7"[..]))
        );
    }
}

/// The same with the pid bound as a parameter, as drivers send it: a named statement inside
/// the caller's transaction (tokio-postgres, asyncpg), the unnamed one with a binary result
/// (psycopg, pgjdbc, node-postgres), and a client's own pid, which ends it with 57P01 and no
/// row, as a server ends its own session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_a_bound_pid_as_drivers_send_it() {
    use crate::harness::{frame, Raw};
    let env = pool_of(2).await;
    let (victim1, pid1) = victim(&env).await;
    let pid1: i32 = pid1.parse().expect("pid");
    let mut killer = env.client().await;
    let tx = killer.transaction().await.expect("begin");
    let row = tx
        .query_one("select pg_terminate_backend($1)", &[&pid1])
        .await
        .expect("terminate");
    assert!(row.get::<_, bool>(0), "a bool, as the server answers");
    let closed = closed_soon(&victim1).await;
    assert!(closed, "the terminated client still runs queries");
    // the caller's transaction went on around the answer
    let n: i64 = tx
        .query_one("select 41::int8 + 1", &[])
        .await
        .expect("in tx")
        .get(0);
    assert_eq!(n, 42);
    tx.commit().await.expect("commit");

    // Parse/Bind/Describe/Execute/Sync of the unnamed statement, `$1::int` in text, the
    // result in binary
    let (victim2, pid2) = victim(&env).await;
    let mut raw = Raw::login(&env, &env.lab.user, &env.lab.password, "postgres")
        .await
        .expect("login");
    let mut req = frame(b'P', b"\0select pg_terminate_backend($1::int)\0\0\0");
    let mut bind = b"\0\0\0\0\0\x01".to_vec();
    bind.extend_from_slice(&(pid2.len() as i32).to_be_bytes());
    bind.extend_from_slice(pid2.as_bytes());
    bind.extend_from_slice(b"\0\x01\0\x01");
    req.extend(frame(b'B', &bind));
    req.extend(frame(b'D', b"P\0"));
    req.extend(frame(b'E', b"\0\0\0\0\0"));
    req.extend(frame(b'S', b""));
    raw.send(&req).await;
    let reply = raw.until_ready().await;
    assert_eq!(reply.tags, "12TDCZ", "{reply:?}");
    assert_eq!(reply.value.as_deref(), Some(&[1u8][..]), "binary true");
    let closed = closed_soon(&victim2).await;
    assert!(closed, "the second terminated client still runs queries");

    terminate_after_a_flush(&env, &mut raw).await;

    // its own pid: 57P01 before any row, then the connection is closed
    let own = raw.pid.to_string();
    let mut bind = b"\0\0\0\0\0\x01".to_vec();
    bind.extend_from_slice(&(own.len() as i32).to_be_bytes());
    bind.extend_from_slice(own.as_bytes());
    bind.extend_from_slice(b"\0\0");
    let mut req = frame(b'P', b"\0select pg_terminate_backend($1)\0\0\0");
    req.extend(frame(b'B', &bind));
    req.extend(frame(b'E', b"\0\0\0\0\0"));
    req.extend(frame(b'S', b""));
    raw.send(&req).await;
    let mut tags = String::new();
    while let Some((tag, body)) = raw.read().await {
        tags.push(tag as char);
        if tag == b'E' {
            assert_eq!(crate::harness::field(&body, b'C'), "57P01");
        }
    }
    assert_eq!(tags, "12E", "no row for a client that ended itself");
    assert_eq!(simple_value(&killer, "SELECT 5").await, "5");
}

/// Session mode: each client holds its server, and drivers run the call as a named statement
/// (asyncpg's pool tests): answered as in transaction mode, the statement remembered at its
/// Parse and forgotten at its Close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_a_bound_pid_in_session_mode() {
    let env = session_mode().await;
    let killer = env.client().await;
    let terminate = killer
        .prepare("select pg_terminate_backend($1)")
        .await
        .expect("prepare");
    for round in 0..2 {
        let (victim, pid) = victim(&env).await;
        victim.batch_execute("select 1").await.expect("victim runs");
        let pid: i32 = pid.parse().expect("pid");
        let row = killer
            .query_one(&terminate, &[&pid])
            .await
            .expect("terminate");
        assert!(row.get::<_, bool>(0), "round {round}");
        let closed = closed_soon(&victim).await;
        assert!(
            closed,
            "round {round}: the terminated client still runs queries"
        );
    }
    // a pid that is none of Pake's goes to the server, which answers false
    let row = killer
        .query_one(&terminate, &[&1i32])
        .await
        .expect("server");
    assert!(!row.get::<_, bool>(0));
    // SQL DEALLOCATE ends the statement: a Bind of it is the server's to refuse (26000),
    // and the client it names lives
    let (victim_c, pid) = victim(&env).await;
    let pid: i32 = pid.parse().expect("pid");
    killer
        .batch_execute("DEALLOCATE ALL")
        .await
        .expect("deallocate");
    let e = killer
        .query_one(&terminate, &[&pid])
        .await
        .expect_err("deallocated");
    assert_eq!(crate::harness::code(&e), "26000");
    assert_eq!(simple_value(&victim_c, "SELECT 3").await, "3");
    drop(victim_c); // (its server goes back for the next victims: the pool is small)
    let mut raw = crate::harness::Raw::login(&env, &env.lab.user, &env.lab.password, "postgres")
        .await
        .expect("login");
    terminate_after_a_flush(&env, &mut raw).await;
}

/// Another user (not an admin) may not terminate a client: 42501, and the client lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_another_users_client_is_refused() {
    let env = Env::with(Opts {
        tweak: crate::harness::with_guest,
        ..Opts::default()
    })
    .await;
    env.direct()
        .await
        .batch_execute("create role guest login password 'guest'")
        .await
        .expect("create role");
    let (victim, victim_pid) = victim(&env).await;
    let guest_url = format!(
        "postgres://guest:guest@127.0.0.1:{}/postgres",
        env.pake.pg_addr.port()
    );
    let guest = pake::lab::postgres::connect(&guest_url)
        .await
        .expect("guest");
    let e = guest
        .batch_execute(&format!("SELECT pg_terminate_backend({victim_pid})"))
        .await
        .expect_err("refused");
    assert_eq!(crate::harness::code(&e), "42501");
    assert_eq!(simple_value(&guest, "SELECT 1").await, "1");
    assert_eq!(simple_value(&victim, "SELECT 2").await, "2");
}

/// A pinned client between transactions is still subject to `client_idle_timeout`: it is
/// closed, and its server is reset and back in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pinned_client_times_out() {
    let env = Env::with(Opts {
        pool_size: 1,
        tweak: |c| c.pool.client_idle_timeout = pake::config::Dur::millis(300),
        ..Opts::default()
    })
    .await;
    let a = env.client().await;
    a.batch_execute("CREATE TEMP TABLE idle_t (id int)")
        .await
        .expect("temp");
    let closed = crate::harness::eventually(std::time::Duration::from_secs(10), || async {
        a.is_closed()
    })
    .await;
    assert!(closed, "the idle pinned client was not closed");
    let b = env.client().await;
    assert_eq!(temp_tables_on_server(&b).await, 0);
    assert_eq!(pinned_view(&env).await, (vec![], 0.0));
}

/// `DROP DATABASE` / `ALTER DATABASE … RENAME` of a database clients used through Pake: the
/// idle pooled servers still connected to it (which no client can see) are closed first,
/// so the statement works as it does directly; a client still connected makes it fail as
/// it would directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_database_is_not_blocked_by_idle_pooled_servers() {
    let env = Env::start().await;
    let direct = env.direct().await;
    for db in ["dropped_later", "renamed_later"] {
        direct
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create database");
    }
    for db in ["dropped_later", "renamed_later"] {
        // the client leaves; its server stays in the pool, connected to the database
        use_and_leave(&env, db).await;
    }
    let idle: i64 = direct
        .query_one(
            "select count(*) from pg_stat_activity where datname in ('dropped_later', 'renamed_later')",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert!(idle >= 2, "pooled servers stay connected ({idle})");
    let admin = env.client().await;
    admin
        .batch_execute("ALTER DATABASE renamed_later RENAME TO renamed_now")
        .await
        .expect("rename through pake");
    // the extended protocol too
    admin
        .execute("DROP DATABASE IF EXISTS dropped_later", &[])
        .await
        .expect("drop through pake");
    let left: i64 = direct
        .query_one(
            "select count(*) from pg_database where datname in ('dropped_later', 'renamed_later')",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
    // a client that is still connected is another session, as it would be directly
    let holder = pake::lab::postgres::connect(&env.url("renamed_now"))
        .await
        .expect("connect");
    holder
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("hold a server");
    let e = admin
        .batch_execute("DROP DATABASE renamed_now")
        .await
        .expect_err("in use by a client");
    assert_eq!(crate::harness::code(&e), "55006", "{e}");
    holder.batch_execute("COMMIT").await.expect("commit");
    // the DROP run again from its prepared statement (a Bind, no Parse: psycopg prepares a
    // statement on its fifth run) frees the database as its Parse does
    let drop_it = admin
        .prepare("DROP DATABASE IF EXISTS dropped_later")
        .await
        .expect("prepare");
    direct
        .batch_execute("CREATE DATABASE dropped_later")
        .await
        .expect("create again");
    use_and_leave(&env, "dropped_later").await;
    admin
        .execute(&drop_it, &[])
        .await
        .expect("the prepared drop");
    // a plain CREATE DATABASE copies template1: a pooled server left there (psql to
    // template1 through Pake) made it fail with 55006 until the server idled out
    use_and_leave(&env, "template1").await;
    admin
        .batch_execute("CREATE DATABASE from_template1")
        .await
        .expect("create from template1");
}

/// Session mode resets a leaving client's server in the background before it goes back to
/// the pool; a DROP DATABASE sent the moment that client left (asyncpg's
/// test_type_cache_invalidation_in_pool) found no idle server to close, and the reset one came
/// back connected while PostgreSQL waited 5 s for it: 55006. Servers out of the pool when a
/// database is freed are closed when they come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_database_right_after_its_last_session_mode_client_left() {
    let env = session_mode().await;
    let direct = env.direct().await;
    let admin = env.client().await;
    for round in 0..3 {
        direct
            .batch_execute("CREATE DATABASE left_just_now")
            .await
            .expect("create database");
        let c = pake::lab::postgres::connect(&env.url("left_just_now"))
            .await
            .expect("connect");
        c.batch_execute("SET work_mem = '5MB'; select 1")
            .await
            .expect("use it");
        drop(c); // its server is reset in the background
                 // PostgreSQL waits 5 s for the database's other sessions, then fails with 55006
        admin
            .batch_execute("DROP DATABASE left_just_now")
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
    }
}
