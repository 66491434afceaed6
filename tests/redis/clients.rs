//! Real clients through Pake: redis-cli (one-shot commands, RESP3 with `-3`, and `--pipe`
//! mass insertion) and redis-benchmark (every command group it has, pipelined), against a
//! standalone server and a cluster.

use crate::harness::{cli, run, Env, Mode};

async fn redis_cli_works(mode: Mode) {
    let env = Env::start(mode).await;
    assert_eq!(cli(&env, &[], &["SET", "cli:k", "v1"]).await, "OK");
    assert_eq!(cli(&env, &[], &["GET", "cli:k"]).await, "v1");
    assert_eq!(cli(&env, &["-3"], &["HSET", "cli:h", "f", "1"]).await, "1");
    let all = cli(&env, &["-3"], &["HGETALL", "cli:h"]).await;
    // redis-cli prints a RESP3 map as "key value" lines (a RESP2 array would be "f\n1")
    assert_eq!(all, "f 1", "RESP3 map");
    // mass insertion: 2000 pipelined SETs, then read back with MGET across slots
    let mut input = String::new();
    for i in 0..2000 {
        input.push_str(&format!("SET pipe:{i} {i}\r\n"));
    }
    let args = vec!["-p".into(), env.addr().port().to_string(), "--pipe".into()];
    let (ok, out, err) = run("redis-cli", args, Some(input.into_bytes())).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("errors: 0, replies: 2000"), "{out}");
    let got = cli(
        &env,
        &[],
        &["MGET", "pipe:0", "pipe:999", "pipe:1999", "pipe:none"],
    )
    .await;
    assert_eq!(
        got, "0\n999\n1999",
        "the missing key prints as an empty line (trimmed)"
    );
}

async fn redis_benchmark_works(mode: Mode, extra: &[&str]) {
    let env = Env::start(mode).await;
    let mut args: Vec<String> = [
        "-p",
        &env.addr().port().to_string(),
        "-t",
        "ping,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,mset",
        "-n",
        "2000",
        "-c",
        "10",
        "-P",
        "8",
        "-r",
        "1000",
        "--csv",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let (ok, out, err) = run("redis-benchmark", args, None).await;
    assert!(ok, "redis-benchmark failed: {out}{err}");
    assert!(!out.contains("ERR") && !err.contains("ERR"), "{out}{err}");
    for test in [
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "SPOP",
        "ZPOPMIN",
        "LRANGE_100",
        "MSET (10 keys)",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("\"{test}")))
            .unwrap_or_else(|| panic!("no {test} in {out}"));
        let rps: f64 = line
            .split(',')
            .nth(1)
            .and_then(|v| v.trim_matches('"').parse().ok())
            .unwrap_or(0.0);
        assert!(rps > 0.0, "{line}");
    }
    assert_eq!(
        pake::lab::RedisNode::query(&env.lab.nodes[0], &["PING"]).expect("redis alive"),
        "PONG"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_standalone() {
    redis_cli_works(Mode::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_cluster() {
    redis_cli_works(Mode::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_standalone() {
    redis_benchmark_works(Mode::Standalone, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_cluster_resp3() {
    redis_benchmark_works(Mode::Cluster, &["-3"]).await;
}

/// A drain ends every session: one idle between commands, one subscribed (its connection
/// piped to Redis), each with its connection closed, and no client left counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_idle_and_subscribed_sessions() {
    use crate::harness::Val;
    let env = Env::start(Mode::Standalone).await;
    let mut idle = env.conn().await;
    assert_eq!(idle.cmd(&["PING"]).await, Val::s("PONG"));
    let mut sub = env.conn().await;
    sub.send(b"*2\r\n$9\r\nSUBSCRIBE\r\n$6\r\ndrain:\r\n").await;
    assert!(sub.read().await.is_some(), "subscribed");
    let redis = env.pake.redis.clone().expect("redis service");
    assert_eq!(redis.client_count(), 2);
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        redis.drain(std::time::Duration::from_secs(10)).await;
        assert!(idle.closed().await);
        assert!(sub.closed().await);
    })
    .await
    .expect("the drain ends both sessions");
    assert_eq!(redis.client_count(), 0, "no session outlives the drain");
}
