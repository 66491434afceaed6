use super::*;

const GOOD: &str = r#"
[general]
pg_listen = "127.0.0.1:7432"
max_client_conn = 100
admin_users = ["admin"]

[pool]
pool_size = 5
query_wait_timeout = "2s"

[[databases]]
name = "app"
host = "127.0.0.1"
port = 5433
pool_mode = "session"

[[databases]]
name = "reports"
host = "db2"
dbname = "warehouse"

[[users]]
name = "admin"
password = "pw"

[[users]]
name = "app"
password = "md5a6343a68d964ca596d9752250d54bb8a"
auth_type = "md5"
pool_size = 9
"#;

#[test]
fn parses_and_validates_a_good_file() {
    let c = Config::parse(GOOD).unwrap();
    c.validate().unwrap();
    assert_eq!(c.general.pg_listen.port(), 7432);
    assert_eq!(c.pool.query_wait_timeout, Dur::secs(2));
    let db = c.database("app").unwrap();
    let user = c.user("app").unwrap();
    let s = c.pool_settings(db, user);
    assert_eq!((s.mode, s.size), (PoolMode::Session, 9));
    assert_eq!(c.database("reports").unwrap().server_dbname(), "warehouse");
    assert_eq!(c.database("reports").unwrap().port, 5432);
}

#[test]
fn unknown_key_is_named() {
    let e = Config::parse("[pool]\npoolsize = 3\n").unwrap_err();
    assert_eq!(e.key, "pool.poolsize");
    assert!(e.reason.contains("unknown field"), "{e}");
    let e = Config::parse("[pool]\npool_size = \"many\"\n").unwrap_err();
    assert_eq!(e.key, "pool.pool_size");
    assert!(e.reason.contains("line 2"), "{e}");
    let e = Config::parse("[pool]\nquery_wait_timeout = \"5 parsecs\"\n").unwrap_err();
    assert_eq!(e.key, "pool.query_wait_timeout");
}

#[test]
fn cross_field_rules_name_keys() {
    let mut c = Config::parse(GOOD).unwrap();
    c.databases[1].name = "app".into();
    c.users[1].auth_type = Some(Method::ScramSha256);
    c.general.admin_users.push("nobody".into());
    c.databases[0].port = 0;
    c.general.pg_threads = 100_000;
    let errs = c.validate().unwrap_err();
    let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"general.pg_threads"), "{keys:?}");
    assert!(keys.contains(&"databases[1].name"), "{keys:?}");
    assert!(keys.contains(&"databases[0].port"), "{keys:?}");
    assert!(keys.contains(&"users[1].password"), "{keys:?}");
    assert!(keys.contains(&"general.admin_users[1]"), "{keys:?}");
}

#[test]
fn quick_start_from_url() {
    let q = QuickStart {
        pg_primary: Some("postgres://alice:s3cret@db.example:5433/shop".into()),
        pool_size: Some(7),
        ..QuickStart::default()
    };
    let c = q.apply(Config::default()).unwrap();
    c.validate().unwrap();
    let db = c.database("shop").unwrap();
    assert_eq!((db.host.as_str(), db.port), ("db.example", 5433));
    assert_eq!(c.user("alice").unwrap().password.as_deref(), Some("s3cret"));
    assert_eq!(c.pool.pool_size, 7);
    assert_eq!(c.general.admin_users, vec!["alice".to_string()]);
    let no_pw = QuickStart {
        pg_primary: Some("postgres://alice@db/shop".into()),
        ..QuickStart::default()
    };
    assert_eq!(
        no_pw.apply(Config::default()).unwrap_err().key,
        "--pg-primary"
    );
    assert!(!c.otlp.enabled, "trace export is off unless asked for");
    let traced = QuickStart {
        otlp_endpoint: Some("http://collector:4318".into()),
        ..q
    };
    let c = traced.apply(Config::default()).unwrap();
    c.validate().unwrap();
    assert!(c.otlp.enabled);
    assert_eq!(
        c.otlp.traces_url().unwrap().to_string(),
        "http://collector:4318/v1/traces"
    );
    let bad = QuickStart {
        otlp_endpoint: Some("https://collector:4318".into()),
        ..traced
    };
    let keys: Vec<String> = bad
        .apply(Config::default())
        .unwrap()
        .validate()
        .unwrap_err()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["otlp.endpoint"]);
}

#[test]
fn routing_settings() {
    let c = Config::parse(
        "[routing]\nmax_replica_lag = \"64MiB\"\nload_balancing = \"round_robin\"\n\n[[databases]]\nname = \"a\"\nhost = \"p\"\nreplicas = [{ host = \"r1\", weight = 3, zone = \"eu\" }, { host = \"r2\", port = 5433 }]\n",
    )
    .unwrap();
    assert_eq!(c.routing.max_replica_lag, LagLimit::Bytes(64 << 20));
    assert_eq!(c.routing.load_balancing, Balance::RoundRobin);
    assert_eq!(c.databases[0].replicas[1].port, 5433);
    let c = Config::parse("[routing]\nmax_replica_lag = \"1500ms\"\n").unwrap();
    assert_eq!(c.routing.max_replica_lag, LagLimit::Time(Dur::millis(1500)));
    assert!(Config::parse("[routing]\nmax_replica_lag = \"lots\"\n").is_err());
    let q = QuickStart {
        pg_primary: Some("postgres://u:p@h:5432/d".into()),
        pg_replicas: vec!["postgres://u:p@r:5434/d".into()],
        ..QuickStart::default()
    };
    let c = q.apply(Config::default()).unwrap();
    assert_eq!(c.databases[0].replicas[0].port, 5434);
    let s = c.pool_settings(&c.databases[0], &c.users[0]);
    assert!(s.read_from_replicas);
}

#[test]
fn shipped_example_config_is_valid() {
    let text = include_str!("../../config/pake.toml");
    let c = Config::parse(text).unwrap();
    c.validate().unwrap();
    assert!(c.databases.len() >= 2 && c.users.len() >= 2);
    assert_eq!(c.insight.slow_query_threshold, Dur::millis(250));
    assert!(c.insight.redact_parameters);
    assert!(c.redis.as_ref().is_some_and(|r| r.l1), "[redis] example");
    assert_eq!(
        c.otlp,
        crate::obs::otlp::OtlpConfig::default(),
        "[otlp] example"
    );
}

#[test]
fn redis_quick_start_and_validation() {
    let q = QuickStart {
        redis_url: Some("redis://10.0.0.5:7000".into()),
        redis_cluster: true,
        ..QuickStart::default()
    };
    let c = q.apply(Config::default()).unwrap();
    c.validate().unwrap();
    let r = c.redis.as_ref().unwrap();
    assert_eq!(
        (r.url.as_str(), r.cluster),
        ("redis://10.0.0.5:7000", Some(true))
    );
    assert_eq!(r.listen.port(), 6380);
    let e = Config::parse("[redis]\nl1_max_bytes = \"1MiB\"\nl1_maxttl = 3\n").unwrap_err();
    assert_eq!(e.key, "redis.l1_maxttl");
    let mut c = Config::parse("[redis]\npool_size = 0\n").unwrap();
    let keys: Vec<String> = c
        .validate()
        .unwrap_err()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, vec!["redis.pool_size"]);
    c.redis = None;
    assert!(c.validate().is_err(), "neither databases nor redis");
}

#[test]
fn redis_sentinel_quick_start() {
    let q = QuickStart {
        redis_sentinels: vec!["10.0.0.1:26379".into(), "10.0.0.2:26379".into()],
        redis_master: Some("mymaster".into()),
        ..QuickStart::default()
    };
    let c = q.apply(Config::default()).unwrap();
    c.validate().unwrap();
    let r = c.redis.as_ref().unwrap();
    assert_eq!(r.sentinels.len(), 2);
    assert_eq!(r.sentinel_master.as_deref(), Some("mymaster"));
    let half = QuickStart {
        redis_sentinels: vec!["10.0.0.1:26379".into()],
        ..QuickStart::default()
    };
    assert_eq!(
        half.apply(Config::default()).unwrap_err().key,
        "--redis-master"
    );
    let half = QuickStart {
        redis_master: Some("m".into()),
        ..QuickStart::default()
    };
    assert_eq!(
        half.apply(Config::default()).unwrap_err().key,
        "--redis-sentinel"
    );
    // the file may name the master and the flag the sentinels
    let file = Config::parse("[redis]\nsentinel_master = \"m\"\n").unwrap();
    let c = QuickStart {
        redis_sentinels: vec!["s:26379".into()],
        ..QuickStart::default()
    }
    .apply(file)
    .unwrap();
    c.validate().unwrap();
    let e = Config::parse("[redis]\nsentinels = [\"s:1\"]\n")
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(e[0].key, "redis.sentinel_master");
}

#[test]
fn wildcard_database_serves_other_names() {
    let quick = QuickStart {
        pg_primary: Some("postgres://app:pw@db.example:5433/app".into()),
        ..QuickStart::default()
    };
    let c = quick.apply(Config::default()).unwrap();
    c.validate().unwrap();
    let app = c.resolve_database("app").unwrap();
    assert_eq!(app.server_dbname(), "app");
    assert!(!c.is_wildcard_database("app"));
    let other = c.resolve_database("made_later").unwrap();
    assert_eq!((other.host.as_str(), other.port), ("db.example", 5433));
    assert_eq!(other.server_dbname(), "made_later");
    assert!(c.is_wildcard_database("made_later"));
    assert!(c.resolve_database("*").is_none());
    // without a wildcard entry an unknown name stays unknown
    let mut plain = c.clone();
    plain.databases.retain(|d| d.name != "*");
    assert!(plain.resolve_database("made_later").is_none());
}

#[test]
fn auth_lookup_follows_database_then_general() {
    let mut c = Config::parse(GOOD).unwrap();
    let app = c.database("app").unwrap().clone();
    assert_eq!(c.auth_lookup(&app), None, "off unless auth_user is set");
    c.general.auth_user = "admin".into();
    let l = c.auth_lookup(&app).unwrap();
    assert_eq!((l.auth_user.as_str(), l.dbname.as_str()), ("admin", "app"));
    assert_eq!(l.query, DEFAULT_AUTH_QUERY);
    c.general.auth_dbname = "reports".into();
    let mut reports = c.database("reports").unwrap().clone();
    reports.auth_query = Some("select u, p from f($1)".into());
    let l = c.auth_lookup(&reports).unwrap();
    assert_eq!(
        (l.dbname.as_str(), l.query.as_str()),
        ("reports", "select u, p from f($1)")
    );
    c.validate().unwrap();
}

#[test]
fn auth_lookup_keys_are_checked() {
    let mut c = Config::parse(GOOD).unwrap();
    c.general.auth_user = "nobody".into();
    c.general.auth_query = "select 1".into();
    c.general.auth_dbname = "nowhere".into();
    c.databases[0].auth_user = Some("app".into());
    let errs = c.validate().unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "general.auth_user",
            "general.auth_query",
            "general.auth_dbname",
            // an md5 hash is no password to log in to a server with
            "databases[0].auth_user",
        ],
        "{errs:?}"
    );
}
