//! Cluster sessions on Pake's own multiplexed links (`src/redis/backend/slots.rs`,
//! `src/redis/session/shared.rs`): a command goes on the thread's link to the primary that
//! serves its slot. What must hold: a client's replies in order across all primaries, a
//! slot moved mid-run never shows the client a redirection (the command goes again through
//! fred) and the next commands reach the new owner on its link, and a dead primary costs
//! only its own slots, with a clear `-ERR`.

use crate::harness::{encode, metric, Conn, Env, Mode, Val};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn node_conn(port: u16) -> Conn {
    Conn::connect(([127, 0, 0, 1], port).into()).await
}

/// Many clients pipelining over keys of all three primaries (single-slot commands and a
/// cross-slot MGET split by slot): every reply in order, reads seeing the writes before
/// them; and the commands went over the links, not fred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_pipelines_over_all_primaries_keep_their_order_on_links() {
    let env = Env::start(Mode::Cluster).await;
    let before = metric(&env.pake, "pake_redis_link_commands_total");
    let mut tasks = Vec::new();
    for c in 0..8 {
        let keys = env.key_per_node(&format!("cl:order:{c}"));
        let mut conn = env.conn().await;
        tasks.push(tokio::spawn(async move {
            let mut batch = Vec::new();
            for _ in 0..200 {
                for k in &keys {
                    batch.extend(encode(&["INCR", k]));
                    batch.extend(encode(&["GET", k]));
                }
                batch.extend(encode(&["MGET", &keys[0], &keys[1], &keys[2]]));
            }
            conn.send(&batch).await;
            for i in 1..=200i64 {
                for k in &keys {
                    assert_eq!(conn.read().await, Some(Val::Int(i)), "client {c} INCR {k}");
                    let v = conn.read().await;
                    assert_eq!(v, Some(Val::s(&i.to_string())), "client {c} GET {k}");
                }
                let all = Val::Arr(vec![Val::s(&i.to_string()); 3]);
                assert_eq!(conn.read().await, Some(all), "client {c} MGET {i}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let sent = metric(&env.pake, "pake_redis_link_commands_total") - before;
    // 8 clients × 200 rounds × (3 INCR + 3 GET + 3 MGET parts); GETs may be L1 hits
    assert!(sent >= 8.0 * 200.0 * 6.0, "only {sent} commands on links");
    assert_eq!(metric(&env.pake, "pake_redis_link_redirects_total"), 0.0);
    // a broadcast goes on every primary's link, behind the writes pipelined before it
    let mut conn = env.conn().await;
    let keys = env.key_per_node("cl:bc");
    let mut batch = Vec::new();
    for k in &keys {
        batch.extend(encode(&["SET", k, "1"]));
    }
    batch.extend(encode(&["KEYS", "cl:bc:*"]));
    let before = metric(&env.pake, "pake_redis_link_commands_total");
    conn.send(&batch).await;
    for _ in &keys {
        assert_eq!(conn.read().await, Some(Val::s("OK")));
    }
    let Some(Val::Arr(mut found)) = conn.read().await else {
        panic!("KEYS reply")
    };
    found.sort_by_key(|v| format!("{v:?}"));
    let mut want: Vec<Val> = keys.iter().map(|k| Val::s(k)).collect();
    want.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(found, want);
    assert!(metric(&env.pake, "pake_redis_link_commands_total") >= before + 3.0);
    // and a SCAN, on the node's link, behind the writes pipelined before it
    let keys = env.key_per_node("cl:sc");
    let mut batch = Vec::new();
    for k in &keys {
        batch.extend(encode(&["SET", k, "1"]));
    }
    batch.extend(encode(&[
        "SCAN", "0", "MATCH", "cl:sc:*", "COUNT", "100000",
    ]));
    conn.send(&batch).await;
    for _ in &keys {
        assert_eq!(conn.read().await, Some(Val::s("OK")));
    }
    let mut seen = Vec::new();
    let mut reply = conn.read().await;
    loop {
        let Some(Val::Arr(parts)) = reply else {
            panic!("SCAN reply {reply:?}")
        };
        let [Val::Str(cursor), Val::Arr(found)] = &parts[..] else {
            panic!("SCAN reply {parts:?}")
        };
        seen.extend(found.iter().cloned());
        if cursor == "0" {
            break;
        }
        let next = ["SCAN", cursor, "MATCH", "cl:sc:*", "COUNT", "100000"];
        reply = Some(conn.cmd(&next).await);
    }
    seen.sort_by_key(|v| format!("{v:?}"));
    let mut want: Vec<Val> = keys.iter().map(|k| Val::s(k)).collect();
    want.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(seen, want);
}

/// The client's view during a migration: pipelines of SET/GET/INCR on keys of one slot.
async fn write_and_check(mut conn: Conn, stop: Arc<AtomicBool>, rounds_done: Arc<AtomicBool>) {
    let mut round = 0u64;
    let mut n = 0i64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let mut batch = Vec::new();
        for j in 0..10 {
            let key = format!("{{mig}}:k{j}");
            batch.extend(encode(&["SET", &key, &format!("v{round}")]));
            batch.extend(encode(&["GET", &key]));
            batch.extend(encode(&["INCR", "{mig}:n"]));
            batch.extend(encode(&["MGET", &key, "cl:mig:other"]));
        }
        conn.send(&batch).await;
        for j in 0..10 {
            let what = format!("round {round} key {j}");
            assert_eq!(conn.read().await, Some(Val::s("OK")), "SET {what}");
            let v = conn.read().await;
            assert_eq!(v, Some(Val::s(&format!("v{round}"))), "GET {what}");
            n += 1;
            assert_eq!(conn.read().await, Some(Val::Int(n)), "INCR {what}");
            let want = Val::Arr(vec![Val::s(&format!("v{round}")), Val::Nil]);
            assert_eq!(conn.read().await, Some(want), "MGET {what}");
        }
    }
    rounds_done.store(true, Ordering::Relaxed);
}

/// Move the slot of `{mig}` from its primary to another one, key by key, the way
/// `redis-cli --cluster reshard` does (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE).
async fn migrate_slot(env: &Env) -> (u16, u16) {
    let slot = pake::redis::commands::slot(b"{mig}").to_string();
    let src_port = env.node_port_for("{mig}");
    let ports: Vec<u16> = env.lab.nodes.iter().map(|n| n.port).collect();
    assert_eq!(ports.len(), 3);
    let dst_port = *ports
        .iter()
        .find(|&&p| p != src_port)
        .expect("another node");
    let mut src = node_conn(src_port).await;
    let mut dst = node_conn(dst_port).await;
    let id = |v: Val| match v {
        Val::Str(s) => s,
        other => panic!("CLUSTER MYID: {other:?}"),
    };
    let src_id = id(src.cmd(&["CLUSTER", "MYID"]).await);
    let dst_id = id(dst.cmd(&["CLUSTER", "MYID"]).await);
    let ok = Val::s("OK");
    let importing = ["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id];
    assert_eq!(dst.cmd(&importing).await, ok);
    let migrating = ["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id];
    assert_eq!(src.cmd(&migrating).await, ok);
    loop {
        let keys = match src.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "1"]).await {
            Val::Arr(keys) if !keys.is_empty() => keys,
            _ => break,
        };
        for k in keys {
            let Val::Str(k) = k else { panic!("{k:?}") };
            let port = dst_port.to_string();
            let moved = src
                .cmd(&["MIGRATE", "127.0.0.1", &port, &k, "0", "5000"])
                .await;
            assert!(
                matches!(&moved, Val::Str(s) if s == "OK" || s == "NOKEY"),
                "{moved:?}"
            );
            // a window in which some keys of the slot are here and some there
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // the new owner first: the old one then redirects to a node that takes the slot
    let mut order = vec![dst_port, src_port];
    order.extend(ports.iter().filter(|&&p| p != dst_port && p != src_port));
    for port in order {
        let mut c = node_conn(port).await;
        let done = ["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id];
        assert_eq!(c.cmd(&done).await, ok, "SETSLOT NODE on {port}");
    }
    (src_port, dst_port)
}

/// A slot migrated while a client pipelines on it: the client sees correct values and
/// never MOVED/ASK (the links met them and fred answered instead); once the map has
/// followed, the slot's commands go straight to the new owner's link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_mid_run_never_shows_the_client_a_redirection() {
    let env = Env::start(Mode::Cluster).await;
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_and_check(
        env.conn().await,
        stop.clone(),
        finished.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (src, dst) = migrate_slot(&env).await;
    assert_eq!(env.node_port_for("{mig}"), dst, "the slot moved from {src}");
    // let the writer run on the new owner for a while (the map follows within a resync)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("the client saw only correct replies");
    assert!(finished.load(Ordering::Relaxed));
    let redirects = metric(&env.pake, "pake_redis_link_redirects_total");
    assert!(redirects > 0.0, "the migration redirected nothing");
    // after the move: no more redirections, the commands are on the links
    let links = metric(&env.pake, "pake_redis_link_commands_total");
    let mut conn = env.conn().await;
    for i in 0..50 {
        let v = format!("after{i}");
        assert_eq!(conn.cmd(&["SET", "{mig}:k0", &v]).await, Val::s("OK"));
        let mut batch = encode(&["APPEND", "{mig}:k0", "x"]);
        batch.extend(encode(&["GET", "{mig}:k0"]));
        conn.send(&batch).await;
        let len = i64::try_from(v.len() + 1).expect("small");
        assert_eq!(conn.read().await, Some(Val::Int(len)));
        assert_eq!(conn.read().await, Some(Val::s(&format!("{v}x"))));
    }
    assert_eq!(
        metric(&env.pake, "pake_redis_link_redirects_total"),
        redirects,
        "commands still redirected after the map followed the move"
    );
    assert!(metric(&env.pake, "pake_redis_link_commands_total") >= links + 50.0);
    let mut direct = node_conn(dst).await;
    assert_eq!(
        direct.cmd(&["GET", "{mig}:k0"]).await,
        Val::s("after49x"),
        "the value is on the new owner"
    );
}

/// A primary killed (the cluster keeps serving the other slots: full coverage is not
/// required): commands for its slots get a clear `-ERR` at once, never a redirection or a
/// hang, and the other primaries' keys keep working. The breaker is off so the dead node's
/// failures do not turn into refusals for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_its_slots_clearly_and_the_others_serve_on() {
    let mut opts = crate::harness::options(Mode::Cluster);
    opts.conf.push("cluster-require-full-coverage no".into());
    let mut env = Env::with(opts, |rc| rc.circuit_breaker_failures = 0).await;
    let keys = env.key_per_node("cl:kill");
    let mut conn = env.conn().await;
    for k in &keys {
        assert_eq!(conn.cmd(&["SET", k, k]).await, Val::s("OK"));
    }
    // not the seed: the URL's node stays up
    let dead = 2;
    env.lab.kill(dead);
    let mut errors = 0;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for (i, k) in keys.iter().enumerate() {
            let started = Instant::now();
            let mut batch = encode(&["APPEND", k, ""]);
            batch.extend(encode(&["GET", k]));
            conn.send(&batch).await;
            let appended = conn.read_within(Duration::from_secs(8)).await;
            let got = conn.read_within(Duration::from_secs(8)).await;
            if i == dead {
                for v in [appended, got] {
                    let v = v.expect("an answer for the dead node's slot");
                    match &v {
                        Val::Err(e) => {
                            assert!(e.starts_with("ERR "), "{e}");
                            errors += 1;
                        }
                        // a read the L1 still held just before the node died
                        Val::Str(s) => assert_eq!(s, k),
                        other => panic!("{other:?}"),
                    }
                }
                assert!(
                    started.elapsed() < Duration::from_secs(6),
                    "waited {:?}",
                    started.elapsed()
                );
            } else {
                let len = i64::try_from(k.len()).expect("small");
                assert_eq!(appended, Some(Val::Int(len)), "{k} on a live node");
                assert_eq!(got, Some(Val::s(k)), "{k} on a live node");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(errors > 0, "the dead node's slots never failed");
}
