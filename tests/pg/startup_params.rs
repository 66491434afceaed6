//! Startup parameters at login, as PostgreSQL takes them: the welcome reports their canonical
//! form (`DateStyle=german` → `German, DMY`), an invalid one is refused with the server's own
//! FATAL, and neither leaves anything on the pooled servers. Compared with a direct login.

use crate::harness::{http_get, Env, Opts, Raw};
use pake::config::PoolMode;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

async fn env(mode: PoolMode) -> Env {
    Env::with(Opts {
        mode,
        pool_size: 1,
        ..Opts::default()
    })
    .await
}

/// `url` with `-c name=value` settings in `options`, as libpq's PGOPTIONS sends them.
fn with_options(url: &str, settings: &[(&str, &str)]) -> String {
    let opts: Vec<String> = settings
        .iter()
        .map(|(k, v)| format!("-c%20{k}%3D{}", v.replace('/', "%2F")))
        .collect();
    format!("{url}?options={}", opts.join("%20"))
}

/// Log in to `url`; the client and the value its welcome reported for `param`.
async fn login(url: &str, param: &str) -> Result<(Client, Option<String>), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    let reported = conn.parameter(param).map(str::to_string);
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((client, reported))
}

async fn show(c: &Client, name: &str) -> String {
    let msgs = c.simple_query(&format!("SHOW {name}")).await.expect("show");
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}

/// How many logins Pake had to check on a server (`pake_pg_startup_checks_total`).
async fn checks(env: &Env) -> f64 {
    let (_, text) = http_get(&env.admin_url("/metrics")).await;
    text.lines()
        .filter(|l| l.starts_with("pake_pg_startup_checks_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The welcome and `SHOW` say what a direct login says, in both pool modes.
async fn canonical_values_in(mode: PoolMode) {
    let env = env(mode).await;
    for (name, raw) in [
        ("DateStyle", "german"),
        ("DateStyle", "iso"),
        ("TimeZone", "utc"),
        ("IntervalStyle", "SQL_STANDARD"),
    ] {
        let settings = [(name, raw)];
        let direct = with_options(&env.lab.url("postgres"), &settings);
        let (d, want) = login(&direct, name).await.expect("direct login");
        let through = with_options(&env.url("postgres"), &settings);
        let (p, got) = login(&through, name).await.expect("login through pake");
        assert_eq!(got, want, "{name}={raw} in the welcome");
        assert_eq!(show(&p, name).await, show(&d, name).await, "SHOW {name}");
    }
    // a plain client on the one pooled server sees the server's defaults again
    plain_client_sees_defaults(&env, &["DateStyle", "TimeZone", "IntervalStyle"]).await;
}

/// A client asking for nothing sees what a direct one does for each of `names`.
async fn plain_client_sees_defaults(env: &Env, names: &[&str]) {
    let plain = env.client().await;
    let direct = env.direct().await;
    for name in names {
        assert_eq!(
            show(&plain, name).await,
            show(&direct, name).await,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_are_welcomed_as_postgres_reports_them() {
    canonical_values_in(PoolMode::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_are_welcomed_as_postgres_reports_them_in_session_mode() {
    canonical_values_in(PoolMode::Session).await;
}

/// A setting in the packet itself (libpq's PGDATESTYLE sends `datestyle`), not in options.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_parameter_is_welcomed_canonical() {
    let env = env(PoolMode::Transaction).await;
    let (user, password) = (env.lab.user.clone(), env.lab.password.clone());
    let extra = [("datestyle", "german")];
    let mut raw = Raw::login_with(&env, &user, &password, "postgres", &extra)
        .await
        .expect("login");
    let reported = raw.params.iter().find(|(k, _)| k == "DateStyle");
    assert_eq!(reported.map(|(_, v)| v.as_str()), Some("German, DMY"));
    raw.send(&crate::harness::query("SHOW DateStyle")).await;
    let reply = raw.until_ready().await;
    assert_eq!(reply.value.as_deref(), Some(&b"German, DMY"[..]));
}

/// What a login with `settings` fails with: SQLSTATE, severity, message, detail, hint.
async fn refusal(url: &str, settings: &[(&str, &str)]) -> Vec<String> {
    let url = with_options(url, settings);
    let Err(e) = login(&url, "DateStyle").await else {
        panic!("{settings:?} logged in");
    };
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("no server error: {e}"));
    vec![
        db.code().code().to_string(),
        db.severity().to_string(),
        db.message().to_string(),
        db.detail().unwrap_or_default().to_string(),
        db.hint().unwrap_or_default().to_string(),
    ]
}

/// An invalid setting is refused at login with the server's own error, in both pool modes;
/// Pake keeps serving, and the pooled server is as it was.
async fn refused_in(mode: PoolMode) {
    let env = env(mode).await;
    let cases: [&[(&str, &str)]; 5] = [
        &[("DateStyle", "nonsense")],
        &[("TimeZone", "Not/AZone")],
        &[("client_encoding", "nonsense")],
        &[("work_mem", "banana")],
        &[("search_path", "app"), ("nosuch_param", "1")],
    ];
    for settings in cases {
        let want = refusal(&env.lab.url("postgres"), settings).await;
        let got = refusal(&env.url("postgres"), settings).await;
        assert_eq!(got, want, "{settings:?}");
        assert_eq!(got[1], "FATAL");
    }
    plain_client_sees_defaults(&env, &["DateStyle", "TimeZone", "work_mem", "search_path"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_startup_settings_are_refused_at_login() {
    refused_in(PoolMode::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_startup_settings_are_refused_at_login_in_session_mode() {
    refused_in(PoolMode::Session).await;
}

/// The server is asked once per distinct setting: a repeat login, and one with the servers'
/// own values, cost no server round trip. A refused value is asked again (not remembered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_login_needs_no_server() {
    let env = env(PoolMode::Transaction).await;
    let german = with_options(&env.url("postgres"), &[("DateStyle", "german")]);
    let _plain = env.client().await;
    let base = checks(&env).await;
    for _ in 0..3 {
        let (c, got) = login(&german, "DateStyle").await.expect("login");
        assert_eq!(got.as_deref(), Some("German, DMY"));
        assert_eq!(show(&c, "DateStyle").await, "German, DMY");
    }
    assert_eq!(checks(&env).await, base + 1.0, "asked once");
    let defaults = with_options(
        &env.url("postgres"),
        &[("IntervalStyle", "postgres"), ("client_encoding", "utf-8")],
    );
    let (_, got) = login(&defaults, "IntervalStyle").await.expect("login");
    assert_eq!(got.as_deref(), Some("postgres"));
    assert_eq!(checks(&env).await, base + 1.0, "the servers' own values");
    let bad = with_options(&env.url("postgres"), &[("DateStyle", "nonsense")]);
    for _ in 0..2 {
        assert!(login(&bad, "DateStyle").await.is_err());
    }
    assert_eq!(checks(&env).await, base + 3.0, "refusals are asked again");
}

/// A setting valid at login that a server refuses later (its role dropped since): the client
/// is told with the server's error instead of going on without it, and the pool stays clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_refused_after_login_ends_the_session() {
    let env = env(PoolMode::Transaction).await;
    let direct = env.direct().await;
    direct
        .batch_execute("CREATE ROLE doomed")
        .await
        .expect("role");
    let url = with_options(&env.url("postgres"), &[("role", "doomed")]);
    let (a, _) = login(&url, "DateStyle").await.expect("login as doomed");
    assert_eq!(show(&a, "role").await, "doomed");
    // another client takes the one server (its settings go back), then the role goes
    let b = env.client().await;
    assert_eq!(show(&b, "role").await, "none");
    direct
        .batch_execute("DROP ROLE doomed")
        .await
        .expect("drop");
    let e = a
        .simple_query("SELECT current_user")
        .await
        .expect_err("the role is gone");
    assert_eq!(crate::harness::code(&e), "22023", "{e}");
    assert_eq!(show(&b, "role").await, "none");
    let user: String = b
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("current_user")
        .get(0);
    assert_eq!(user, env.lab.user);
}
