//! TLS both ways on the Redis side: redis-cli `--tls` and a rustls client to Pake's TLS
//! listener, Pake to TLS-only Redis (`rediss://`, standalone and cluster) on the shared
//! pools, the pinned links (MULTI/EXEC, BLPOP, pub/sub) and the tracking links, whose
//! invalidations must still reach the L1; plaintext refused under `require` and served
//! under `allow`; a wrong CA or a missing file stops Pake with an error naming the cause.

use crate::harness::{
    eventually, lab, metric, options, redis_config, run, start_pake, Conn, Env, Mode, Val,
};
use pake::lab::certs::Certs;
use pake::lab::RedisOptions;
use pake::redis::config::{ClientTlsMode, RedisConfig};
use std::path::PathBuf;
use std::time::Duration;

/// TLS-only Redis from the lab, and Pake in front of it with a TLS listener in `client`
/// mode, presenting the lab's certificate (so the lab CA verifies both hops).
async fn tls_env(mode: Mode, client: ClientTlsMode) -> Env {
    let lab = lab(RedisOptions {
        tls: true,
        ..options(mode)
    })
    .await;
    let mut rc = redis_config(lab.url());
    assert!(rc.url.starts_with("rediss://"), "{}", rc.url);
    let certs = lab.certs.as_ref().expect("a TLS lab has certificates");
    rc.server_tls_ca_file = Some(certs.ca.clone());
    rc.client_tls_sslmode = client;
    rc.client_tls_cert_file = Some(certs.cert.clone());
    rc.client_tls_key_file = Some(certs.key.clone());
    let pake = start_pake(rc).await;
    let env = Env { lab, pake };
    env.wait_armed(&env.pake).await;
    env
}

fn ca(env: &Env) -> PathBuf {
    env.lab.ca_file().expect("lab CA")
}

async fn conn_tls(env: &Env) -> Conn {
    Conn::connect_tls(env.addr(), &ca(env)).await
}

/// redis-cli with `--tls --cacert <lab CA>` against Pake; stdout and stderr, trimmed.
async fn cli_tls(env: &Env, args: &[&str]) -> String {
    let ca = ca(env).display().to_string();
    let mut a: Vec<String> = [
        "-p",
        &env.addr().port().to_string(),
        "--tls",
        "--cacert",
        &ca,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(args.iter().map(|s| s.to_string()));
    let (_, out, err) = run("redis-cli", a, None).await;
    format!("{}{}", out.trim(), err.trim())
}

async fn both_ways(mode: Mode) {
    let env = tls_env(mode, ClientTlsMode::Require).await;
    // a real client over TLS, to a TLS Redis
    assert_eq!(cli_tls(&env, &["SET", "tls:k", "v1"]).await, "OK");
    assert_eq!(cli_tls(&env, &["GET", "tls:k"]).await, "v1");
    assert_eq!(
        cli_tls(&env, &["MSET", "tls:a", "1", "tls:b", "2"]).await,
        "OK"
    );
    assert_eq!(
        cli_tls(&env, &["MGET", "tls:a", "tls:b", "tls:k"]).await,
        "1\n2\nv1"
    );

    // plaintext to the require-mode listener: one clear error, then the close
    let plain = {
        let args = vec![
            "-p".to_string(),
            env.addr().port().to_string(),
            "PING".into(),
        ];
        let (_, out, err) = run("redis-cli", args, None).await;
        format!("{out}{err}")
    };
    assert!(plain.contains("TLS is required"), "{plain}");
    let mut raw = Conn::connect(env.addr()).await;
    let refused = raw.cmd(&["PING"]).await;
    assert!(
        refused.err_text().contains("redis-cli --tls"),
        "{refused:?}"
    );
    assert!(raw.closed().await);

    let mut c = conn_tls(&env).await;
    // a value spanning many TLS records, both ways
    let big = "x".repeat(3 << 20);
    assert_eq!(c.cmd(&["SET", "tls:big", &big]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["GET", "tls:big"]).await, Val::Str(big));
    // pipelined: many replies written before one flush
    let mut batch = Vec::new();
    for i in 0..500 {
        batch.extend(crate::harness::encode(&["INCR", "tls:n"]));
        if i % 100 == 0 {
            batch.extend(crate::harness::encode(&["GET", "tls:k"]));
        }
    }
    c.send(&batch).await;
    for i in 0..500 {
        assert_eq!(c.read().await, Some(Val::Int(i + 1)));
        if i % 100 == 0 {
            assert_eq!(c.read().await, Some(Val::s("v1")));
        }
    }
    // MULTI/EXEC with WATCH on a pinned TLS link
    assert_eq!(c.cmd(&["WATCH", "tls:n"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["INCR", "tls:n"]).await, Val::s("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, Val::Arr(vec![Val::Int(501)]));
    // a blocking command on a pinned TLS link, woken by a push from another client
    let mut pusher = conn_tls(&env).await;
    c.send(&crate::harness::encode(&["BLPOP", "tls:q", "5"]))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pusher.cmd(&["RPUSH", "tls:q", "job"]).await, Val::Int(1));
    assert_eq!(
        c.read().await,
        Some(Val::Arr(vec![Val::s("tls:q"), Val::s("job")]))
    );
    // pub/sub piped over TLS on both sides
    let mut sub = conn_tls(&env).await;
    assert!(matches!(
        sub.cmd(&["SUBSCRIBE", "tls:ch"]).await,
        Val::Arr(_)
    ));
    // in a cluster PUBLISH counts only the receiving node's subscribers: wait for delivery
    let mut publisher = conn_tls(&env).await;
    let mut msg = None;
    for _ in 0..50 {
        publisher.cmd(&["PUBLISH", "tls:ch", "hello"]).await;
        msg = sub.read_within(Duration::from_millis(100)).await;
        if msg.is_some() {
            break;
        }
    }
    assert_eq!(
        msg,
        Some(Val::Arr(vec![
            Val::s("message"),
            Val::s("tls:ch"),
            Val::s("hello")
        ]))
    );
    l1_invalidated_over_tls(&env).await;
}

/// The L1 holds a key; a write straight to Redis over TLS must reach Pake as an
/// invalidation on its TLS tracking link, and the next read returns the new value.
async fn l1_invalidated_over_tls(env: &Env) {
    let mut reader = conn_tls(env).await;
    for round in 0..3 {
        let key = format!("tls:l1:{round}");
        let mut writer = env.direct(&key).await;
        assert_eq!(writer.cmd(&["SET", &key, "old"]).await, Val::s("OK"));
        let hits = metric(&env.pake, "pake_redis_l1_hits_total");
        for _ in 0..3 {
            assert_eq!(reader.cmd(&["GET", &key]).await, Val::s("old"));
        }
        assert!(
            metric(&env.pake, "pake_redis_l1_hits_total") > hits,
            "the reads were not served from the L1"
        );
        let before = metric(&env.pake, "pake_redis_l1_invalidations_total");
        assert_eq!(writer.cmd(&["SET", &key, "new"]).await, Val::s("OK"));
        let arrived = eventually(Duration::from_secs(5), || async {
            metric(&env.pake, "pake_redis_l1_invalidations_total") > before
        })
        .await;
        assert!(arrived, "no invalidation over the TLS tracking link");
        assert_eq!(reader.cmd(&["GET", &key]).await, Val::s("new"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_both_ways_standalone() {
    both_ways(Mode::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_both_ways_cluster() {
    both_ways(Mode::Cluster).await;
}

/// `allow`: TLS and plaintext clients on one port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_mode_serves_tls_and_plaintext() {
    let certs = tokio::task::spawn_blocking(Certs::generate)
        .await
        .expect("certs thread")
        .expect("certs");
    let env = Env::with(options(Mode::Standalone), |c| {
        c.client_tls_sslmode = ClientTlsMode::Allow;
        c.client_tls_cert_file = Some(certs.cert.clone());
        c.client_tls_key_file = Some(certs.key.clone());
    })
    .await;
    let mut plain = env.conn().await;
    let mut tls = Conn::connect_tls(env.addr(), &certs.ca).await;
    assert_eq!(plain.cmd(&["SET", "allow:k", "v"]).await, Val::s("OK"));
    assert_eq!(tls.cmd(&["GET", "allow:k"]).await, Val::s("v"));
    assert_eq!(plain.cmd(&["GET", "allow:k"]).await, Val::s("v"));
    let ca = certs.ca.display().to_string();
    let port = env.addr().port().to_string();
    let args = ["-p", &port, "--tls", "--cacert", &ca, "GET", "allow:k"];
    let (ok, out, err) = run("redis-cli", args.map(String::from).to_vec(), None).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "v");
}

/// Pake verifies the Redis certificate: with a CA that did not sign it, Pake does not
/// start, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_upstream_is_a_clear_startup_error() {
    let lab = lab(RedisOptions {
        tls: true,
        ..RedisOptions::default()
    })
    .await;
    let other = tokio::task::spawn_blocking(Certs::generate)
        .await
        .expect("certs thread")
        .expect("certs");
    let mut rc = redis_config(lab.url());
    rc.server_tls_ca_file = Some(other.ca.clone());
    let err = start(rc)
        .await
        .expect_err("an unverifiable Redis must not be used");
    assert!(
        err.contains("TLS handshake with Redis failed: 127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(err.contains("redis.server_tls_ca_file"), "{err}");
    // and plaintext to a TLS-only Redis is refused too (no silent downgrade)
    let plain = lab.url().replacen("rediss://", "redis://", 1);
    let err = start(redis_config(plain))
        .await
        .expect_err("plaintext to TLS");
    assert!(err.contains("cannot start the Redis proxy"), "{err}");
}

/// Start Pake with `rc`, the error as text when it does not.
async fn start(rc: RedisConfig) -> Result<(), String> {
    crate::harness::try_start(rc).await.map(drop)
}

/// `pake check-config` names each TLS key whose file is missing.
#[test]
fn check_config_names_missing_tls_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pake.toml");
    std::fs::write(
        &file,
        "[redis]\nurl = \"rediss://127.0.0.1:6379\"\n\
         server_tls_ca_file = \"/nonexistent/ca.pem\"\n\
         client_tls_sslmode = \"require\"\n\
         client_tls_key_file = \"/nonexistent/pake.key\"\n",
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pake"))
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run pake");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("redis.server_tls_ca_file: /nonexistent/ca.pem does not exist"),
        "{err}"
    );
    assert!(
        err.contains("redis.client_tls_cert_file: is required"),
        "{err}"
    );
    assert!(
        err.contains("redis.client_tls_key_file: /nonexistent/pake.key does not exist"),
        "{err}"
    );
}
