//! Redis Sentinel: Pake finds the primary through the sentinels (the URL's host is a dead
//! port), follows a `SENTINEL FAILOVER` under load without a restart, never serves an L1
//! entry from the old primary afterwards, re-arms tracking on the new one, survives a dead
//! sentinel, reads from Sentinel-known replicas when asked to, and refuses to start when no
//! sentinel can name the primary. Times are reported, never asserted.

use crate::harness::{dead_port, eventually, metric, redis_config, Conn, Env, Val};
use pake::lab::{RedisLab, RedisOptions};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Load phases: replies are checked strictly before the failover and once Pake has followed
/// it; in between, errors are allowed, and so are lost writes (acknowledged by the old
/// primary after its replica was promoted: Sentinel's replication is asynchronous).
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;

#[derive(Debug, Default)]
struct Tally {
    checked: u64,
    lenient_failures: u64,
    strict_failures: Vec<String>,
}

/// Clients writing and reading back their own keys through Pake until stopped.
struct Load {
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let phase = Arc::new(AtomicU8::new(BEFORE));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|id| tokio::spawn(write_read(addr, id, phase.clone(), stop.clone())))
            .collect();
        Load { phase, stop, tasks }
    }

    fn phase(&self, p: u8) {
        self.phase.store(p, SeqCst);
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, SeqCst);
        let mut all = Tally::default();
        for t in self.tasks {
            let t = t.await.expect("load task");
            all.checked += t.checked;
            all.lenient_failures += t.lenient_failures;
            all.strict_failures.extend(t.strict_failures);
        }
        all
    }
}

/// One round trip; `None` when the connection is gone (the caller reconnects).
async fn ask(c: &mut Conn, args: &[&str]) -> Option<Val> {
    c.send(&crate::harness::encode(args)).await;
    c.read().await
}

async fn write_read(
    addr: SocketAddr,
    id: usize,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut c = Conn::connect(addr).await;
    let mut n = 0u64;
    while !stop.load(SeqCst) {
        n += 1;
        // a few keys per client, rewritten over and over: the L1 sees them again and again
        let key = format!("load:{id}:{}", n % 8);
        let value = n.to_string();
        let began = phase.load(SeqCst);
        let set = ask(&mut c, &["SET", &key, &value]).await;
        let first = ask(&mut c, &["GET", &key]).await;
        let second = ask(&mut c, &["GET", &key]).await;
        let ended = phase.load(SeqCst);
        tally.checked += 1;
        let want = Some(Val::Str(value.clone()));
        let ok = set == Some(Val::s("OK")) && first == want && second == want;
        if !ok {
            if began == ended && began != DURING {
                tally.strict_failures.push(format!(
                    "phase {began}: SET {key} {value} -> {set:?}, GET -> {first:?}, {second:?}"
                ));
            } else {
                tally.lenient_failures += 1;
            }
        }
        if set.is_none() || first.is_none() || second.is_none() {
            c = Conn::connect(addr).await;
        }
    }
    tally
}

/// Force a failover (blocking the calling worker while the lab waits for the sentinels).
fn failover(lab: &RedisLab) -> usize {
    tokio::task::block_in_place(|| lab.failover(Duration::from_secs(30))).expect("failover")
}

/// Wait until Pake has switched and a write through it lands on `port` (the new primary).
async fn followed(env: &Env, c: &mut Conn, port: u16) -> bool {
    let mut direct = Conn::connect(([127, 0, 0, 1], port).into()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0.. {
        if metric(&env.pake, "pake_redis_failovers_total") >= 1.0 {
            let value = format!("probe-{n}");
            if c.cmd(&["SET", "fo:probe", &value]).await == Val::s("OK")
                && direct.cmd(&["GET", "fo:probe"]).await == Val::Str(value)
            {
                return true;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_load_moves_pake_with_no_stale_l1_read() {
    let env = Env::sentinel(|_| {}).await;
    assert_eq!(env.lab.current_primary(), Some(0));
    let mut c = env.conn().await;
    // a key cached in the L1 from the first primary, replicated before the failover
    assert_eq!(c.cmd(&["SET", "fo:cached", "before"]).await, Val::s("OK"));
    let mut old = env.direct("fo:cached").await;
    assert_eq!(old.cmd(&["WAIT", "1", "5000"]).await, Val::Int(1));
    c.cmd(&["GET", "fo:cached"]).await;
    let hits = metric(&env.pake, "pake_redis_l1_hits_total");
    assert_eq!(c.cmd(&["GET", "fo:cached"]).await, Val::s("before"));
    assert!(
        metric(&env.pake, "pake_redis_l1_hits_total") > hits,
        "served from the L1"
    );
    let load = Load::start(env.addr(), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.phase(DURING);
    let started = Instant::now();
    let new = failover(&env.lab);
    let sentinels_done = started.elapsed();
    assert_eq!(new, 1, "the replica was promoted");
    let new_port = env.lab.nodes[new].port;
    // the cached key changes on the new primary, maybe before Pake heard of the switch
    let mut direct = Conn::connect(([127, 0, 0, 1], new_port).into()).await;
    assert_eq!(
        direct.cmd(&["SET", "fo:cached", "after"]).await,
        Val::s("OK")
    );
    assert!(
        followed(&env, &mut c, new_port).await,
        "Pake did not move to the new primary"
    );
    let pake_done = started.elapsed();
    load.phase(AFTER);
    assert_eq!(
        c.cmd(&["GET", "fo:cached"]).await,
        Val::s("after"),
        "a stale L1 entry from the old primary was served"
    );
    // tracking is armed on the new primary: cache the key again, change it directly there,
    // and the invalidation reaches Pake
    env.wait_armed(&env.pake).await;
    c.cmd(&["GET", "fo:cached"]).await;
    let hits = metric(&env.pake, "pake_redis_l1_hits_total");
    assert_eq!(c.cmd(&["GET", "fo:cached"]).await, Val::s("after"));
    assert!(metric(&env.pake, "pake_redis_l1_hits_total") > hits);
    let invalidations = metric(&env.pake, "pake_redis_l1_invalidations_total");
    assert_eq!(
        direct.cmd(&["SET", "fo:cached", "after2"]).await,
        Val::s("OK")
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&env.pake, "pake_redis_l1_invalidations_total") > invalidations
        })
        .await,
        "no invalidation from the new primary"
    );
    assert_eq!(c.cmd(&["GET", "fo:cached"]).await, Val::s("after2"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.finish().await;
    eprintln!(
        "sentinel failover: sentinels switched after {sentinels_done:?}, Pake writing to the new primary after {pake_done:?}; \
         {} write+read rounds, {} failed during the switch",
        tally.checked, tally.lenient_failures
    );
    assert!(
        tally.strict_failures.is_empty(),
        "wrong replies outside the switch: {:?}",
        tally.strict_failures
    );
    assert!(tally.checked > 20, "the load ran ({})", tally.checked);
    assert_eq!(metric(&env.pake, "pake_redis_failovers_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_failover_with_a_sentinel_down() {
    let mut env = Env::sentinel(|_| {}).await;
    // the first sentinel (the one asked first, and one Pake subscribes to) dies
    env.lab.kill_sentinel(0);
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["SET", "one-down", "1"]).await, Val::s("OK"));
    assert_eq!(
        env.direct("one-down")
            .await
            .cmd(&["WAIT", "1", "5000"])
            .await,
        Val::Int(1)
    );
    // a subscriber and a WATCH, both on dedicated links to the old primary
    let mut sub = env.conn().await;
    assert!(matches!(sub.cmd(&["SUBSCRIBE", "news"]).await, Val::Arr(_)));
    let mut watcher = env.conn().await;
    assert_eq!(watcher.cmd(&["WATCH", "one-down"]).await, Val::s("OK"));
    let new = failover(&env.lab);
    assert!(
        followed(&env, &mut c, env.lab.nodes[new].port).await,
        "Pake did not follow with two sentinels left"
    );
    assert_eq!(c.cmd(&["GET", "one-down"]).await, Val::s("1"));
    // the transaction watched keys on the old primary: aborted, as a touched WATCH is
    assert_eq!(watcher.cmd(&["MULTI"]).await, Val::s("OK"));
    assert_eq!(
        watcher.cmd(&["SET", "one-down", "2"]).await,
        Val::s("QUEUED")
    );
    assert_eq!(watcher.cmd(&["EXEC"]).await, Val::Nil);
    assert_eq!(c.cmd(&["GET", "one-down"]).await, Val::s("1"));
    // the subscriber is hung up on, to resubscribe on the new primary
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(Duration::from_secs(5), sub.stream.read_to_end(&mut rest)).await;
    assert!(matches!(eof, Ok(Ok(_))), "subscriber still connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_when_the_primary_crashes() {
    let mut env = Env::sentinel(|_| {}).await;
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["SET", "crash", "1"]).await, Val::s("OK"));
    assert_eq!(
        env.direct("crash").await.cmd(&["WAIT", "1", "5000"]).await,
        Val::Int(1)
    );
    c.cmd(&["GET", "crash"]).await;
    let started = Instant::now();
    env.lab.kill(0);
    // the sentinels notice (down-after 1 s), agree, and promote the replica
    let new =
        tokio::task::block_in_place(|| env.lab.wait_switched(Some(0), Duration::from_secs(30)))
            .expect("the sentinels promoted the replica");
    assert!(
        followed(&env, &mut c, env.lab.nodes[new].port).await,
        "Pake did not follow the promotion"
    );
    eprintln!(
        "primary crash: Pake writing to the promoted replica after {:?}",
        started.elapsed()
    );
    assert_eq!(c.cmd(&["GET", "crash"]).await, Val::s("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_a_sentinel_known_replica() {
    let env = Env::sentinel(|c| c.read_from_replicas = true).await;
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["RPUSH", "rr:list", "a", "b"]).await, Val::Int(2));
    // NX: not written through, so the first GET below is a miss that fills from the primary
    assert_eq!(c.cmd(&["SET", "rr:key", "v", "NX"]).await, Val::s("OK"));
    let list = Val::Arr(vec![Val::s("a"), Val::s("b")]);
    // a key read that the L1 does not cache: from the replica (once replicated)
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.cmd(&["LRANGE", "rr:list", "0", "-1"]).await != list {
        assert!(Instant::now() < deadline, "the replica never had the list");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // a cacheable read fills the L1 from the primary
    assert_eq!(c.cmd(&["GET", "rr:key"]).await, Val::s("v"));
    let calls = |node: usize, cmd: &str| {
        env.lab.nodes[node]
            .query(&["INFO", "commandstats"])
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
    };
    assert!(calls(1, "lrange"), "LRANGE reached the replica");
    assert!(!calls(0, "lrange"), "LRANGE stayed off the primary");
    assert!(
        calls(0, "get") && !calls(1, "get"),
        "GET went to the primary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_for_sentinels_and_data_nodes() {
    let opts = RedisOptions {
        password: Some("datapw".into()),
        sentinel_password: Some("sentinelpw".into()),
        ..RedisOptions::sentinel()
    };
    let env = Env::sentinel_with(opts, |c| {
        c.sentinel_password = Some("sentinelpw".into());
    })
    .await;
    let mut c = env.conn().await;
    // the URL has the data nodes' password: a client logs in, as at Redis
    let r = c.cmd(&["SET", "pw", "1"]).await;
    assert!(r.err_text().starts_with("NOAUTH"), "{r:?}");
    assert_eq!(c.cmd(&["AUTH", "datapw"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["SET", "pw", "1"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["GET", "pw"]).await, Val::s("1"));
    // without the sentinels' password Pake cannot find the primary, and says so
    let mut rc = redis_config("redis://:datapw@127.0.0.1:6379".into());
    rc.sentinels = env.lab.sentinel_addrs();
    rc.sentinel_master = Some(env.lab.master_name().into());
    let e = start(rc).await;
    assert!(e.contains("NOAUTH") || e.contains("Authentication"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_fails_clearly_when_no_sentinel_can_name_the_primary() {
    // nobody listening
    let mut rc = redis_config("redis://127.0.0.1:6379".into());
    rc.sentinels = vec![
        format!("127.0.0.1:{}", dead_port()),
        format!("127.0.0.1:{}", dead_port()),
    ];
    rc.sentinel_master = Some("pake-lab".into());
    let e = start(rc).await;
    assert!(
        e.contains("no sentinel could name the primary of master 'pake-lab'")
            && e.contains("cannot connect"),
        "{e}"
    );
    // sentinels that do not monitor that name
    let lab = crate::harness::lab(RedisOptions::sentinel()).await;
    let mut rc = redis_config("redis://127.0.0.1:6379".into());
    rc.sentinels = lab.sentinel_addrs();
    rc.sentinel_master = Some("nosuch".into());
    let e = start(rc).await;
    assert!(
        e.contains("master 'nosuch'") && e.contains("No such master with that name"),
        "{e}"
    );
    // the same through the CLI flags: a non-zero exit naming the problem
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pake"))
        .args([
            "serve",
            "--pg-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--redis-listen", "127.0.0.1:0", "--redis-master", "nosuch"])
        .args(["--redis-sentinel", &lab.sentinel_addrs().join(",")])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("pake exited")
        .expect("pake ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("master 'nosuch'"), "{stderr}");
    // and a half-given pair of flags is named
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pake"))
        .args(["serve", "--redis-sentinel", "127.0.0.1:1"])
        .output()
        .await
        .expect("pake ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--redis-master"),
        "{stderr}"
    );
}

/// Start Pake with `rc`, expecting failure; the error chain as text.
async fn start(rc: pake::redis::config::RedisConfig) -> String {
    match crate::harness::try_start(rc).await {
        Ok(_) => panic!("Pake started without a primary"),
        Err(e) => e,
    }
}
