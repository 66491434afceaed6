//! Rate limits and the circuit breaker on the Redis side (the Postgres side's
//! `crate::limits`): a client address over `rate_limit_per_address` gets `-ERR` per command
//! and keeps its connection; a Redis that keeps failing opens the breaker, commands then
//! fail fast, and a probe closes it once Redis is back.

use crate::harness::{encode, eventually, metric, Conn, Env, Val};
use pake::config::Dur;
use pake::lab::RedisOptions;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_over_its_rate_gets_errors_and_keeps_its_connection() {
    let env = Env::with(RedisOptions::default(), |c| {
        c.rate_limit_per_address = 20.0;
        c.rate_limit_burst = Dur::secs(1);
    })
    .await;
    let mut c = env.conn().await;
    c.send(&encode(&["PING"]).repeat(100)).await;
    let mut pongs = 0;
    let mut refused = Vec::new();
    for _ in 0..100 {
        match c.read().await.expect("a reply per command") {
            Val::Str(s) if s == "PONG" => pongs += 1,
            other => refused.push(other.err_text()),
        }
    }
    assert!((20..100).contains(&pongs), "{pongs} answered");
    assert!(
        refused[0].contains("rate_limit_per_address"),
        "{:?}",
        refused[0]
    );
    assert_eq!(
        metric(&env.pake, "pake_redis_rate_limited_total"),
        refused.len() as f64
    );
    // the bucket refills: the same connection is served again
    let again = eventually(Duration::from_secs(5), || async {
        env.conn().await.cmd(&["PING"]).await == Val::s("PONG")
    })
    .await;
    assert!(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_redis_opens_the_breaker_and_a_probe_closes_it() {
    let mut env = Env::with(RedisOptions::default(), |c| {
        c.circuit_breaker_failures = 2;
        c.circuit_breaker_cooldown = Dur::secs(1);
    })
    .await;
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["SET", "b", "1"]).await, Val::s("OK"));
    env.lab.kill(0);
    let opened = eventually(Duration::from_secs(20), || {
        let addr = env.addr();
        async move {
            let mut c = Conn::connect(addr).await;
            c.cmd(&["GET", "nocache"])
                .await
                .err_text()
                .contains("circuit open")
        }
    })
    .await;
    assert!(opened, "repeated failures open the breaker");
    assert!(metric(&env.pake, "pake_redis_circuit_opened_total") >= 1.0);
    assert_eq!(metric(&env.pake, "pake_redis_circuit_state"), 1.0);
    assert_eq!(
        c.cmd(&["PING"]).await,
        Val::s("PONG"),
        "Pake itself answers"
    );
    tokio::task::block_in_place(|| env.lab.restart(0)).expect("restart");
    let closed = eventually(Duration::from_secs(20), || async {
        // the lab's Redis keeps nothing across a restart: a read that reaches it says nil
        let mut c = env.conn().await;
        c.cmd(&["GET", "b"]).await == Val::Nil
    })
    .await;
    assert!(closed, "a probe gets through once Redis is back");
    assert_eq!(metric(&env.pake, "pake_redis_circuit_state"), 0.0);
}
