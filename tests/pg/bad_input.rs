//! Bad input gets a clear error with the right SQLSTATE, the connection is closed where the
//! stream cannot be trusted, and everyone else keeps being served.

use crate::harness::{code, frame, Env, Opts, Raw};
use pake::config::Dur;
use std::time::Duration;

const STARTUP_V3: i32 = 196_608;

fn startup(pairs: &[(&str, &str)], version: i32) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in pairs {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    p.extend(body);
    p
}

/// After each bad client, a good one still works.
async fn still_serving(env: &Env) {
    let c = env.client().await;
    let v: i32 = c.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_bad_startup_packets() {
    let env = Env::start().await;
    // an HTTP request where a startup packet belongs: the length is absurd
    let mut raw = Raw::connect(&env).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(raw.error().await.map(|e| e.0), Some("08P01".into()));
    assert!(raw.closed().await);
    // a length too short to be a packet
    let mut raw = Raw::connect(&env).await;
    raw.send(&[0, 0, 0, 2, 0, 0]).await;
    assert_eq!(raw.error().await.map(|e| e.0), Some("08P01".into()));
    // an unsupported protocol version
    let mut raw = Raw::connect(&env).await;
    raw.send(&startup(&[("user", "pake")], 2 << 16)).await;
    assert_eq!(raw.error().await.map(|e| e.0), Some("0A000".into()));
    // no user
    let mut raw = Raw::connect(&env).await;
    raw.send(&startup(&[("database", "postgres")], STARTUP_V3))
        .await;
    assert_eq!(raw.error().await.map(|e| e.0), Some("28000".into()));
    // a truncated startup packet, then the client goes away
    let mut raw = Raw::connect(&env).await;
    raw.send(&startup(&[("user", "pake")], STARTUP_V3)[..10])
        .await;
    drop(raw);
    // a Terminate where the startup packet belongs (node-postgres's connect() then end() in
    // one tick writes it first): the client has left, so it is closed without a reply, as
    // PostgreSQL does (an ErrorResponse failed the connect() node had abandoned)
    let mut raw = Raw::connect(&env).await;
    let mut gave_up = vec![b'X', 0, 0, 0, 4];
    gave_up.extend(startup(&[("user", "pake")], STARTUP_V3));
    raw.send(&gave_up).await;
    let mut reply = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut raw.stream, &mut reply);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("closed")
        .expect("read");
    assert_eq!(reply, b"", "no reply to a client that gave up");
    // SSLRequest is answered 'N' and the login continues in plaintext
    let mut raw = Raw::connect(&env).await;
    raw.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await;
    let mut answer = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut raw.stream, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"N");
    still_serving(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_unknown_database() {
    let env = Env::start().await;
    let e = Raw::login(&env, "pake", "wrong", "postgres").await.err();
    assert_eq!(e.as_deref(), Some("28P01"));
    let e = Raw::login(&env, "nobody", "pake", "postgres").await.err();
    assert_eq!(
        e.as_deref(),
        Some("28P01"),
        "unknown users fail like wrong passwords"
    );
    let e = Raw::login(&env, "pake", "pake", "nosuchdb").await.err();
    assert_eq!(e.as_deref(), Some("3D000"));
    // and through a real driver
    let bad = env.url("postgres").replace(":pake@", ":nope@");
    let e = pake::lab::postgres::connect(&bad)
        .await
        .expect_err("must fail");
    assert!(
        e.to_string().contains("28P01") || e.to_string().contains("password"),
        "{e}"
    );
    still_serving(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_after_login() {
    let env = Env::start().await;
    // unknown message type
    let mut raw = Raw::login(&env, "pake", "pake", "postgres").await.unwrap();
    raw.send(&frame(b'~', b"hello")).await;
    assert_eq!(raw.error().await, Some(("08P01".into(), "FATAL".into())));
    assert!(raw.closed().await);
    // a declared length over max_message_size (64 MiB by default)
    let mut raw = Raw::login(&env, "pake", "pake", "postgres").await.unwrap();
    let mut huge = vec![b'Q'];
    huge.extend_from_slice(&(1_000_000_000i32).to_be_bytes());
    raw.send(&huge).await;
    assert_eq!(raw.error().await.map(|e| e.0), Some("08P01".into()));
    assert!(raw.closed().await);
    // a negative length
    let mut raw = Raw::login(&env, "pake", "pake", "postgres").await.unwrap();
    raw.send(&[b'Q', 0xff, 0xff, 0xff, 0xf0]).await;
    assert_eq!(raw.error().await.map(|e| e.0), Some("08P01".into()));
    // a Query whose text is not NUL-terminated
    let mut raw = Raw::login(&env, "pake", "pake", "postgres").await.unwrap();
    raw.send(&frame(b'Q', b"select 1")).await;
    assert_eq!(raw.error().await.map(|e| e.0), Some("08P01".into()));
    // a Parse cut short inside its body
    let mut raw = Raw::login(&env, "pake", "pake", "postgres").await.unwrap();
    raw.send(&frame(b'P', b"stmt\0select")).await;
    raw.send(&frame(b'S', b"")).await;
    assert_eq!(raw.error().await.map(|e| e.0), Some("08P01".into()));
    // a password message after login
    let mut raw = Raw::login(&env, "pake", "pake", "postgres").await.unwrap();
    raw.send(&frame(b'p', b"secret\0")).await;
    assert_eq!(raw.error().await.map(|e| e.0), Some("08P01".into()));
    still_serving(&env).await;
    // none of these left a server checked out: the pool (5) still serves 5 at once
    let clients: Vec<_> = futures_util::future::join_all((0..5).map(|_| env.client())).await;
    for c in &clients {
        c.batch_execute("begin").await.unwrap();
    }
    for c in &clients {
        c.batch_execute("commit").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_with_small_limit() {
    let env = Env::with(Opts {
        tweak: |c| c.general.max_message_size = pake::config::Bytes(4096),
        ..Opts::default()
    })
    .await;
    let c = env.client().await;
    let long = format!("select '{}'", "x".repeat(10_000));
    let e = c.simple_query(&long).await.unwrap_err();
    assert!(e.is_closed() || code(&e) == "08P01", "{e}");
    still_serving(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_cut_at_login_timeout() {
    let env = Env::with(Opts {
        tweak: |c| c.pool.client_login_timeout = Dur::millis(300),
        ..Opts::default()
    })
    .await;
    let mut raw = Raw::connect(&env).await;
    let started = std::time::Instant::now();
    assert_eq!(raw.error().await.map(|e| e.0), Some("08P01".into()));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(raw.closed().await);
    still_serving(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_clients() {
    let env = Env::with(Opts {
        tweak: |c| c.general.max_client_conn = 3,
        ..Opts::default()
    })
    .await;
    let held: Vec<_> = futures_util::future::join_all((0..3).map(|_| env.client())).await;
    let e = pake::lab::postgres::connect(&env.url("postgres"))
        .await
        .expect_err("4th fails");
    assert!(
        e.to_string().contains("53300") || e.to_string().contains("too many"),
        "{e}"
    );
    drop(held);
    let ok = crate::harness::eventually(Duration::from_secs(5), || async {
        pake::lab::postgres::connect(&env.url("postgres"))
            .await
            .is_ok()
    })
    .await;
    assert!(ok, "a place frees up when a client leaves");
}
