//! Replication connections (`replication=database` logical, `replication=true` physical)
//! through Pake: each gets a server of its own, logged in with the pool's credentials after
//! Pake checked the client's, and relayed byte for byte.

use crate::harness::{pg_bin, query, Env, Raw};
use std::process::{Command, Output};
use std::time::Duration;

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run"))
        .await
        .expect("thread")
}

fn psql(url: &str, sql: &str) -> Command {
    let mut c = Command::new(pg_bin("psql"));
    c.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .arg(url);
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn walsenders(direct: &tokio_postgres::Client) -> i64 {
    direct
        .query_one(
            "select count(*) from pg_stat_activity where backend_type = 'walsender'",
            &[],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_clients_get_a_server_of_their_own() {
    let env = Env::start().await;
    let direct = env.direct().await;
    let system: i64 = direct
        .query_one("select system_identifier from pg_control_system()", &[])
        .await
        .expect("system identifier")
        .get(0);
    let before = walsenders(&direct).await;

    // logical (replication=database): IDENTIFY_SYSTEM is the primary's own answer
    let url = format!("{}?replication=database", env.url("postgres"));
    let out = run(psql(&url, "IDENTIFY_SYSTEM")).await;
    assert!(out.status.success(), "{}", text(&out));
    let row = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        row.starts_with(&format!("{system}|")) && row.ends_with("|postgres"),
        "{row}"
    );

    // Pake checks the password first: a wrong one never reaches the server
    let wrong = url.replacen(&format!(":{}@", env.lab.password), ":not-the-password@", 1);
    let out = run(psql(&wrong, "IDENTIFY_SYSTEM")).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("password authentication failed"),
        "{}",
        text(&out)
    );

    // physical: pg_basebackup copies the primary, its WAL streamed on a second connection
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("copy");
    let mut backup = Command::new(pg_bin("pg_basebackup"));
    backup
        .args(["-d", &env.url("postgres"), "-X", "stream", "-c", "fast"])
        .args(["--no-sync", "-w", "-D"])
        .arg(&target);
    let out = run(backup).await;
    assert!(out.status.success(), "{}", text(&out));
    let version = std::fs::read_to_string(target.join("PG_VERSION")).expect("PG_VERSION");
    let server: String = direct
        .query_one("show server_version_num", &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version.trim(), &server[..2]);

    // replication connections end with their clients; the pooled side still serves
    let mut left = walsenders(&direct).await;
    for _ in 0..100 {
        if left == before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = walsenders(&direct).await;
    }
    assert_eq!(left, before, "a walsender outlived its client");
    let out = run(psql(&env.url("postgres"), "select 41 + 1")).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        text(&out)
    );
}

/// A logical replication client through Pake: its CancelRequest reaches its server, a
/// `pg_terminate_backend` of the pid Pake gave it ends it, and naming the console's database
/// does not make it an admin (psql sends the user name, and the server ignores a physical
/// client's database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_client_is_canceled_terminated_and_never_the_console() {
    let env = Env::start().await;
    let login = |db: &'static str, mode: &'static str| {
        let env = &env;
        async move {
            Raw::login_with(
                env,
                &env.lab.user,
                &env.lab.password,
                db,
                &[("replication", mode)],
            )
            .await
            .expect("replication login")
        }
    };
    let mut walsender = login("postgres", "database").await;
    walsender.send(&query("select pg_sleep(60)")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    walsender.cancel(&env).await;
    let error = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match walsender.read().await.expect("a reply") {
                (b'E', body) => return crate::harness::sqlstate(&body),
                (b'Z', _) => return "no error".to_string(),
                _ => {} // the RowDescription comes first
            }
        }
    })
    .await
    .expect("canceled in time");
    assert_eq!(error, "57014");

    let pooled = env.client().await;
    let done: bool = pooled
        .query_one("select pg_terminate_backend($1)", &[&walsender.pid])
        .await
        .expect("terminate")
        .get(0);
    assert!(done);
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while walsender.read().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "still relayed after pg_terminate_backend");

    for db in ["pake", "pgbouncer"] {
        let mut physical = login(db, "true").await;
        physical.send(&query("IDENTIFY_SYSTEM")).await;
        let (tag, body) = physical.read().await.expect("a reply");
        assert_eq!(tag, b'T', "{db}: {}", String::from_utf8_lossy(&body));
    }
}
