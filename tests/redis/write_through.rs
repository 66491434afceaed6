//! Write-through: Pake's own acknowledged writes refill its L1 (SET and its TTL forms,
//! GETSET, SET … GET, MSET, HSET, DEL), TTLs are honoured, and under a race of two Pakes and
//! a direct writer hammering the same hot keys no stale value survives its invalidation.

use crate::harness::{metric, options, redis_config, start_pake, Conn, Env, Mode, Val};
use pake::app::Running;
use std::collections::HashMap;
use std::time::Duration;

fn hits(p: &Running) -> f64 {
    metric(p, "pake_redis_l1_hits_total")
}

/// `GET`-like read through Pake that must be an L1 hit, returning its value.
async fn hit(p: &Running, c: &mut Conn, args: &[&str]) -> Val {
    let before = hits(p);
    let v = c.cmd(args).await;
    assert_eq!(
        hits(p),
        before + 1.0,
        "{args:?} should be an L1 hit ({v:?})"
    );
    v
}

async fn own_writes_fill(mode: Mode) {
    let env = Env::start(mode).await;
    let p = &env.pake;
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["SET", "wt:a", "1"]).await, Val::s("OK"));
    assert_eq!(hit(p, &mut c, &["GET", "wt:a"]).await, Val::s("1"));
    // another session of the same Pake sees it too
    let mut other = env.conn().await;
    assert_eq!(hit(p, &mut other, &["GET", "wt:a"]).await, Val::s("1"));
    assert_eq!(c.cmd(&["GETSET", "wt:a", "2"]).await, Val::s("1"));
    assert_eq!(hit(p, &mut c, &["GET", "wt:a"]).await, Val::s("2"));
    assert_eq!(c.cmd(&["SET", "wt:a", "3", "GET"]).await, Val::s("2"));
    assert_eq!(hit(p, &mut c, &["GET", "wt:a"]).await, Val::s("3"));
    // RESP2 clients get RESP2's null for SET … GET of a missing key
    assert_eq!(c.cmd(&["SET", "wt:new", "x", "GET"]).await, Val::Nil);
    assert_eq!(c.cmd(&["DEL", "wt:a"]).await, Val::Int(1));
    assert_eq!(
        hit(p, &mut c, &["GET", "wt:a"]).await,
        Val::Nil,
        "known absent"
    );
    assert_eq!(
        c.cmd(&["MSET", "{wt}x", "1", "{wt}y", "2"]).await,
        Val::s("OK")
    );
    assert_eq!(hit(p, &mut c, &["GET", "{wt}y"]).await, Val::s("2"));
    assert_eq!(
        c.cmd(&["HSET", "wt:h", "f", "1", "g", "2"]).await,
        Val::Int(2)
    );
    assert_eq!(hit(p, &mut c, &["HGET", "wt:h", "g"]).await, Val::s("2"));
    // a write Pake cannot predict only invalidates
    assert_eq!(c.cmd(&["SET", "wt:a", "9", "NX"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["GET", "wt:a"]).await, Val::s("9"));
    // a write the key's type refuses fills nothing and changes nothing
    assert!(c.cmd(&["SET", "wt:h", "v", "GET"]).await.is_err());
    assert_eq!(c.cmd(&["HGET", "wt:h", "f"]).await, Val::s("1"));
    // a write past the plan limit is forwarded, its keys invalidated: cached keys among its
    // thousand pairs read the new values, and the first read of each is a miss
    assert_eq!(c.cmd(&["GET", "{wt}x"]).await, Val::s("1"));
    assert_eq!(hit(p, &mut c, &["GET", "{wt}x"]).await, Val::s("1"));
    let mut mset = vec!["MSET".to_string()];
    for i in 0..1000 {
        mset.extend([format!("{{wt}}big{i}"), i.to_string()]);
    }
    mset.extend(["{wt}x".into(), "new".into()]);
    let mset: Vec<&str> = mset.iter().map(|a| a.as_str()).collect();
    assert_eq!(c.cmd(&mset).await, Val::s("OK"));
    let before = hits(p);
    assert_eq!(c.cmd(&["GET", "{wt}x"]).await, Val::s("new"));
    assert_eq!(c.cmd(&["GET", "{wt}big999"]).await, Val::s("999"));
    assert_eq!(hits(p), before, "not filled by the big write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_writes_fill_the_l1_standalone() {
    own_writes_fill(Mode::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_writes_fill_the_l1_cluster() {
    own_writes_fill(Mode::Cluster).await;
}

/// With `l1_behind_inflight`, in a pipeline, a read of a key that no earlier write of the
/// batch may change is an L1 hit; a read of a written key, or behind a write whose reach
/// the command table does not fix (a script), goes to Redis behind it and sees the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_reads_skip_the_l1_only_behind_writes_of_their_key() {
    let env = Env::with(options(Mode::Standalone), |c| c.l1_behind_inflight = true).await;
    let p = &env.pake;
    let mut c = env.conn().await;
    for (k, v) in [("pl:other", "o"), ("pl:w", "0"), ("pl:e", "old")] {
        assert_eq!(c.cmd(&["SET", k, v]).await, Val::s("OK"));
        assert_eq!(hit(p, &mut c, &["GET", k]).await, Val::s(v), "{k} cached");
    }
    let batch = |cmds: &[&[&str]]| -> Vec<u8> {
        cmds.iter()
            .flat_map(|args| crate::harness::encode(args))
            .collect()
    };
    let before = hits(p);
    c.send(&batch(&[
        &["SET", "pl:w", "1"],
        &["GET", "pl:other"],
        &["GET", "pl:w"],
        &["HGET", "pl:w", "f"],
    ]))
    .await;
    assert_eq!(c.read().await, Some(Val::s("OK")));
    assert_eq!(c.read().await, Some(Val::s("o")));
    assert_eq!(c.read().await, Some(Val::s("1")), "read-your-writes");
    assert!(
        c.read().await.is_some_and(|v| v.is_err()),
        "HGET of a string"
    );
    assert_eq!(hits(p), before + 1.0, "only pl:other came from the L1");
    let before = hits(p);
    let script = "redis.call('SET', 'pl:e', ARGV[1]) return 1";
    c.send(&batch(&[
        &["EVAL", script, "0", "new"],
        &["GET", "pl:e"],
        &["GET", "pl:other"],
    ]))
    .await;
    assert_eq!(c.read().await, Some(Val::Int(1)));
    assert_eq!(
        c.read().await,
        Some(Val::s("new")),
        "a script may write keys it was not given"
    );
    assert_eq!(c.read().await, Some(Val::s("o")));
    assert_eq!(hits(p), before, "nothing from the L1 behind a script");
}

/// By default a read behind an earlier command of its client still in flight is forwarded
/// with it, not looked up (its reply waits for the earlier one anyway); a pipeline that
/// finds everything in the L1 is still answered from it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_reads_behind_a_round_trip_go_with_it() {
    let env = Env::start(Mode::Standalone).await;
    let p = &env.pake;
    let mut c = env.conn().await;
    for (k, v) in [("pf:a", "1"), ("pf:b", "2")] {
        assert_eq!(c.cmd(&["SET", k, v]).await, Val::s("OK"));
        assert_eq!(hit(p, &mut c, &["GET", k]).await, Val::s(v), "{k} cached");
    }
    let forwarded = || metric(p, "pake_redis_l1_forwarded_total");
    let batch = |keys: &[&str]| -> Vec<u8> {
        keys.iter()
            .flat_map(|k| crate::harness::encode(&["GET", k]))
            .collect()
    };
    let (h, f) = (hits(p), forwarded());
    c.send(&batch(&["pf:a", "pf:b", "pf:a"])).await;
    for v in ["1", "2", "1"] {
        assert_eq!(c.read().await, Some(Val::s(v)));
    }
    assert_eq!((hits(p), forwarded()), (h + 3.0, f), "all from the L1");
    // a miss ahead: what follows it goes to Redis in the same batch
    let (h, f) = (hits(p), forwarded());
    c.send(&batch(&["pf:a", "pf:never", "pf:b", "pf:a"])).await;
    for v in [Val::s("1"), Val::Nil, Val::s("2"), Val::s("1")] {
        assert_eq!(c.read().await, Some(v));
    }
    assert_eq!((hits(p), forwarded()), (h + 1.0, f + 2.0));
}

/// A written TTL is never outlived by the cached value: once Redis has expired the key, the
/// L1 has too (SET … PX, PSETEX, and KEEPTTL, whose TTL Pake asks Redis for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_honours_ttls() {
    let env = Env::start(Mode::Standalone).await;
    let p = &env.pake;
    let mut c = env.conn().await;
    assert_eq!(
        c.cmd(&["SET", "ttl:a", "v", "PX", "3000"]).await,
        Val::s("OK")
    );
    assert_eq!(c.cmd(&["PSETEX", "ttl:b", "3000", "v"]).await, Val::s("OK"));
    assert_eq!(
        c.cmd(&["SET", "ttl:c", "old", "PX", "3000"]).await,
        Val::s("OK")
    );
    assert_eq!(
        c.cmd(&["SET", "ttl:c", "new", "KEEPTTL"]).await,
        Val::s("OK")
    );
    for k in ["ttl:a", "ttl:b"] {
        assert_eq!(hit(p, &mut c, &["GET", k]).await, Val::s("v"));
    }
    assert_eq!(hit(p, &mut c, &["GET", "ttl:c"]).await, Val::s("new"));
    // wait until Redis itself says the keys are gone (no timing assumption on Pake's side)
    let mut direct = env.direct("ttl:a").await;
    let mut gone = false;
    for _ in 0..250 {
        if direct.cmd(&["PTTL", "ttl:c"]).await == Val::Int(-2) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "Redis expired ttl:c");
    for k in ["ttl:a", "ttl:b", "ttl:c"] {
        assert_eq!(
            c.cmd(&["GET", k]).await,
            Val::Nil,
            "{k} outlived its TTL in the L1"
        );
    }
}

/// One value per key that a writer may set: unique, so a stale one is recognisable.
fn value(who: &str, i: usize) -> String {
    format!("{who}-{i}")
}

const HOT: [&str; 6] = ["hot:a", "hot:b", "hot:c", "{hot}d", "{hot}e", "hot:f"];

/// Writes through one connection: SET (plain, PX, GET), GETSET, DEL, MSET, HSET, in turn.
async fn hammer_writes(c: &mut Conn, who: &str, n: usize) {
    for i in 0..n {
        let k = HOT[i % HOT.len()];
        let v = value(who, i);
        let r = match i % 7 {
            0 => c.cmd(&["SET", k, &v]).await,
            1 => c.cmd(&["SET", k, &v, "PX", "30"]).await,
            2 => c.cmd(&["GETSET", k, &v]).await,
            3 => c.cmd(&["DEL", k]).await,
            4 => c.cmd(&["MSET", "{hot}d", &v, "{hot}e", &v]).await,
            5 => c.cmd(&["HSET", "hot:h", "f", &v]).await,
            _ => c.cmd(&["SET", k, &v, "GET"]).await,
        };
        assert!(!r.is_err(), "{who}: {r:?}");
    }
}

async fn hammer_reads(c: &mut Conn, n: usize) {
    for i in 0..n {
        c.cmd(&["GET", HOT[i % HOT.len()]]).await;
        if i % 5 == 0 {
            c.cmd(&["HGET", "hot:h", "f"]).await;
        }
    }
}

/// Wait until `p` has applied every invalidation for writes made before now: a marker on
/// each node is cached through `p`, rewritten directly, and read back until the new value
/// shows, which needs its invalidation, behind every earlier one on that node's stream.
async fn settle(env: &Env, p: &Running, markers: &[String]) {
    let mut c = Conn::connect(p.redis_addr.expect("listener")).await;
    for (n, m) in markers.iter().enumerate() {
        let mut direct = env.direct(m).await;
        assert_eq!(direct.cmd(&["SET", m, "before"]).await, Val::s("OK"));
        let mut cached = false;
        for _ in 0..250 {
            c.cmd(&["GET", m]).await;
            let h = hits(p);
            if c.cmd(&["GET", m]).await == Val::s("before") && hits(p) == h + 1.0 {
                cached = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(cached, "marker {n} never cached");
        assert_eq!(direct.cmd(&["SET", m, "after"]).await, Val::s("OK"));
        let mut seen = false;
        for _ in 0..250 {
            if c.cmd(&["GET", m]).await == Val::s("after") {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen, "marker {n}'s invalidation never arrived");
    }
}

/// A marker key on each primary.
fn markers(env: &Env) -> Vec<String> {
    let mut by_port: HashMap<u16, String> = HashMap::new();
    for i in 0..200 {
        let m = format!("marker:{i}");
        by_port.entry(env.node_port_for(&m)).or_insert(m);
    }
    by_port.into_values().collect()
}

async fn race(mode: Mode) {
    let env = Env::start(mode).await;
    // the second Pake serves on reactor threads of its own, as `pake serve` does, so its
    // tracking streams (and the write-throughs on them) run on those threads; it is
    // drained at the end, which ends them
    let mut rc = redis_config(env.lab.url());
    rc.threads = 2;
    let second = start_pake(rc).await;
    env.wait_armed(&second).await;
    let pakes = [&env.pake, &second];
    let marks = markers(&env);
    let mut stale = Vec::new();
    for round in 0..4 {
        let mut tasks = Vec::new();
        for (i, p) in pakes.iter().enumerate() {
            let addr = p.redis_addr.expect("listener");
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::connect(addr).await;
                hammer_writes(&mut c, &format!("pake{i}r{round}"), 300).await;
            }));
            for _ in 0..2 {
                tasks.push(tokio::spawn(async move {
                    hammer_reads(&mut Conn::connect(addr).await, 600).await;
                }));
            }
        }
        let mut direct: Vec<Conn> = Vec::new();
        for k in HOT {
            direct.push(env.direct(k).await);
        }
        tasks.push(tokio::spawn(async move {
            for i in 0..600 {
                let k = HOT[i % HOT.len()];
                let v = value(&format!("direct{round}"), i);
                let c = &mut direct[i % HOT.len()];
                assert_eq!(c.cmd(&["SET", k, &v]).await, Val::s("OK"));
                if i % 6 == 0 {
                    c.cmd(&["HSET", "hot:h", "f", &v]).await;
                }
            }
        }));
        for t in tasks {
            t.await.expect("hammer task");
        }
        // the PX 30 writes have expired in Redis by then; the L1 must agree
        tokio::time::sleep(Duration::from_millis(50)).await;
        for p in pakes {
            settle(&env, p, &marks).await;
        }
        for (i, p) in pakes.iter().enumerate() {
            let mut c = Conn::connect(p.redis_addr.expect("listener")).await;
            for k in HOT {
                let truth = env.direct(k).await.cmd(&["GET", k]).await;
                let seen = c.cmd(&["GET", k]).await;
                if seen != truth {
                    stale.push(format!("round {round} pake {i} {k}: {seen:?} vs {truth:?}"));
                }
            }
            let truth = env.direct("hot:h").await.cmd(&["HGET", "hot:h", "f"]).await;
            let seen = c.cmd(&["HGET", "hot:h", "f"]).await;
            if seen != truth {
                stale.push(format!(
                    "round {round} pake {i} hot:h: {seen:?} vs {truth:?}"
                ));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale reads after the invalidations arrived: {stale:#?}"
    );
    for p in pakes {
        let (h, m) = (hits(p), metric(p, "pake_redis_l1_misses_total"));
        eprintln!(
            "{mode:?} race: hits {h} misses {m} ({:.1} %)",
            100.0 * h / (h + m)
        );
        assert!(h > 0.0, "the L1 served reads during the race");
    }
    second.drain(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pakes_and_a_direct_writer_race_standalone() {
    race(Mode::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pakes_and_a_direct_writer_race_cluster() {
    race(Mode::Cluster).await;
}
