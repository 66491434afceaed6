//! `pake orchestration --health-check` against real servers: healthy is exit 0 with an `ok`
//! line per check; a stopped server is a non-zero exit and a `FAIL` line naming it. Redis
//! is checked in plaintext and over TLS (a TLS-only lab Redis behind a TLS-only Pake).

use crate::harness::{eventually, free_port, health, pake, redis_server, serve, Proc};
use pake::lab::{PgLab, PgOptions, RedisLab, RedisOptions};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn postgres_primary_and_replica_up_then_each_stopped() {
    let mut lab = PgLab::start(PgOptions {
        replica: true,
        ..PgOptions::default()
    })
    .expect("lab with replica");
    let primary = format!("primary 127.0.0.1:{}", lab.primary.port);
    let replica_port = lab.replica.as_ref().expect("replica").port;
    let replica = format!("replica 127.0.0.1:{replica_port}");
    let primary_url = lab.url("postgres");
    let replica_url = lab.replica_url("postgres").expect("replica url");
    let flags = ["--pg-primary", &primary_url, "--pg-replica", &replica_url];

    let ran = health("postgres", &flags);
    assert!(ran.ok(), "{ran}");
    assert!(ran.line(&primary).starts_with("ok"), "{ran}");
    assert!(
        ran.line(&primary).contains("primary (not in recovery)"),
        "{ran}"
    );
    assert!(
        ran.line(&replica).contains("in recovery (replica)"),
        "{ran}"
    );
    let one_db = health("postgres:postgres", &flags);
    assert!(one_db.ok(), "{one_db}");
    let unknown = health("postgres:shop", &flags);
    assert!(!unknown.ok(), "{unknown}");
    assert!(
        unknown.stderr.contains("\"shop\" is not configured"),
        "{unknown}"
    );

    if let Some(r) = lab.replica.as_mut() {
        r.stop();
    }
    let ran = health("postgres", &flags);
    assert!(!ran.ok(), "{ran}");
    assert!(ran.line(&primary).starts_with("ok"), "{ran}");
    let down = ran.line(&replica);
    assert!(down.starts_with("FAIL postgres:postgres"), "{ran}");
    assert!(down.contains("Connection refused"), "{ran}");
    assert!(
        ran.stderr.contains("1 of 2 checks failed") && ran.stderr.contains(&replica),
        "{ran}"
    );

    lab.primary.stop();
    let ran = health("postgres:postgres", &flags);
    assert!(!ran.ok(), "{ran}");
    assert!(ran.line(&primary).starts_with("FAIL"), "{ran}");
    assert!(ran.stderr.contains("2 of 2 checks failed"), "{ran}");
}

#[test]
fn wrong_password_is_a_failure_with_the_sqlstate() {
    let lab = PgLab::start(PgOptions::default()).expect("lab");
    let ran = health(
        "postgres",
        &[
            "--pg-primary",
            &lab.url("postgres").replace(":pake@", ":nope@"),
        ],
    );
    assert!(!ran.ok(), "{ran}");
    assert!(ran.line("primary").contains("28P01"), "{ran}");
}

#[test]
fn pake_listeners_while_serving_not_ready_and_killed() {
    let mut lab = PgLab::start(PgOptions::default()).expect("lab");
    let url = lab.url("postgres");
    let (mut pake, pg, admin) = serve(&url);
    let listen = [
        "--pg-listen".to_string(),
        format!("127.0.0.1:{pg}"),
        "--admin-listen".to_string(),
        format!("127.0.0.1:{admin}"),
    ];
    let listen: Vec<&str> = listen.iter().map(String::as_str).collect();
    let up = eventually(Duration::from_secs(30), || health("pake", &listen).ok());
    assert!(up, "pake serve never passed: {}", health("pake", &listen));
    let ran = health("pake", &listen);
    assert!(
        ran.line(&format!("postgres listener 127.0.0.1:{pg}"))
            .starts_with("ok"),
        "{ran}"
    );
    assert!(ran.line("/ready").contains("ready"), "{ran}");

    // everything, from a config file, as `pake serve --config` would read it
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pake.toml");
    let toml = format!(
        "[general]\npg_listen = \"127.0.0.1:{pg}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\n\
         [[databases]]\nname = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\n\n\
         [[users]]\nname = \"pake\"\npassword = \"pake\"\n",
        lab.primary.port
    );
    std::fs::write(&file, toml).expect("write config");
    let file = file.to_str().expect("utf-8 path");
    let all = health("all", &["--config", file]);
    assert!(all.ok(), "{all}");
    assert_eq!(all.stdout.lines().count(), 3, "{all}");

    // the primary goes away: a client through Pake fails, so /ready turns 503
    lab.primary.stop();
    let through = format!("postgres://pake:pake@127.0.0.1:{pg}/postgres");
    let _ = std::process::Command::new(pake::lab::postgres::bindir().expect("bindir").join("psql"))
        .args(["-X", "-c", "select 1", &through])
        .env("PGCONNECT_TIMEOUT", "5")
        .output();
    let ran = health("pake", &listen);
    assert!(!ran.ok(), "{ran}");
    let ready = ran.line("/ready");
    assert!(
        ready.starts_with("FAIL") && ready.contains("HTTP 503"),
        "{ran}"
    );
    assert!(ready.contains("pool postgres"), "{ran}");
    let all = health("all", &["--config", file]);
    assert!(all.line("primary").starts_with("FAIL"), "{all}");

    pake.kill();
    let ran = health("pake", &listen);
    assert!(!ran.ok(), "{ran}");
    let line = ran.line(&format!("postgres listener 127.0.0.1:{pg}"));
    assert!(
        line.starts_with("FAIL") && line.contains("cannot connect"),
        "{ran}"
    );
    assert!(ran.stderr.contains("2 of 2 checks failed"), "{ran}");
}

#[test]
fn dockerfile_healthcheck_command_passes_against_a_running_pake() {
    let dockerfile = std::fs::read_to_string("docker/Dockerfile").expect("docker/Dockerfile");
    // HEALTHCHECK [options] \ newline CMD [...]: the exec-form array after its CMD
    let cmd = dockerfile
        .split("\nHEALTHCHECK ")
        .nth(1)
        .and_then(|rest| rest.split_once("CMD "))
        .and_then(|(_, cmd)| cmd.lines().next())
        .expect("a HEALTHCHECK … CMD line");
    let argv: Vec<String> = serde_json::from_str(cmd.trim())
        .unwrap_or_else(|e| panic!("HEALTHCHECK CMD must be exec form (JSON array): {e}: {cmd}"));
    assert_eq!(argv[0], "pake", "{argv:?}");
    assert!(argv.contains(&"--service=pake".to_string()), "{argv:?}");

    let lab = PgLab::start(PgOptions::default()).expect("lab");
    let (mut pake, pg, admin) = serve(&lab.url("postgres"));
    let run = || {
        crate::harness::Ran::from(
            crate::harness::pake()
                .args(&argv[1..])
                .env("PAKE_PG_LISTEN", format!("127.0.0.1:{pg}"))
                .env("PAKE_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
                .output()
                .expect("run the HEALTHCHECK command"),
        )
    };
    assert!(
        eventually(Duration::from_secs(30), || run().ok()),
        "{}",
        run()
    );
    pake.kill();
    assert!(!run().ok());
}

#[test]
fn redis_ping_with_auth_then_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut redis, port) = redis_server(Some("s3cret"), dir.path());
    let good = format!("redis://:s3cret@127.0.0.1:{port}");
    let ran = health("redis", &["--redis", &good]);
    assert!(ran.ok(), "{ran}");
    assert!(
        ran.line(&format!("redis 127.0.0.1:{port}"))
            .contains("PONG"),
        "{ran}"
    );

    let ran = health("redis", &["--redis", &good.replace("s3cret", "wrong")]);
    assert!(!ran.ok(), "{ran}");
    assert!(
        ran.line("redis").contains("WRONGPASS") || ran.line("redis").contains("invalid password"),
        "{ran}"
    );
    let ran = health("redis", &["--redis", &format!("redis://127.0.0.1:{port}")]);
    assert!(ran.line("redis").contains("NOAUTH"), "{ran}");

    redis.kill();
    let ran = health(
        "all",
        &[
            "--redis",
            &good,
            "--pg-listen",
            "127.0.0.1:1",
            "--admin-listen",
            "127.0.0.1:1",
        ],
    );
    assert!(!ran.ok(), "{ran}");
    assert!(
        ran.line(&format!("redis 127.0.0.1:{port}"))
            .starts_with("FAIL"),
        "{ran}"
    );
}

#[test]
fn usage_errors_are_not_health_results() {
    let ran = health("mysql", &[]);
    assert_eq!(ran.code, Some(2), "{ran}");
    assert!(ran.stderr.contains("postgres:<database>"), "{ran}");
    let ran = health("redis", &[]);
    assert!(!ran.ok() && ran.stdout.is_empty(), "{ran}");
    assert!(ran.stderr.contains("--redis URL"), "{ran}");
}

/// A config for the TLS test: Pake in front of `url`, its Redis listener on `listen` with
/// TLS required, presenting `cert` (whose key is `key`).
fn tls_config(ports: (u16, u16, u16), url: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    let (pg, admin, listen) = ports;
    format!(
        "[general]\npg_listen = \"127.0.0.1:{pg}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\n\
         [redis]\nlisten = \"127.0.0.1:{listen}\"\nurl = \"{url}\"\nthreads = 1\n\
         server_tls_ca_file = {ca:?}\nclient_tls_sslmode = \"require\"\n\
         client_tls_cert_file = {cert:?}\nclient_tls_key_file = {key:?}\n"
    )
}

#[test]
fn rediss_backend_and_tls_only_redis_listener_then_redis_killed() {
    let mut lab = RedisLab::start(RedisOptions {
        tls: true,
        ..RedisOptions::default()
    })
    .expect("TLS-only redis lab");
    let url = lab.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let certs = lab.certs.as_ref().expect("a TLS lab has certificates");
    let ports = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, cert: &Path| {
        let file = dir.path().join(name);
        let toml = tls_config(ports, &url, &certs.ca, cert, &certs.key);
        std::fs::write(&file, toml).expect("write config");
        file.to_str().expect("utf-8 path").to_string()
    };
    // Pake presents its certificate followed by the lab root, as a chain file often ends
    let chain = dir.path().join("chain.pem");
    let pem = [&certs.cert, &certs.ca].map(|p| std::fs::read_to_string(p).expect("read PEM"));
    std::fs::write(&chain, pem.concat()).expect("write chain");
    let file = write("pake.toml", &chain);
    let _pake = Proc(
        pake()
            .args(["serve", "--config", &file])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pake serve"),
    );
    let backend = format!("redis 127.0.0.1:{}", lab.nodes[0].port);
    let listener = format!("redis listener 127.0.0.1:{}", ports.2);
    let up = eventually(Duration::from_secs(30), || {
        health("all", &["--config", &file]).ok()
    });
    let ran = health("all", &["--config", &file]);
    assert!(up && ran.ok(), "{ran}");
    let line = ran.line(&backend);
    assert!(
        line.starts_with("ok   redis")
            && line.contains("PONG over TLS (verify-full against redis.server_tls_ca_file)"),
        "{ran}"
    );
    // the self-signed root in client_tls_cert_file is the anchor Pake's certificate must reach
    let line = ran.line(&listener);
    assert!(
        line.starts_with("ok   pake")
            && line.contains("over TLS (certificate checked against redis.client_tls_cert_file)"),
        "{ran}"
    );

    // the leaf alone names no root: nothing to verify against, so PING unverified
    let leaf_only = write("leaf.toml", &certs.cert);
    let ran = health("pake", &["--config", &leaf_only]);
    assert!(ran.ok(), "{ran}");
    assert!(
        ran.line(&listener)
            .contains("over TLS (certificate not verified"),
        "{ran}"
    );
    // a root that did not sign what Pake presents: the probe must refuse the handshake
    let other = pake::lab::certs::Certs::generate().expect("another lab CA");
    let stranger = write("other.toml", &other.ca);
    let ran = health("pake", &["--config", &stranger]);
    assert!(!ran.ok(), "{ran}");
    let line = ran.line(&listener);
    assert!(
        line.starts_with("FAIL pake") && line.contains("TLS handshake failed"),
        "{ran}"
    );

    // flags only, as a container configured through PAKE_* variables runs it
    let ca = certs.ca.to_str().expect("utf-8 path");
    let ran = health("redis", &["--redis", &url, "--redis-tls-ca-file", ca]);
    assert!(
        ran.ok() && ran.line(&backend).contains("PONG over TLS"),
        "{ran}"
    );
    let ran = health("redis", &["--redis", &url]);
    assert!(!ran.ok(), "{ran}");
    assert!(
        ran.line(&backend)
            .contains("needs [redis] server_tls_ca_file"),
        "{ran}"
    );

    lab.kill(0);
    let ran = health("all", &["--config", &file]);
    assert!(!ran.ok(), "{ran}");
    assert!(ran.line(&backend).starts_with("FAIL redis"), "{ran}");
    assert!(
        ran.stderr.contains("1 of 4 checks failed") && ran.stderr.contains(&backend),
        "{ran}"
    );
}

/// A Postgres that takes TCP logins over TLS only: the check logs in the way Pake's server
/// connections do (`[tls] server_tls_sslmode`), and without TLS it names the refusal.
#[test]
fn postgres_requiring_tls_is_checked_over_tls() {
    let lab = PgLab::start(PgOptions {
        tls: true,
        ..PgOptions::default()
    })
    .expect("TLS lab");
    let hba = lab.primary.data.join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
    let ssl_only: Vec<String> = text
        .lines()
        .map(|l| match l.strip_prefix("host ") {
            Some(rest) => format!("hostssl {rest}"),
            None => l.to_string(),
        })
        .collect();
    std::fs::write(&hba, ssl_only.join("\n") + "\n").expect("write pg_hba.conf");
    lab.primary
        .psql(&lab.user, "SELECT pg_reload_conf()")
        .expect("reload");
    let certs = lab.certs.as_ref().expect("a TLS lab has certificates");
    let url = lab.url("postgres");
    let primary = format!("primary 127.0.0.1:{}", lab.primary.port);
    let plain = ["--pg-primary", url.as_str()];
    let refused = eventually(Duration::from_secs(10), || !health("postgres", &plain).ok());
    let ran = health("postgres", &plain);
    assert!(refused, "{ran}");
    assert!(ran.line(&primary).contains("no encryption"), "{ran}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pake.toml");
    let toml = format!(
        "[[databases]]\nname = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\n\n\
         [[users]]\nname = {:?}\npassword = {:?}\n\n\
         [tls]\nserver_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = {:?}\n",
        lab.primary.port, lab.user, lab.password, certs.ca
    );
    std::fs::write(&file, toml).expect("write config");
    let config = file.to_str().expect("utf-8 path");
    let ran = health("postgres", &["--config", config]);
    assert!(ran.ok(), "{ran}");
    assert!(ran.line(&primary).contains("not in recovery"), "{ran}");
}
