//! Fault isolation: a dead backend trips its circuit breaker so clients fail fast until it is
//! back; rate limits per user and per client address answer 53400 without disconnecting.

use crate::harness::{code, eventually, http_get, Env, Opts};
use pake::config::Dur;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_trips_the_breaker_until_it_is_back() {
    let mut env = Env::with(Opts {
        tweak: |c| {
            c.pool.circuit_breaker_failures = 3;
            c.pool.circuit_breaker_cooldown = Dur::millis(1500);
        },
        ..Opts::default()
    })
    .await;
    let c = env.client().await;
    c.query_one("select 1", &[]).await.unwrap();
    tokio::task::block_in_place(|| env.lab.primary.crash());
    // the session whose server died is closed (08006); a new one stays connected while
    // its requests fail: first by trying to connect, then fast once the breaker opens
    let _ = c.query_one("select 1", &[]).await;
    let c = env.client().await;
    let mut fast = Vec::new();
    for _ in 0..30 {
        let started = Instant::now();
        let r = c.query_one("select 1", &[]).await;
        let took = started.elapsed();
        let e = r.expect_err("backend is down");
        if code(&e) == "57P03" {
            assert!(
                pake::lab::postgres::describe(&e).contains("circuit breaker open"),
                "{e}"
            );
            fast.push(took);
        }
    }
    assert!(
        fast.len() >= 20,
        "breaker did not open: {} fast failures",
        fast.len()
    );
    fast.sort();
    let median = fast[fast.len() / 2];
    println!(
        "circuit open: {} fast failures, median {:?}, max {:?}",
        fast.len(),
        median,
        fast.last().unwrap()
    );
    assert!(
        median < Duration::from_millis(10),
        "fail fast, not connect: {median:?}"
    );
    let (_, text) = http_get(&env.admin_url("/metrics")).await;
    let backend = format!("127.0.0.1:{}", env.lab.primary.port);
    assert!(
        text.contains(&format!("pake_circuit_state{{backend=\"{backend}\"}} 1")),
        "{text}"
    );
    // back up: after the cool-down a probe succeeds and the circuit closes
    tokio::task::block_in_place(|| env.lab.primary.start()).unwrap();
    let back = eventually(Duration::from_secs(20), || async {
        c.query_one("select 1", &[]).await.is_ok()
    })
    .await;
    assert!(back, "requests succeed once the backend is back");
    let (_, text) = http_get(&env.admin_url("/metrics")).await;
    assert!(text.contains(&format!("pake_circuit_state{{backend=\"{backend}\"}} 0")));
    assert!(text.contains(&format!(
        "pake_circuit_open_total{{backend=\"{backend}\"}} 1"
    )));
}

/// Logins the server refuses (here a database it does not have, through the wildcard
/// entry) mean the server is up: each client gets the server's 3D000, and the breaker every
/// pool to that server shares stays closed, so the next user's first connection is made.
/// (Found with postgres.js's suite: a burst of refused logins failed another tenant's new
/// pool fast with "circuit breaker open".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_do_not_trip_the_breaker() {
    let env = Env::with(Opts {
        tweak: |c| {
            c.pool.circuit_breaker_failures = 2;
            c.pool.circuit_breaker_cooldown = Dur::secs(30);
        },
        ..Opts::default()
    })
    .await;
    env.direct()
        .await
        .batch_execute("create database breaker_fresh")
        .await
        .unwrap();
    for i in 0..6 {
        let url = env.url(&format!("nosuch_{i}"));
        let refused = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                c.query_one("select 1", &[]).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        let e = refused.expect_err("the server has no such database");
        assert_eq!(code(&e), "3D000", "{e}");
    }
    // a pool that has never connected: its first connection goes through the breaker
    let fresh = pake::lab::postgres::connect(&env.url("breaker_fresh"))
        .await
        .unwrap();
    let one: i32 = fresh.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let (_, text) = http_get(&env.admin_url("/metrics")).await;
    let backend = format!("127.0.0.1:{}", env.lab.primary.port);
    assert!(
        !text.contains(&format!(
            "pake_circuit_open_total{{backend=\"{backend}\"}} 1"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_per_user_answers_53400_and_keeps_the_client() {
    let env = Env::with(Opts {
        tweak: |c| {
            c.general.rate_limit_per_user = 5.0;
            c.general.rate_limit_burst = Dur::secs(1);
        },
        ..Opts::default()
    })
    .await;
    let c = env.client().await;
    let mut limited = 0;
    for _ in 0..20 {
        match c.simple_query("select 1").await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(code(&e), "53400", "{e}");
                limited += 1;
            }
        }
    }
    assert!(limited >= 10, "only {limited} of 20 limited at 5/s");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.simple_query("select 1")
        .await
        .expect("tokens refill; the connection is still fine");
    let (_, text) = http_get(&env.admin_url("/metrics")).await;
    assert!(
        text.contains("pake_rate_limited_total{scope=\"user\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_per_address() {
    let env = Env::with(Opts {
        tweak: |c| {
            c.general.rate_limit_per_address = 3.0;
            c.general.rate_limit_burst = Dur::secs(1);
        },
        ..Opts::default()
    })
    .await;
    // two connections from the same address share the bucket
    let a = env.client().await;
    let b = env.client().await;
    let mut limited = 0;
    for i in 0..10 {
        let c = if i % 2 == 0 { &a } else { &b };
        if let Err(e) = c.simple_query("select 1").await {
            assert_eq!(code(&e), "53400");
            assert!(
                pake::lab::postgres::describe(&e).contains("client address"),
                "{e}"
            );
            limited += 1;
        }
    }
    assert!(limited >= 5, "{limited}");
}

/// `general.clients_max_memory`: large messages (over 256 KiB) are charged to one process
/// budget while Pake reads them; the client whose message would pass it gets 53200 and is
/// disconnected, the others are served, and the budget comes back when the message is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_share_one_process_budget() {
    use crate::harness::{frame, Raw};
    let env = Env::with(Opts {
        tweak: |c| c.general.clients_max_memory = pake::config::Bytes(1 << 20),
        ..Opts::default()
    })
    .await;
    let query = |len: usize| {
        let text = format!("SELECT length('{}')\0", "x".repeat(len));
        frame(b'Q', text.as_bytes())
    };
    let login = || Raw::login(&env, &env.lab.user, &env.lab.password, "postgres");
    // a client halfway through sending a 700 KB statement holds 700 KB of the budget
    let mut slow = login().await.expect("login");
    let big = query(700_000);
    slow.send(&big[..300_000]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // a 600 KB statement now would pass 1 MiB: refused, that client only
    let mut greedy = login().await.expect("login");
    greedy.send(&query(600_000)).await;
    assert_eq!(greedy.error().await, Some(("53200".into(), "FATAL".into())));
    assert!(greedy.closed().await);
    let good = env.client().await;
    good.batch_execute("select 1")
        .await
        .expect("others are served");
    // the slow client finishes its statement and gets its answer
    slow.send(&big[300_000..]).await;
    let mut answered = false;
    while let Some((tag, body)) = slow.read().await {
        match tag {
            b'D' => answered = String::from_utf8_lossy(&body).contains("700000"),
            b'E' => panic!("error {}", crate::harness::sqlstate(&body)),
            b'Z' => break,
            _ => {}
        }
    }
    assert!(answered, "the slow client's statement ran");
    // once it is idle its charge is back: the same 600 KB statement now fits
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut later = login().await.expect("login");
    later.send(&query(600_000)).await;
    loop {
        let (tag, body) = later.read().await.expect("an answer");
        assert_ne!(tag, b'E', "{}", crate::harness::sqlstate(&body));
        if tag == b'Z' {
            break;
        }
    }
    let (_, metrics) = http_get(&env.admin_url("/metrics")).await;
    assert!(
        metrics.contains("53200"),
        "the refusal is counted by SQLSTATE"
    );
}

/// `max_user_connections` turns a client away at its login, with 53300 in place of the
/// welcome: it was told it was in (ReadyForQuery), then got the FATAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_max_user_connections_is_refused_before_the_welcome() {
    let env = Env::with(Opts {
        tweak: |c| c.users[0].max_user_connections = 2,
        ..Opts::default()
    })
    .await;
    let login = || crate::harness::Raw::login(&env, &env.lab.user, &env.lab.password, "postgres");
    let _first = login().await.expect("first");
    let second = login().await.expect("second");
    assert_eq!(login().await.err().as_deref(), Some("53300"));
    drop(second);
    let room = eventually(Duration::from_secs(10), || async { login().await.is_ok() }).await;
    assert!(room, "the place the second client left is free again");
}
