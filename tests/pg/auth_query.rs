//! `auth_user` + `auth_query` (PgBouncer's user lookup): roles created at run time log in
//! through Pake with no config change, over SCRAM and md5, and Pake logs in to the server as
//! them without their password; refusals look exactly like PostgreSQL's.

use crate::console::show;
use crate::harness::{pg_bin, Env, Opts};
use pake::config::{Config, Dur, User};
use pake::lab::{HbaAuth, PgOptions};
use pake::pg::auth::Method;
use std::time::Duration;

/// The lab's superuser (the quick-start user, configured with its plaintext password) runs
/// the lookups.
fn lookup_as_superuser(c: &mut Config) {
    c.general.auth_user = c.users[0].name.clone();
}

fn url(env: &Env, user: &str, password: &str, db: &str) -> String {
    format!(
        "postgres://{user}:{password}@127.0.0.1:{}/{db}",
        env.pake.pg_addr.port()
    )
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The refusal a login gets: (SQLSTATE, severity, message).
async fn refusal(url: &str) -> (String, String, String) {
    let Err(e) = connect(url).await else {
        panic!("login to {url} accepted");
    };
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("no server error: {e}"));
    (
        db.code().code().to_string(),
        db.severity().to_string(),
        db.message().to_string(),
    )
}

async fn current_user(c: &tokio_postgres::Client) -> String {
    c.query_one("select current_user::text", &[])
        .await
        .expect("query through pake")
        .get(0)
}

/// psql logs in through Pake as `user` and runs `sql`; its stdout.
async fn psql(url: String, sql: &'static str) -> Result<String, String> {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(pg_bin("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(url)
            .output()
            .expect("run psql")
    })
    .await
    .expect("psql thread");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_role_created_at_run_time_logs_in_without_a_config_change() {
    let env = Env::with(Opts {
        tweak: lookup_as_superuser,
        ..Opts::default()
    })
    .await;
    let direct = env.direct().await;
    direct
        .batch_execute("create role alice login password 'a-secret'")
        .await
        .unwrap();
    direct
        .batch_execute("create database made_later")
        .await
        .unwrap();
    // tokio-postgres, to a database created at run time as well (the lookup runs there)
    let a = connect(&url(&env, "alice", "a-secret", "made_later"))
        .await
        .expect("alice logs in");
    assert_eq!(current_user(&a).await, "alice");
    // two transactions at once: a second server connection logs in with alice's proof
    let b = connect(&url(&env, "alice", "a-secret", "made_later"))
        .await
        .unwrap();
    let (ta, tb) = (a.simple_query("begin"), b.simple_query("begin"));
    let (ra, rb) = tokio::join!(ta, tb);
    ra.unwrap();
    rb.unwrap();
    let pids: Vec<i32> = futures_util::future::join_all(
        [&a, &b].map(|c| async move { c.query_one("select pg_backend_pid()", &[]).await }),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap().get(0))
    .collect();
    assert_eq!(pids.len(), 2);
    let sessions: i64 = direct
        .query_one(
            "select count(*) from pg_stat_activity where usename = 'alice' and datname = 'made_later'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 2, "two server connections log in as alice");
    a.batch_execute("commit").await.unwrap();
    b.batch_execute("commit").await.unwrap();
    // psql, simple and extended
    let out = psql(
        url(&env, "alice", "a-secret", "postgres"),
        "select current_user",
    )
    .await
    .expect("psql as alice");
    assert_eq!(out, "alice");

    // wrong password and unknown user: 28P01, the very text PostgreSQL uses for both
    let wrong = refusal(&url(&env, "alice", "nope", "postgres")).await;
    let unknown = refusal(&url(&env, "ghost", "nope", "postgres")).await;
    assert_eq!(
        wrong,
        (
            "28P01".to_string(),
            "FATAL".to_string(),
            "password authentication failed for user \"alice\"".to_string()
        )
    );
    assert_eq!(
        unknown.2.replace("ghost", "alice"),
        wrong.2,
        "no user enumeration"
    );
    assert_eq!(unknown.0, wrong.0);
    let postgres_says = refusal(&env.lab.url("postgres").replace(
        &format!("{}:{}@", env.lab.user, env.lab.password),
        "alice:nope@",
    ))
    .await;
    assert_eq!(wrong, postgres_says, "the same as PostgreSQL itself");

    // the settings are shown like the others
    let admin = connect(&env.url("pake")).await.unwrap();
    let (_, rows) = show(&admin, "SHOW CONFIG").await;
    let value = |k: &str| {
        rows.iter()
            .find(|r| r[0] == k)
            .unwrap_or_else(|| panic!("no {k} in SHOW CONFIG"))[1]
            .clone()
    };
    assert_eq!(value("general.auth_user"), env.lab.user);
    assert!(value("general.auth_query").contains("pg_authid"));
    assert_eq!(value("general.auth_dbname"), "");
}

/// The lookup runs on a connection to the client's database, kept for the next login: a
/// client dropping that database (or cloning it as a template) finds it closed first, like
/// Pake's idle pooled servers there, instead of failing with 55006 on a session it cannot
/// see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_database_is_not_held_by_the_lookup() {
    let env = Env::with(Opts {
        tweak: lookup_as_superuser,
        ..Opts::default()
    })
    .await;
    let direct = env.direct().await;
    for sql in [
        "create role bob login password 'b-secret'",
        "create database bobs",
    ] {
        direct.batch_execute(sql).await.unwrap();
    }
    let bob = connect(&url(&env, "bob", "b-secret", "bobs"))
        .await
        .expect("bob logs in");
    assert_eq!(current_user(&bob).await, "bob");
    drop(bob);
    let admin = env.client().await;
    for sql in [
        "create database bobs_copy template bobs",
        "drop database bobs",
    ] {
        let done = admin.batch_execute(sql).await;
        assert!(done.is_ok(), "{sql}: {done:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_scram_roles_behind_an_md5_server() {
    let env = Env::with(Opts {
        lab: PgOptions {
            auth: HbaAuth::Md5,
            ..PgOptions::default()
        },
        tweak: |c| {
            lookup_as_superuser(c);
            c.general.auth_type = Method::Md5;
        },
        ..Opts::default()
    })
    .await;
    let direct = env.direct().await;
    direct
        .batch_execute(
            "set password_encryption = 'md5'; create role bob login password 'b-secret';
             set password_encryption = 'scram-sha-256'; create role carol login password 'c-secret'",
        )
        .await
        .unwrap();
    let stored: Vec<String> = direct
        .query(
            "select rolpassword from pg_authid where rolname in ('bob', 'carol') order by rolname",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(stored[0].starts_with("md5"), "{stored:?}");
    assert!(stored[1].starts_with("SCRAM-SHA-256$"), "{stored:?}");
    // bob: md5 challenge from Pake, md5 from the server answered with the stored hash
    let bob = connect(&url(&env, "bob", "b-secret", "postgres"))
        .await
        .expect("bob logs in");
    assert_eq!(current_user(&bob).await, "bob");
    assert_eq!(
        psql(
            url(&env, "bob", "b-secret", "postgres"),
            "select current_user"
        )
        .await,
        Ok("bob".to_string())
    );
    // carol: a SCRAM verifier switches the login to SCRAM, as PostgreSQL does
    let carol = connect(&url(&env, "carol", "c-secret", "postgres"))
        .await
        .expect("carol logs in");
    assert_eq!(current_user(&carol).await, "carol");
    assert_eq!(
        refusal(&url(&env, "bob", "b-wrong", "postgres")).await.0,
        "28P01"
    );
    assert_eq!(
        refusal(&url(&env, "carol", "c-wrong", "postgres")).await.0,
        "28P01"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_that_cannot_log_in_are_refused() {
    let env = Env::with(Opts {
        tweak: lookup_as_superuser,
        ..Opts::default()
    })
    .await;
    env.direct()
        .await
        .batch_execute(
            "create role nologin_role nologin password 'pw';
             create role expired_role login password 'pw' valid until '2001-01-01';
             create role nopassword_role login;
             create role fine_role login password 'pw'",
        )
        .await
        .unwrap();
    for role in ["nologin_role", "expired_role", "nopassword_role"] {
        let (code, _, message) = refusal(&url(&env, role, "pw", "postgres")).await;
        assert_eq!(code, "28P01", "{role}: {message}");
        assert_eq!(
            message,
            format!("password authentication failed for user \"{role}\"")
        );
    }
    // the same password on a role that may log in works: the refusals were about the role
    let c = connect(&url(&env, "fine_role", "pw", "postgres"))
        .await
        .unwrap();
    assert_eq!(current_user(&c).await, "fine_role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_takes_over_after_the_cache_ttl() {
    let env = Env::with(Opts {
        tweak: |c| {
            lookup_as_superuser(c);
            c.general.auth_cache_ttl = Dur::millis(700);
        },
        ..Opts::default()
    })
    .await;
    let direct = env.direct().await;
    direct
        .batch_execute("create role dave login password 'one'")
        .await
        .unwrap();
    let first = connect(&url(&env, "dave", "one", "postgres"))
        .await
        .unwrap();
    assert_eq!(current_user(&first).await, "dave");
    direct
        .batch_execute("alter role dave password 'two'")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (code, _, message) = refusal(&url(&env, "dave", "one", "postgres")).await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("28P01", "password authentication failed for user \"dave\"")
    );
    // the new password logs in, and new server connections take the new proof
    let second = connect(&url(&env, "dave", "two", "postgres"))
        .await
        .expect("the new password works");
    let t1 = connect(&url(&env, "dave", "two", "postgres"))
        .await
        .unwrap();
    let (r1, r2) = tokio::join!(second.simple_query("begin"), t1.simple_query("begin"));
    r1.unwrap();
    r2.unwrap();
    assert_eq!(current_user(&second).await, "dave");
    assert_eq!(current_user(&t1).await, "dave");
    // the client that logged in before the change keeps working
    first
        .batch_execute("select 1")
        .await
        .expect("a third server logs in with the newest proof");
}

/// A lookup that cannot work fails that login with a clear FATAL; everyone else goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_lookup_fails_clearly_and_others_keep_working() {
    let env = Env::with(Opts {
        tweak: |c| {
            lookup_as_superuser(c);
            c.general.auth_query =
                "SELECT usename, passwd FROM no_such_table WHERE usename = $1".into();
            // a second database whose lookup logs in with a wrong password
            let mut other = c.databases[0].clone();
            other.name = "wrongpass".into();
            other.dbname = Some("postgres".into());
            other.auth_user = Some("looker".into());
            other.auth_query = Some(pake::config::DEFAULT_AUTH_QUERY.into());
            c.databases.push(other.clone());
            // and one whose server is not there at all
            other.name = "unreachable".into();
            other.port = 1;
            c.databases.push(other);
            c.users.push(User {
                password: Some("not-its-password".into()),
                ..User::named("looker")
            });
        },
        ..Opts::default()
    })
    .await;
    let direct = env.direct().await;
    direct
        .batch_execute(
            "create role erin login password 'pw'; create role looker superuser login password 'real'",
        )
        .await
        .unwrap();
    let configured = env.client().await;
    configured.batch_execute("begin; select 1").await.unwrap();

    let (code, severity, message) = refusal(&url(&env, "erin", "pw", "postgres")).await;
    assert_eq!((code.as_str(), severity.as_str()), ("F0000", "FATAL"));
    assert!(
        message.starts_with(
            "auth_query failed on the server: relation \"no_such_table\" does not exist"
        ),
        "{message}"
    );
    let (code, severity, message) = refusal(&url(&env, "erin", "pw", "wrongpass")).await;
    assert_eq!((code.as_str(), severity.as_str()), ("F0000", "FATAL"));
    assert!(
        message.contains("cannot log in to the server as auth_user \"looker\"")
            && message.contains("password authentication failed for user \"looker\""),
        "{message}"
    );
    let (code, severity, message) = refusal(&url(&env, "erin", "pw", "unreachable")).await;
    assert_eq!((code.as_str(), severity.as_str()), ("08006", "FATAL"));
    assert!(message.contains("cannot connect to server"), "{message}");
    // a database the server does not have (through the wildcard entry): 3D000, as directly
    let (code, _, message) = refusal(&url(&env, "erin", "pw", "no_such_db")).await;
    assert_eq!(code, "3D000", "{message}");
    // the configured user's session and new logins are unaffected
    configured.batch_execute("commit").await.unwrap();
    assert_eq!(current_user(&env.client().await).await, env.lab.user);
    assert_eq!(
        psql(env.url("postgres"), "select 40 + 2").await,
        Ok("42".to_string())
    );
}

/// A lookup past `auth_query_timeout` fails with 08006, and its connection (whose late reply
/// is still coming) is never used for the next lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_lookup_times_out_and_its_connection_is_not_reused() {
    let env = Env::with(Opts {
        tweak: |c| {
            lookup_as_superuser(c);
            c.general.auth_query_timeout = Dur::millis(500);
            // same server database as the others: the same dedicated connection
            let mut slow = c.databases[0].clone();
            slow.name = "slow".into();
            slow.dbname = Some("postgres".into());
            slow.auth_query = Some("SELECT $1::text, pg_sleep(2)::text".into());
            c.databases.push(slow);
        },
        ..Opts::default()
    })
    .await;
    env.direct()
        .await
        .batch_execute("create role frank login password 'pw'")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (code, severity, message) = refusal(&url(&env, "frank", "pw", "slow")).await;
    // F0000 once on a loaded CI machine (2026-12-05): the message says which lookup step
    assert_eq!(
        (code.as_str(), severity.as_str()),
        ("08006", "FATAL"),
        "{message}"
    );
    assert!(message.contains("auth_query_timeout"), "{message}");
    assert!(started.elapsed() < Duration::from_millis(1800));
    // the timed-out query's row (frank, "") would read as "no password" on a reused connection
    let c = connect(&url(&env, "frank", "pw", "postgres"))
        .await
        .expect("the next lookup gets its own answer");
    assert_eq!(current_user(&c).await, "frank");
}
