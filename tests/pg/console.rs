//! The admin console over the Postgres port: SHOW commands with PgBouncer's columns, admin
//! users only, PAUSE/RESUME, RELOAD, SHUTDOWN.

use crate::harness::{code, pg_bin, with_guest, Env, Opts};
use std::time::Duration;
use tokio_postgres::SimpleQueryMessage;

/// Column names and rows of a console command.
pub async fn show(c: &tokio_postgres::Client, cmd: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let msgs = c
        .simple_query(cmd)
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(d) => {
                columns = d.iter().map(|c| c.name().to_string()).collect()
            }
            SimpleQueryMessage::Row(r) => rows.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => {}
        }
    }
    (columns, rows)
}

pub fn col(columns: &[String], name: &str) -> usize {
    columns
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {columns:?}"))
}

async fn console(env: &Env) -> tokio_postgres::Client {
    pake::lab::postgres::connect(&env.url("pake"))
        .await
        .expect("admin console")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_have_pgbouncer_columns() {
    let env = Env::start().await;
    let app = env.client().await;
    app.batch_execute("select 1").await.unwrap();
    let admin = console(&env).await;

    let (cols, rows) = show(&admin, "SHOW POOLS").await;
    for c in [
        "database",
        "user",
        "cl_active",
        "cl_waiting",
        "sv_active",
        "sv_idle",
        "sv_used",
        "maxwait",
        "maxwait_us",
        "pool_mode",
    ] {
        col(&cols, c);
    }
    let pool = rows
        .iter()
        .find(|r| r[col(&cols, "database")] == "postgres")
        .expect("the app's pool");
    assert_eq!(pool[col(&cols, "user")], "pake");
    assert_eq!(pool[col(&cols, "pool_mode")], "transaction");
    assert_eq!(pool[col(&cols, "sv_idle")], "1");

    let (cols, rows) = show(&admin, "SHOW STATS").await;
    for c in [
        "database",
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_wait_time",
        "avg_query_count",
    ] {
        col(&cols, c);
    }
    let stats = rows.iter().find(|r| r[0] == "postgres").expect("stats row");
    assert!(
        stats[col(&cols, "total_query_count")]
            .parse::<u64>()
            .unwrap()
            >= 1
    );

    let (cols, rows) = show(&admin, "SHOW CLIENTS").await;
    for c in [
        "type",
        "user",
        "database",
        "state",
        "addr",
        "port",
        "connect_time",
        "application_name",
    ] {
        col(&cols, c);
    }
    assert!(rows.iter().any(|r| r[col(&cols, "database")] == "postgres"));
    assert!(
        rows.iter().any(|r| r[col(&cols, "database")] == "pake"),
        "the admin itself"
    );

    let (cols, rows) = show(&admin, "SHOW SERVERS").await;
    col(&cols, "remote_pid");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][col(&cols, "state")], "idle");
    let pid: i32 = rows[0][col(&cols, "remote_pid")].parse().unwrap();
    let real: i32 = env
        .direct()
        .await
        .query_one(
            "select pid from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pid, real, "SHOW SERVERS names the real backend");

    let (cols, rows) = show(&admin, "SHOW DATABASES").await;
    for c in [
        "name",
        "host",
        "port",
        "database",
        "force_user",
        "pool_size",
        "pool_mode",
        "current_connections",
        "paused",
    ] {
        col(&cols, c);
    }
    assert_eq!(rows[0][col(&cols, "pool_size")], "5");

    let (cols, rows) = show(&admin, "SHOW CONFIG").await;
    assert_eq!(cols, ["key", "value", "default", "changeable"]);
    let pool_size = rows.iter().find(|r| r[0] == "pool.pool_size").unwrap();
    assert_eq!((pool_size[1].as_str(), pool_size[3].as_str()), ("5", "yes"));
    let listen = rows.iter().find(|r| r[0] == "general.pg_listen").unwrap();
    assert_eq!(listen[3], "no");

    let (_, rows) = show(&admin, "SHOW VERSION").await;
    assert!(rows[0][0].starts_with("Pake "));
    let (cols, _) = show(&admin, "SHOW REPLICAS").await;
    col(&cols, "lag_bytes");
    let (_, rows) = show(&admin, "SHOW HELP").await;
    assert!(rows.len() > 10);
    let e = admin.simple_query("SHOW NONSENSE").await.unwrap_err();
    assert_eq!(code(&e), "42601");
    let e = admin.simple_query("DROP TABLE x").await.unwrap_err();
    assert_eq!(code(&e), "42601");
    // started without a file: nothing to reload, said as a configuration-file error
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(code(&e), "F0000", "{e}");
    // psql, unaligned
    let out = std::process::Command::new(pg_bin("psql"))
        .args(["-X", "-A", "-c", "SHOW POOLS"])
        .arg(env.url("pake"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("database|user|cl_active|cl_waiting"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_get_in() {
    let env = Env::with(Opts {
        tweak: with_guest,
        ..Opts::default()
    })
    .await;
    let url = format!(
        "postgres://guest:guest@127.0.0.1:{}/pake",
        env.pake.pg_addr.port()
    );
    let e = pake::lab::postgres::connect(&url)
        .await
        .expect_err("guest is no admin");
    assert!(e.to_string().contains("42501"), "{e}");
    let wrong = env.url("pake").replace(":pake@", ":nope@");
    assert!(pake::lab::postgres::connect(&wrong).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_transactions_and_resume_releases() {
    let env = Env::start().await;
    let a = env.client().await;
    a.batch_execute("begin; select 1").await.unwrap();
    let admin = console(&env).await;
    let pause = tokio::spawn(async move {
        admin.simple_query("PAUSE").await.unwrap();
        admin
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pause.is_finished(), "PAUSE waits for the open transaction");
    a.batch_execute("commit").await.unwrap();
    let admin = tokio::time::timeout(Duration::from_secs(10), pause)
        .await
        .expect("PAUSE returns once servers are idle")
        .unwrap();
    let b = env.client().await;
    let held = tokio::spawn(async move {
        b.query_one("select 42", &[])
            .await
            .map(|r| r.get::<_, i32>(0))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "new transactions are held while paused"
    );
    let (cols, rows) = show(&admin, "SHOW POOLS").await;
    assert_eq!(rows[0][col(&cols, "paused")], "yes");
    admin.simple_query("RESUME").await.unwrap();
    let v = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(v, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_pool_size_without_dropping_clients() {
    let lab =
        tokio::task::spawn_blocking(|| pake::lab::PgLab::start(pake::lab::PgOptions::default()))
            .await
            .unwrap()
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pake.toml");
    let file = |size: usize| {
        format!(
            "[general]\npg_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_users = [\"pake\"]\n\n\
             [pool]\npool_size = {size}\n\n[[databases]]\nname = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\n\n\
             [[users]]\nname = \"pake\"\npassword = \"pake\"\n",
            lab.primary.port
        )
    };
    std::fs::write(&path, file(2)).unwrap();
    let config = pake::config::Config::load(&path).unwrap();
    let source = pake::pg::proxy::ConfigSource {
        path: Some(path.clone()),
        overrides: pake::config::QuickStart::default(),
    };
    let running = pake::app::start_with(config, Some(source)).await.unwrap();
    let url = |db: &str| {
        format!(
            "postgres://pake:pake@127.0.0.1:{}/{db}",
            running.pg_addr.port()
        )
    };
    let app = pake::lab::postgres::connect(&url("postgres"))
        .await
        .unwrap();
    app.batch_execute("select 1").await.unwrap();
    let admin = pake::lab::postgres::connect(&url("pake")).await.unwrap();
    std::fs::write(&path, file(7)).unwrap();
    admin.simple_query("RELOAD").await.unwrap();
    let (cols, rows) = show(&admin, "SHOW DATABASES").await;
    assert_eq!(rows[0][col(&cols, "pool_size")], "7");
    let (_, rows) = show(&admin, "SHOW CONFIG").await;
    assert_eq!(
        rows.iter().find(|r| r[0] == "pool.pool_size").unwrap()[1],
        "7"
    );
    // the client connected before the reload keeps working
    let v: i32 = app.query_one("select 9", &[]).await.unwrap().get(0);
    assert_eq!(v, 9);
    // 7 transactions can now be open at once
    let app_url = url("postgres");
    let mut clients = Vec::new();
    for _ in 0..7 {
        clients.push(pake::lab::postgres::connect(&app_url).await.unwrap());
    }
    for c in &clients {
        c.batch_execute("begin; select 1").await.unwrap();
    }
    // a broken file is refused and the running config stays
    std::fs::write(&path, "[pool]\npool_size = \"many\"\n").unwrap();
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(code(&e), "F0000", "{e}");
    assert!(format!("{e:?}").contains("pool.pool_size"), "{e:?}");
    let (cols, rows) = show(&admin, "SHOW DATABASES").await;
    assert_eq!(rows[0][col(&cols, "pool_size")], "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_queries_and_cache() {
    let env = Env::start().await;
    let app = env.client().await;
    for i in 0..7 {
        app.query_one("select $1::int + 1 as plus_one", &[&i])
            .await
            .unwrap();
    }
    let admin = console(&env).await;
    let (cols, rows) = show(&admin, "SHOW QUERIES").await;
    let q = rows
        .iter()
        .find(|r| r[col(&cols, "query")].contains("plus_one"))
        .unwrap_or_else(|| panic!("statement recorded: {rows:?}"));
    assert_eq!(q[col(&cols, "calls")], "7");
    let (_, rows) = show(&admin, "SHOW CACHE").await;
    assert_eq!(rows[0], ["redis", "not configured"]);
}
