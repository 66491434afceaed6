//! L1 coherence: a writer talking to Redis directly, readers through two Pake instances;
//! tracking connections killed; FLUSHALL; Pake's own writes; and the hit rate of a skewed
//! read-heavy run (asserted from the metrics, never from a time).

use crate::harness::{eventually, metric, redis_config, start_pake, Conn, Env, Mode, Val};
use pake::app::Running;
use pake::redis::config::TrackingProtocol;
use std::time::{Duration, Instant};

async fn pake_conn(p: &Running) -> Conn {
    Conn::connect(p.redis_addr.expect("redis listener")).await
}

/// Wait until `p` has counted more invalidations than `before`.
async fn invalidated(p: &Running, before: f64) -> bool {
    eventually(Duration::from_secs(5), || async {
        metric(p, "pake_redis_l1_invalidations_total") > before
    })
    .await
}

async fn two_pakes_direct_writer(mode: Mode, tracking: TrackingProtocol) {
    let env = Env::with(crate::harness::options(mode), |c| {
        c.tracking_protocol = tracking
    })
    .await;
    let mut rc = redis_config(env.lab.url());
    rc.tracking_protocol = tracking;
    let second = start_pake(rc).await;
    env.wait_armed(&second).await;
    let pakes = [&env.pake, &second];
    let keys = ["co:a", "co:b", "co:c", "co:d"];
    let mut readers = [pake_conn(pakes[0]).await, pake_conn(pakes[1]).await];
    let mut windows = Vec::new();
    let mut stale_after_invalidation = 0;
    for round in 0..40 {
        let key = keys[round % keys.len()];
        let mut writer = env.direct(key).await;
        // make sure both readers hold the current value in their L1
        for r in readers.iter_mut() {
            r.cmd(&["GET", key]).await;
            r.cmd(&["GET", key]).await;
        }
        let before: Vec<f64> = pakes
            .iter()
            .map(|p| metric(p, "pake_redis_l1_invalidations_total"))
            .collect();
        let value = format!("v{round}");
        assert_eq!(writer.cmd(&["SET", key, &value]).await, Val::s("OK"));
        let written = Instant::now();
        // staleness window: until both readers see the new value
        for r in readers.iter_mut() {
            loop {
                if r.cmd(&["GET", key]).await == Val::Str(value.clone()) {
                    break;
                }
                assert!(
                    written.elapsed() < Duration::from_secs(5),
                    "never saw {value}"
                );
            }
        }
        windows.push(written.elapsed());
        // once each invalidation has arrived, no read may be stale
        for (i, p) in pakes.iter().enumerate() {
            assert!(
                invalidated(p, before[i]).await,
                "pake {i} got no invalidation"
            );
            for _ in 0..5 {
                if readers[i].cmd(&["GET", key]).await != Val::Str(value.clone()) {
                    stale_after_invalidation += 1;
                }
            }
        }
    }
    assert_eq!(
        stale_after_invalidation, 0,
        "stale reads after the invalidation arrived"
    );
    windows.sort();
    eprintln!(
        "staleness window ({mode:?}, {tracking:?}, {} writes, 2 Pakes): p50 {:?} max {:?}",
        windows.len(),
        windows[windows.len() / 2],
        windows[windows.len() - 1]
    );
    assert!(
        metric(&env.pake, "pake_redis_l1_hits_total") > 0.0,
        "readers did hit the L1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writer_two_pakes_standalone() {
    two_pakes_direct_writer(Mode::Standalone, TrackingProtocol::Resp3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writer_two_pakes_cluster() {
    two_pakes_direct_writer(Mode::Cluster, TrackingProtocol::Resp3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writer_two_pakes_resp2_redirect() {
    two_pakes_direct_writer(Mode::Standalone, TrackingProtocol::Resp2).await;
}

/// The ids of Pake's tracking connections on a node.
fn tracking_ids(node: &pake::lab::RedisNode) -> Vec<String> {
    node.query(&["CLIENT", "LIST"])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("name=pake-tracking"))
        .filter_map(|l| l.split(' ').next()?.strip_prefix("id=").map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_tracking_connection_flushes_and_rearms() {
    let env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["SET", "tk", "1"]).await, Val::s("OK"));
    c.cmd(&["GET", "tk"]).await;
    let hits = metric(&env.pake, "pake_redis_l1_hits_total");
    assert_eq!(c.cmd(&["GET", "tk"]).await, Val::s("1"));
    assert_eq!(
        metric(&env.pake, "pake_redis_l1_hits_total"),
        hits + 1.0,
        "cached"
    );
    let flushes = metric(&env.pake, "pake_redis_l1_flushes_total");
    let node = &env.lab.nodes[0];
    let ids = tracking_ids(node);
    assert_eq!(ids.len(), 1, "one tracking connection");
    node.query(&["CLIENT", "KILL", "ID", &ids[0]])
        .expect("kill");
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&env.pake, "pake_redis_l1_flushes_total") > flushes
        })
        .await,
        "the drop flushed the cache"
    );
    let misses = metric(&env.pake, "pake_redis_l1_misses_total");
    assert_eq!(c.cmd(&["GET", "tk"]).await, Val::s("1"));
    assert!(
        metric(&env.pake, "pake_redis_l1_misses_total") > misses,
        "entry was flushed"
    );
    // re-armed: a new tracking connection, and invalidations flow again
    assert!(
        eventually(Duration::from_secs(5), || async {
            tracking_ids(node).first().is_some_and(|id| *id != ids[0])
        })
        .await,
        "tracking re-armed"
    );
    env.wait_armed(&env.pake).await;
    c.cmd(&["GET", "tk"]).await;
    c.cmd(&["GET", "tk"]).await;
    let before = metric(&env.pake, "pake_redis_l1_invalidations_total");
    env.direct("tk").await.cmd(&["SET", "tk", "2"]).await;
    assert!(invalidated(&env.pake, before).await);
    assert_eq!(c.cmd(&["GET", "tk"]).await, Val::s("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_and_own_writes() {
    let env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    c.cmd(&["SET", "f", "1"]).await;
    c.cmd(&["GET", "f"]).await;
    assert_eq!(c.cmd(&["GET", "f"]).await, Val::s("1"));
    let flushes = metric(&env.pake, "pake_redis_l1_flushes_total");
    env.direct("f").await.cmd(&["FLUSHALL"]).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&env.pake, "pake_redis_l1_flushes_total") > flushes
        })
        .await,
        "a NULL invalidation flushes"
    );
    assert_eq!(c.cmd(&["GET", "f"]).await, Val::Nil);
    // own writes: invalidated before the reply, even before Redis's invalidation arrives
    for i in 0..50 {
        let v = i.to_string();
        c.cmd(&["HSET", "oh", "f", &v]).await;
        assert_eq!(c.cmd(&["HGET", "oh", "f"]).await, Val::Str(v.clone()));
        assert_eq!(c.cmd(&["HGET", "oh", "f"]).await, Val::Str(v));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipf_read_heavy_hit_rate() {
    let env = Env::start(Mode::Cluster).await;
    let keys = 1000;
    let mut loader = env.conn().await;
    let mut batch = Vec::new();
    for k in 0..keys {
        batch.extend(crate::harness::encode(&["SET", &format!("z:{k}"), "value"]));
    }
    loader.send(&batch).await;
    for _ in 0..keys {
        loader.read().await.expect("SET reply");
    }
    let mut tasks = Vec::new();
    for client in 0..8u64 {
        let addr = env.addr();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::connect(addr).await;
            let mut zipf = pake::lab::zipf::Zipf::new(keys, 0.99, client + 7);
            let draws: Vec<usize> = (0..10_000).map(|_| zipf.next_rank()).collect();
            for chunk in draws.chunks(50) {
                let mut batch = Vec::new();
                for k in chunk {
                    batch.extend(crate::harness::encode(&["GET", &format!("z:{k}")]));
                }
                c.send(&batch).await;
                for _ in chunk {
                    assert_eq!(c.read().await, Some(Val::s("value")));
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("reader");
    }
    let hits = metric(&env.pake, "pake_redis_l1_hits_total");
    let misses = metric(&env.pake, "pake_redis_l1_misses_total");
    let ratio = hits / (hits + misses);
    eprintln!("zipf(0.99) read-only, 1000 keys, 80000 GETs: L1 hit ratio {ratio:.4}");
    assert!(ratio >= 0.95, "hit ratio {ratio} below 95%");
    let gauge = metric(&env.pake, "pake_redis_l1_hit_ratio");
    assert!(
        (gauge - ratio).abs() < 0.01,
        "hit ratio gauge {gauge} vs {ratio}"
    );
    assert!(metric(&env.pake, "pake_redis_l1_entries") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_flushes_and_follows_the_new_primary() {
    let mut env = Env::with(pake::lab::RedisOptions::cluster(3, 1), |_| {}).await;
    let key = "fo:key";
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["SET", key, "before"]).await, Val::s("OK"));
    c.cmd(&["GET", key]).await;
    assert_eq!(c.cmd(&["GET", key]).await, Val::s("before"));
    let port = env.node_port_for(key);
    let victim = env
        .lab
        .nodes
        .iter()
        .position(|n| n.port == port)
        .expect("primary of the key");
    let flushes = metric(&env.pake, "pake_redis_l1_flushes_total");
    env.lab.kill(victim);
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&env.pake, "pake_redis_l1_flushes_total") > flushes
        })
        .await,
        "losing the primary's tracking stream flushes its slots"
    );
    // the replica takes over (cluster-node-timeout 2 s); Pake follows it
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // XX: a write Pake cannot predict goes through the pool (not write-through on the
        // tracking connection), so this waits for the pool itself to follow
        let r = c.cmd(&["SET", key, "after", "XX"]).await;
        if r == Val::s("OK") {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let nodes = env
                .lab
                .nodes
                .iter()
                .find(|n| n.is_running())
                .map(|n| n.query(&["CLUSTER", "NODES"]));
            panic!("no failover: {r:?}; {nodes:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.wait_armed(&env.pake).await;
    assert_eq!(c.cmd(&["GET", key]).await, Val::s("after"));
    c.cmd(&["GET", key]).await;
    // a direct write on the new primary is seen through Pake once its invalidation arrives
    let new_port = env.node_port_for(key);
    assert_ne!(new_port, port, "a replica was promoted");
    let before = metric(&env.pake, "pake_redis_l1_invalidations_total");
    let mut direct = Conn::connect(([127, 0, 0, 1], new_port).into()).await;
    assert_eq!(direct.cmd(&["SET", key, "direct"]).await, Val::s("OK"));
    assert!(
        invalidated(&env.pake, before).await,
        "the new primary is tracked"
    );
    assert_eq!(c.cmd(&["GET", key]).await, Val::s("direct"));
}

/// RELOAD/SIGHUP with a changed `[redis]`: the L1's entry-size limit applies at once (a
/// reply over it is no longer cached), and a setting built at startup is reported as
/// needing a restart instead of being silently ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_l1_limits_and_names_what_needs_a_restart() {
    let env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    let value = "x".repeat(100);
    assert_eq!(c.cmd(&["SET", "rl", &value]).await, Val::s("OK"));
    c.cmd(&["GET", "rl"]).await;
    let hits = metric(&env.pake, "pake_redis_l1_hits_total");
    c.cmd(&["GET", "rl"]).await;
    assert_eq!(
        metric(&env.pake, "pake_redis_l1_hits_total"),
        hits + 1.0,
        "100 bytes are cached under the default limit"
    );

    let mut new = (*env.pake.proxy.config()).clone();
    let rc = new.redis.as_mut().expect("[redis]");
    rc.l1_max_entry_size = pake::config::Bytes(10);
    rc.pool_size += 1;
    let report = env.pake.proxy.apply(new);
    assert!(
        report.iter().any(|l| l.contains("L1 limits now")),
        "{report:?}"
    );
    assert!(
        report
            .iter()
            .any(|l| l == "redis.pool_size changed: takes effect after a restart"),
        "{report:?}"
    );
    assert!(
        !report.iter().any(|l| l.contains("redis.l1_max_entry_size")),
        "applied live, not deferred: {report:?}"
    );

    // a fresh key over the new limit is served but never cached
    assert_eq!(c.cmd(&["SET", "rl2", &value]).await, Val::s("OK"));
    for _ in 0..3 {
        assert_eq!(c.cmd(&["GET", "rl2"]).await, Val::s(&value));
    }
    let hits = metric(&env.pake, "pake_redis_l1_hits_total");
    c.cmd(&["GET", "rl2"]).await;
    assert_eq!(
        metric(&env.pake, "pake_redis_l1_hits_total"),
        hits,
        "over the reloaded l1_max_entry_size: not cached"
    );
}

/// Reads of each written key through Pake right after a write whose keys the command does
/// not name (a script's undeclared keys, a STORE destination, a flush in a script): none may
/// answer the value from before, counted over `rounds`.
async fn unlisted_writes_read_back(env: &Env, rounds: usize, keyless: bool) {
    let mut c = env.conn().await;
    let mut stale = Vec::new();
    // one slot for every key ({u}), so a cluster runs each script on the node holding them
    let set_other = "redis.call('SET', KEYS[1] .. ':other', ARGV[1]) return 1";
    let flush = "redis.call('FLUSHDB') return 1";
    for round in 0..rounds {
        let old = format!("old{round}");
        let new = format!("new{round}");
        for k in ["{u}a:other", "{u}b"] {
            assert_eq!(c.cmd(&["SET", k, &old]).await, Val::s("OK"));
            // twice: the second read is answered from the L1
            c.cmd(&["GET", k]).await;
            c.cmd(&["GET", k]).await;
        }
        assert_eq!(
            c.cmd(&["EVAL", set_other, "1", "{u}a", &new]).await,
            Val::Int(1)
        );
        if c.cmd(&["GET", "{u}a:other"]).await != Val::Str(new.clone()) {
            stale.push(format!("{round}: script"));
        }
        if keyless {
            // no key named at all: every node's stream is heard (a single Redis: one)
            let script = "redis.call('SET', '{u}a:other', ARGV[1]) return 1";
            let v = format!("keyless{round}");
            c.cmd(&["GET", "{u}a:other"]).await;
            c.cmd(&["GET", "{u}a:other"]).await;
            assert_eq!(c.cmd(&["EVAL", script, "0", &v]).await, Val::Int(1));
            if c.cmd(&["GET", "{u}a:other"]).await != Val::Str(v) {
                stale.push(format!("{round}: keyless script"));
            }
        }
        let newer = format!("newer{round}");
        c.cmd(&["GET", "{u}a:other"]).await;
        c.cmd(&["MULTI"]).await;
        c.cmd(&["EVAL", set_other, "1", "{u}a", &newer]).await;
        assert_eq!(c.cmd(&["EXEC"]).await, Val::Arr(vec![Val::Int(1)]));
        if c.cmd(&["GET", "{u}a:other"]).await != Val::Str(newer) {
            stale.push(format!("{round}: script in a transaction"));
        }
        c.cmd(&["DEL", "{u}src"]).await;
        c.cmd(&["RPUSH", "{u}src", &new]).await;
        assert_eq!(
            c.cmd(&["SORT", "{u}src", "ALPHA", "STORE", "{u}b"]).await,
            Val::Int(1)
        );
        // a list now: a GET of it is refused, not answered with the old string
        if !c.cmd(&["GET", "{u}b"]).await.is_err() {
            stale.push(format!("{round}: sort store"));
        }
        c.cmd(&["SET", "{u}c", &old]).await;
        c.cmd(&["GET", "{u}c"]).await;
        c.cmd(&["GET", "{u}c"]).await;
        assert_eq!(c.cmd(&["EVAL", flush, "1", "{u}c"]).await, Val::Int(1));
        if c.cmd(&["GET", "{u}c"]).await != Val::Nil {
            stale.push(format!("{round}: flush in a script"));
        }
    }
    assert!(stale.is_empty(), "stale reads: {stale:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_keys_a_command_does_not_name_are_heard_before_its_reply() {
    let env = Env::start(Mode::Standalone).await;
    unlisted_writes_read_back(&env, 100, true).await;
    let env = Env::start(Mode::Cluster).await;
    unlisted_writes_read_back(&env, 50, false).await;
    // RESP2 tracking has no barrier to queue: the L1 is flushed instead
    let opts = crate::harness::options(Mode::Standalone);
    let env = Env::with(opts, |c| c.tracking_protocol = TrackingProtocol::Resp2).await;
    let flushes = metric(&env.pake, "pake_redis_l1_flushes_total");
    unlisted_writes_read_back(&env, 20, true).await;
    assert!(metric(&env.pake, "pake_redis_l1_flushes_total") >= flushes + 40.0);
}
