//! Pools, breakers and replica monitors are built at start and at RELOAD, not in a client's
//! login: the pools are listed before anyone connected, the first read goes to the replica,
//! a server down at start does not stop Pake, and a RELOAD adds and removes databases while
//! other clients go on (or, when it fails, changes nothing).

use crate::console::{col, show};
use crate::harness::{code, eventually, http_get, start_pake, Opts};
use pake::lab::{PgLab, PgOptions};
use std::time::{Duration, Instant};

async fn lab(opts: PgOptions) -> PgLab {
    tokio::task::spawn_blocking(move || PgLab::start(opts))
        .await
        .expect("lab thread")
        .expect("lab start")
}

fn url(port: u16, db: &str) -> String {
    format!("postgres://pake:pake@127.0.0.1:{port}/{db}")
}

/// `(database, user)` of every SHOW POOLS row, with its open servers (active + idle).
async fn pools(admin: &tokio_postgres::Client) -> Vec<(String, String, u64)> {
    let (cols, rows) = show(admin, "SHOW POOLS").await;
    let n = |r: &Vec<String>, c: &str| r[col(&cols, c)].parse::<u64>().unwrap_or(u64::MAX);
    rows.iter()
        .map(|r| {
            (
                r[col(&cols, "database")].clone(),
                r[col(&cols, "user")].clone(),
                n(r, "sv_active") + n(r, "sv_idle"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_listed_before_any_client_and_the_first_read_goes_to_the_replica() {
    let lab = lab(PgOptions {
        replica: true,
        ..PgOptions::default()
    })
    .await;
    let opts = Opts {
        // a monitor that samples rarely: only the sample taken at start can route the read
        tweak: |c| c.routing.health_check_interval = pake::config::Dur::secs(3600),
        ..Opts::default()
    };
    let pake = start_pake(&lab, &opts).await;
    let port = pake.pg_addr.port();
    let admin = pake::lab::postgres::connect(&url(port, "pake"))
        .await
        .expect("console");
    let listed = pools(&admin).await;
    assert!(
        listed
            .iter()
            .any(|(db, user, _)| db == "postgres" && user == "pake"),
        "the configured pool exists before any client: {listed:?}"
    );
    assert!(
        listed.iter().all(|(_, _, servers)| *servers == 0),
        "built, not connected: {listed:?}"
    );
    let app = pake::lab::postgres::connect(&url(port, "postgres"))
        .await
        .expect("first client");
    let rows = app
        .simple_query("select pg_is_in_recovery()")
        .await
        .expect("first read");
    let on_replica = rows
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("t")));
    assert!(
        on_replica,
        "the first read of the first client ran on the primary"
    );
    let replica = format!("127.0.0.1:{}", lab.replica.as_ref().expect("replica").port);
    let admin_url = format!("http://{}/metrics", pake.admin_addr.expect("admin"));
    let (_, text) = http_get(&admin_url).await;
    let routed = text
        .lines()
        .find(|l| l.starts_with("pake_pg_routed_total") && l.contains(&replica))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(routed, Some(1.0), "one request routed to the replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_the_primary_down_and_serves_once_it_is_up() {
    let mut lab = lab(PgOptions::default()).await;
    lab = tokio::task::spawn_blocking(move || {
        lab.primary.stop();
        lab
    })
    .await
    .expect("stop primary");
    let started = Instant::now();
    let pake = start_pake(&lab, &Opts::default()).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "start waited {:?} for a server that is down",
        started.elapsed()
    );
    let port = pake.pg_addr.port();
    let admin = pake::lab::postgres::connect(&url(port, "pake"))
        .await
        .expect("console while the primary is down");
    assert!(pools(&admin)
        .await
        .iter()
        .any(|(db, _, _)| db == "postgres"));
    let e = pake::lab::postgres::connect(&url(port, "postgres"))
        .await
        .expect_err("no server yet");
    assert!(!e.to_string().is_empty());
    lab = tokio::task::spawn_blocking(move || {
        lab.primary.start().expect("primary starts again");
        lab
    })
    .await
    .expect("start primary");
    let served = eventually(Duration::from_secs(30), || async {
        match pake::lab::postgres::connect(&url(port, "postgres")).await {
            Ok(c) => c.simple_query("select 1").await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(served, "not served after the primary came up");
    drop(lab);
}

/// A config file with these database names, all on the lab's `postgres` database.
fn file(port: u16, pool_size: &str, dbs: &[&str]) -> String {
    let mut text = format!(
        "[general]\npg_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_users = [\"pake\"]\n\n\
         [pool]\npool_size = {pool_size}\n"
    );
    for db in dbs {
        text.push_str(&format!(
            "\n[[databases]]\nname = \"{db}\"\ndbname = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\n"
        ));
    }
    text.push_str("\n[[users]]\nname = \"pake\"\npassword = \"pake\"\n");
    text
}

/// Pake started from a config file with `text` (kept in a temp dir, for RELOAD to reread):
/// the dir (dropped with the test), the file and the running Pake.
async fn start_from_file(
    text: String,
) -> (tempfile::TempDir, std::path::PathBuf, pake::app::Running) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pake.toml");
    std::fs::write(&path, text).expect("write");
    let config = pake::config::Config::load(&path).expect("config");
    let source = pake::pg::proxy::ConfigSource {
        path: Some(path.clone()),
        overrides: pake::config::QuickStart::default(),
    };
    let running = pake::app::start_with(config, Some(source))
        .await
        .expect("start");
    (dir, path, running)
}

async fn one(c: &tokio_postgres::Client) -> Result<i32, tokio_postgres::Error> {
    Ok(c.query_one("select 1", &[]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_databases_while_others_go_on_and_a_bad_one_changes_nothing() {
    let lab = lab(PgOptions::default()).await;
    let pg = lab.primary.port;
    let (_dir, path, running) = start_from_file(file(pg, "3", &["keep", "gone"])).await;
    let port = running.pg_addr.port();
    let connect =
        |db: &'static str| async move { pake::lab::postgres::connect(&url(port, db)).await };
    let admin = connect("pake").await.expect("console");
    let keep = connect("keep").await.expect("keep");
    let gone = connect("gone").await.expect("gone");
    assert_eq!(one(&keep).await.expect("keep"), 1);
    gone.batch_execute("begin").await.expect("begin");
    assert_eq!(one(&gone).await.expect("in the transaction"), 1);

    std::fs::write(&path, file(pg, "3", &["keep", "added"])).expect("write");
    admin.simple_query("RELOAD").await.expect("reload");
    let listed = pools(&admin).await;
    let dbs: Vec<&str> = listed.iter().map(|(db, _, _)| db.as_str()).collect();
    assert_eq!(dbs, ["added", "keep"], "{listed:?}");
    assert_eq!(listed[0].2, 0, "added is built, not yet connected");
    // the added database is served
    let added = connect("added").await.expect("added");
    assert_eq!(one(&added).await.expect("added"), 1);
    // the removed one refuses new logins with 3D000
    let e = connect("gone").await.expect_err("gone is refused");
    assert!(e.to_string().contains("3D000"), "{e}");
    // its client's open transaction finishes; the next one is told the database is gone
    assert_eq!(one(&gone).await.expect("same transaction"), 1);
    gone.batch_execute("commit").await.expect("commit");
    let e = one(&gone).await.expect_err("database removed");
    assert_eq!(code(&e), "3D000", "{e}");
    assert!(e.to_string().contains("RELOAD") || format!("{e:?}").contains("RELOAD"));
    // the other clients never noticed
    assert_eq!(one(&keep).await.expect("keep after reload"), 1);

    // a file that breaks a rule: F0000 naming the key, and nothing changes
    std::fs::write(&path, file(pg, "0", &["keep", "other"])).expect("write");
    let e = admin.simple_query("RELOAD").await.expect_err("invalid");
    assert_eq!(code(&e), "F0000", "{e}");
    assert!(format!("{e:?}").contains("pool.pool_size"), "{e:?}");
    let after: Vec<(String, String)> = pools(&admin)
        .await
        .into_iter()
        .map(|(d, u, _)| (d, u))
        .collect();
    let before: Vec<(String, String)> = listed.into_iter().map(|(d, u, _)| (d, u)).collect();
    assert_eq!(after, before);
    let (cols, rows) = show(&admin, "SHOW DATABASES").await;
    assert!(rows.iter().all(|r| r[col(&cols, "pool_size")] == "3"));
    assert_eq!(one(&added).await.expect("added after a failed reload"), 1);
    assert_eq!(one(&keep).await.expect("keep after a failed reload"), 1);
}

/// The server pids of client backends on the lab primary.
async fn backends(lab: &PgLab) -> Vec<i32> {
    let c = lab.client("postgres").await.expect("direct");
    c.query(
        "select pid from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
        &[],
    )
    .await
    .expect("pg_stat_activity")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("select pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid")
        .get(0)
}

/// A database whose servers change (here: an explicit `server_user`, the same login) gets new
/// pools; the old ones close their idle servers at once and a busy one when its transaction
/// ends, and that client's next transaction runs on the new pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_drains_a_changed_database_gracefully() {
    let lab = lab(PgOptions::default()).await;
    let pg = lab.primary.port;
    let (_dir, path, running) = start_from_file(file(pg, "3", &["app"])).await;
    let port = running.pg_addr.port();
    let admin = pake::lab::postgres::connect(&url(port, "pake"))
        .await
        .expect("console");
    let busy = pake::lab::postgres::connect(&url(port, "app"))
        .await
        .expect("busy");
    let idle = pake::lab::postgres::connect(&url(port, "app"))
        .await
        .expect("idle");
    busy.batch_execute("begin").await.expect("begin");
    let busy_pid = backend_pid(&busy).await;
    let idle_pid = backend_pid(&idle).await; // its server goes back to the pool, idle
    assert_ne!(busy_pid, idle_pid);

    let changed = file(pg, "3", &["app"]).replace(
        "dbname = \"postgres\"",
        "dbname = \"postgres\"\nserver_user = \"pake\"\nserver_password = \"pake\"",
    );
    std::fs::write(&path, changed).expect("write");
    admin.simple_query("RELOAD").await.expect("reload");
    let gone = eventually(Duration::from_secs(10), || async {
        !backends(&lab).await.contains(&idle_pid)
    })
    .await;
    assert!(gone, "the old pool's idle server was not closed");
    assert_eq!(
        backend_pid(&busy).await,
        busy_pid,
        "the open transaction stays on its server"
    );
    assert!(backends(&lab).await.contains(&busy_pid));
    busy.batch_execute("commit").await.expect("commit");
    let closed = eventually(Duration::from_secs(10), || async {
        !backends(&lab).await.contains(&busy_pid)
    })
    .await;
    assert!(closed, "the busy server was not closed at release");
    let next = backend_pid(&busy).await;
    assert!(next != busy_pid && next != idle_pid, "a new pool's server");
    assert_eq!(one(&idle).await.expect("idle client goes on"), 1);
}

/// `min_pool_size` warms the pools built at start in the background, before any client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_is_warm_before_the_first_client() {
    let lab = lab(PgOptions::default()).await;
    let opts = Opts {
        tweak: |c| c.pool.min_pool_size = 2,
        ..Opts::default()
    };
    let pake = start_pake(&lab, &opts).await;
    let admin = pake::lab::postgres::connect(&url(pake.pg_addr.port(), "pake"))
        .await
        .expect("console");
    let warm = eventually(Duration::from_secs(10), || async {
        pools(&admin)
            .await
            .iter()
            .any(|(db, user, servers)| db == "postgres" && user == "pake" && *servers == 2)
    })
    .await;
    assert!(warm, "{:?}", pools(&admin).await);
    // SHOW POOLS counts a server from the moment its open starts: wait for both to log in,
    // asking on one connection (a connection per look leaves exiting backends behind)
    let direct = lab.client("postgres").await.expect("direct");
    let count = || async {
        let row = direct
            .query_one(
                "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_activity");
        row.get::<_, i64>(0)
    };
    let opened = eventually(Duration::from_secs(10), || async { count().await == 2 }).await;
    assert!(opened, "opened by Pake, no client: {}", count().await);
}

/// A client queued for a server of a pool that a RELOAD replaces is served by the new pool,
/// with no error: nothing had been sent for it yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_in_a_replaced_pool_moves_to_the_new_one() {
    let lab = lab(PgOptions::default()).await;
    let pg = lab.primary.port;
    let (_dir, path, running) = start_from_file(file(pg, "1", &["app"])).await;
    let port = running.pg_addr.port();
    let admin = pake::lab::postgres::connect(&url(port, "pake"))
        .await
        .expect("console");
    let holder = pake::lab::postgres::connect(&url(port, "app"))
        .await
        .expect("holder");
    holder.batch_execute("begin").await.expect("begin");
    assert_eq!(one(&holder).await.expect("holds the only server"), 1);
    let waiter = pake::lab::postgres::connect(&url(port, "app"))
        .await
        .expect("waiter");
    let queued = tokio::spawn(async move { one(&waiter).await.map(|v| (v, waiter)) });
    let waiting = eventually(Duration::from_secs(10), || async {
        let (cols, rows) = show(&admin, "SHOW POOLS").await;
        rows.iter().any(|r| r[col(&cols, "cl_waiting")] == "1")
    })
    .await;
    assert!(waiting, "the second client never queued");

    let changed = file(pg, "1", &["app"]).replace(
        "dbname = \"postgres\"",
        "dbname = \"postgres\"\nserver_user = \"pake\"\nserver_password = \"pake\"",
    );
    std::fs::write(&path, changed).expect("write");
    admin.simple_query("RELOAD").await.expect("reload");
    let (v, _waiter) = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("the queued client was served")
        .expect("task")
        .expect("no error for the queued client");
    assert_eq!(v, 1);
    assert_eq!(one(&holder).await.expect("still in its transaction"), 1);
    holder.batch_execute("commit").await.expect("commit");
}
