//! `CLIENT TRACKING` through Pake: the commands answer as Redis's do (run side by side on a
//! connection straight to Redis and one through Pake), invalidations reach a tracking client
//! from every kind of writer (Redis directly, Pake's write-through, Pake's shared links, a
//! FLUSHALL), and a client-side cache kept the way redis-py keeps one never ends up stale.

use crate::harness::{Conn, Env, Mode, Val};
use std::collections::HashMap;
use std::time::Duration;

fn push_of(keys: &[&str]) -> Val {
    Val::Push(vec![
        Val::s("invalidate"),
        Val::Arr(keys.iter().map(|k| Val::s(k)).collect()),
    ])
}

/// Run the steps on `c`: each step's command (sent by `c`, or by `other` for a write of
/// another client) and how many frames `c` reads for it (the reply to its own command, the
/// invalidations it causes); a PING closes the run so that no stray frame goes unseen.
async fn transcript(c: &mut Conn, other: &mut Conn) -> Vec<Val> {
    let mut out = Vec::new();
    assert!(!c.cmd(&["HELLO", "3"]).await.is_err());
    let steps: &[(bool, &[&str], usize)] = &[
        (false, &["CLIENT", "GETREDIR"], 1),
        (false, &["CLIENT", "TRACKINGINFO"], 1),
        (false, &["CLIENT", "CACHING", "yes"], 1),
        (false, &["CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"], 1),
        (false, &["CLIENT", "TRACKING", "ON", "PREFIX", "a"], 1),
        (false, &["CLIENT", "TRACKING", "ON", "BCAST", "OPTIN"], 1),
        (false, &["CLIENT", "TRACKING", "ON", "REDIRECT", "x"], 1),
        (
            false,
            &["CLIENT", "TRACKING", "ON", "REDIRECT", "987654321"],
            1,
        ),
        (false, &["CLIENT", "TRACKING", "maybe"], 1),
        (false, &["CLIENT", "TRACKING"], 1),
        (false, &["CLIENT", "TRACKING", "ON", "OPTIN"], 1),
        (false, &["CLIENT", "GETREDIR"], 1),
        (false, &["CLIENT", "CACHING", "no"], 1),
        (false, &["CLIENT", "CACHING", "maybe"], 1),
        (false, &["CLIENT", "CACHING", "yes"], 1),
        (false, &["CLIENT", "TRACKINGINFO"], 1),
        (false, &["GET", "ct{1}:a"], 1),
        (false, &["GET", "ct{1}:b"], 1),
        (false, &["CLIENT", "TRACKINGINFO"], 1),
        (false, &["CLIENT", "TRACKING", "ON", "OPTOUT"], 1),
        (false, &["CLIENT", "TRACKING", "ON", "BCAST"], 1),
        // b was read without CACHING yes: not tracked; a was
        (true, &["SET", "ct{1}:b", "1"], 0),
        (true, &["SET", "ct{1}:a", "1"], 1),
        // its own write, heard behind the reply
        (false, &["GET", "ct{1}:a"], 1),
        (false, &["CLIENT", "CACHING", "yes"], 1),
        (false, &["GET", "ct{1}:a"], 1),
        (false, &["SET", "ct{1}:a", "2"], 2),
        (false, &["CLIENT", "TRACKING", "OFF"], 1),
        (false, &["CLIENT", "GETREDIR"], 1),
        (
            false,
            &[
                "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ct{1}:x", "NOLOOP",
            ],
            1,
        ),
        (false, &["CLIENT", "TRACKINGINFO"], 1),
        (
            false,
            &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ct{1}:xy"],
            1,
        ),
        (
            false,
            &[
                "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ct{1}:y", "PREFIX", "ct{1}:yz",
            ],
            1,
        ),
        (false, &["CLIENT", "TRACKING", "ON", "OPTIN"], 1),
        // NOLOOP: its own write is not announced to it; another client's is
        (false, &["SET", "ct{1}:x1", "1"], 1),
        (true, &["SET", "ct{1}:x1", "2"], 1),
        (
            false,
            &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ct{1}:z"],
            1,
        ),
        (false, &["CLIENT", "TRACKINGINFO"], 1),
        (false, &["SET", "ct{1}:z1", "1"], 2),
        (true, &["SET", "ct{1}:q", "1"], 0),
        (false, &["CLIENT", "TRACKING", "OFF"], 1),
        (false, &["CLIENT", "TRACKINGINFO"], 1),
    ];
    for (by_other, cmd, frames) in steps {
        if *by_other {
            assert_eq!(other.cmd(cmd).await, Val::s("OK"), "{cmd:?}");
        } else {
            c.send(&crate::harness::encode(cmd)).await;
        }
        for _ in 0..*frames {
            let got = c
                .read()
                .await
                .unwrap_or_else(|| panic!("no reply to {cmd:?}"));
            out.push(got);
        }
    }
    // a push of another client's write may come at any time: a PING answered with nothing
    // before it says nothing more was owed
    assert_eq!(c.cmd(&["PING"]).await, Val::s("PONG"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_commands_answer_as_redis_does() {
    let env = Env::start(Mode::Standalone).await;
    let mut direct = env.direct("ct{1}:a").await;
    let mut other = env.direct("ct{1}:a").await;
    let want = transcript(&mut direct, &mut other).await;
    assert!(want.contains(&push_of(&["ct{1}:a"])), "{want:#?}");
    assert_eq!(direct.cmd(&["FLUSHALL"]).await, Val::s("OK"));
    let mut via = env.conn().await;
    let mut other = env.conn().await;
    let got = transcript(&mut via, &mut other).await;
    let (want, got): (Vec<Val>, Vec<Val>) = (
        want.into_iter().map(sorted).collect(),
        got.into_iter().map(sorted).collect(),
    );
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w, g, "frame {i}: Redis {w:?}, Pake {g:?}");
    }
    assert_eq!(want.len(), got.len());
}

/// A map's pairs in one order, and a `flags` set's members (the harness decodes both
/// through hash tables).
fn sorted(v: Val) -> Val {
    match v {
        Val::Map(mut pairs) => {
            pairs.sort_by_key(|(k, _)| format!("{k:?}"));
            let set = |k: &Val, v: Val| match (k, v) {
                // a RESP3 set, in no order
                (Val::Str(k), Val::Arr(mut items)) if k == "flags" => {
                    items.sort_by_key(|i| format!("{i:?}"));
                    Val::Arr(items)
                }
                (_, v) => sorted(v),
            };
            Val::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| {
                        let v = set(&k, v);
                        (k, v)
                    })
                    .collect(),
            )
        }
        Val::Arr(items) => Val::Arr(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// A tracking client through Pake hears of a write by Redis's own clients, by another Pake
/// client (write-through and the shared links), and of a FLUSHALL; a key is announced once
/// until it is read again.
async fn invalidations_from_every_writer(mode: Mode) {
    let env = Env::start(mode).await;
    let mut reader = env.conn().await;
    assert!(!reader.cmd(&["HELLO", "3"]).await.is_err());
    assert_eq!(
        reader.cmd(&["CLIENT", "TRACKING", "ON"]).await,
        Val::s("OK")
    );
    let keys = ["inv:a", "inv:b", "inv:c", "inv:d"];
    for k in keys {
        assert_eq!(reader.cmd(&["GET", k]).await, Val::Nil);
    }
    let mut pake_writer = env.conn().await;
    let mut direct = env.direct("inv:a").await;
    assert_eq!(direct.cmd(&["SET", "inv:a", "1"]).await, Val::s("OK"));
    assert_eq!(
        reader.read().await,
        Some(push_of(&["inv:a"])),
        "Redis's own client"
    );
    assert_eq!(pake_writer.cmd(&["SET", "inv:b", "1"]).await, Val::s("OK"));
    assert_eq!(
        reader.read().await,
        Some(push_of(&["inv:b"])),
        "write-through"
    );
    assert_eq!(pake_writer.cmd(&["LPUSH", "inv:c", "1"]).await, Val::Int(1));
    assert_eq!(
        reader.read().await,
        Some(push_of(&["inv:c"])),
        "shared link"
    );
    // announced once: inv:a is no longer tracked until read again
    let mut direct_a = env.direct("inv:a").await;
    assert_eq!(direct_a.cmd(&["SET", "inv:a", "2"]).await, Val::s("OK"));
    assert_eq!(reader.cmd(&["GET", "inv:a"]).await, Val::s("2"));
    assert_eq!(direct_a.cmd(&["SET", "inv:a", "3"]).await, Val::s("OK"));
    assert_eq!(reader.read().await, Some(push_of(&["inv:a"])));
    assert_eq!(
        reader.cmd(&["PING"]).await,
        Val::s("PONG"),
        "nothing else owed"
    );
    // a FLUSHALL: flush everything (a NULL invalidation), once per node that heard it; the
    // flushes of nodes heard before the client's inbox was drained make one (a second
    // flush in a row says nothing more)
    let nodes = if mode == Mode::Cluster { 3 } else { 1 };
    assert_eq!(pake_writer.cmd(&["FLUSHALL"]).await, Val::s("OK"));
    let flush = Val::Push(vec![Val::s("invalidate"), Val::Nil]);
    assert_eq!(reader.read().await, Some(flush.clone()));
    reader.send(&crate::harness::encode(&["PING"])).await;
    let mut flushes = 1;
    loop {
        match reader.read().await {
            Some(v) if v == flush => flushes += 1,
            Some(v) => {
                assert_eq!(v, Val::s("PONG"));
                break;
            }
            None => panic!("no PONG"),
        }
    }
    // a node heard late
    while let Some(v) = reader.read_within(Duration::from_millis(300)).await {
        assert_eq!(v, flush);
        flushes += 1;
    }
    assert!(flushes <= nodes, "{flushes} flushes from {nodes} node(s)");
    // a client that turned tracking off hears nothing more
    assert_eq!(reader.cmd(&["GET", "inv:d"]).await, Val::Nil);
    assert_eq!(
        reader.cmd(&["CLIENT", "TRACKING", "OFF"]).await,
        Val::s("OK")
    );
    assert_eq!(pake_writer.cmd(&["SET", "inv:d", "1"]).await, Val::s("OK"));
    assert_eq!(reader.cmd(&["PING"]).await, Val::s("PONG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_from_every_writer_standalone() {
    invalidations_from_every_writer(Mode::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_from_every_writer_cluster() {
    invalidations_from_every_writer(Mode::Cluster).await;
}

/// A client-side cache as redis-py keeps one (cache a GET's reply, drop a key on its
/// invalidation, in the order the frames arrive), reading through Pake with pipelines while
/// Redis's own clients and other Pake clients write the same keys: once the writers stop and
/// their last invalidations are in, every cached value is Redis's value.
async fn client_cache_never_stale(mode: Mode) {
    let env = Env::start(mode).await;
    let keys: Vec<String> = (0..20).map(|i| format!("csc:{i}")).collect();
    let writers = {
        let keys = keys.clone();
        let addr = env.addr();
        let directs: Vec<(String, u16)> = keys
            .iter()
            .map(|k| (k.clone(), env.node_port_for(k)))
            .collect();
        tokio::spawn(async move {
            let mut via = Conn::connect(addr).await;
            let mut direct: HashMap<u16, Conn> = HashMap::new();
            for (port, _) in directs.iter().map(|(k, p)| (*p, k)) {
                if let std::collections::hash_map::Entry::Vacant(e) = direct.entry(port) {
                    e.insert(Conn::connect(([127, 0, 0, 1], port).into()).await);
                }
            }
            for n in 0..1500u32 {
                let (key, port) = &directs[(n as usize * 7) % directs.len()];
                let v = n.to_string();
                let reply = match n % 3 {
                    0 => via.cmd(&["SET", key, &v]).await,
                    1 => via.cmd(&["MSET", key, &v]).await,
                    _ => match direct.get_mut(port) {
                        Some(c) => c.cmd(&["SET", key, &v]).await,
                        None => Val::s("OK"),
                    },
                };
                assert_eq!(reply, Val::s("OK"));
            }
        })
    };
    let mut reader = env.conn().await;
    assert!(!reader.cmd(&["HELLO", "3"]).await.is_err());
    assert_eq!(
        reader.cmd(&["CLIENT", "TRACKING", "ON"]).await,
        Val::s("OK")
    );
    let mut cache: HashMap<String, Val> = HashMap::new();
    let mut round = 0usize;
    // read in pipelines of 8 until the writers are done
    while !writers.is_finished() {
        let batch: Vec<&String> = (0..8)
            .map(|i| &keys[(round * 3 + i * 5) % keys.len()])
            .collect();
        round += 1;
        let mut bytes = Vec::new();
        let mut asked = Vec::new();
        for k in batch {
            if !cache.contains_key(k) {
                bytes.extend(crate::harness::encode(&["GET", k]));
                asked.push(k.clone());
            }
        }
        bytes.extend(crate::harness::encode(&["PING"]));
        reader.send(&bytes).await;
        let mut asked = asked.into_iter();
        loop {
            match reader.read().await.expect("a frame") {
                Val::Push(items) => forget(&mut cache, &items),
                Val::Str(s) if s == "PONG" => break,
                v => {
                    let k = asked.next().expect("a reply for each GET");
                    cache.insert(k, v);
                }
            }
        }
    }
    writers.await.expect("writers");
    // the last invalidations: a fence key per node, written straight at Redis after the rest
    let mut fences = Vec::new();
    for i in 0..200 {
        let f = format!("fence:{i}");
        let port = env.node_port_for(&f);
        if !fences.iter().any(|(_, p)| *p == port) {
            fences.push((f, port));
        }
    }
    for (f, _) in &fences {
        reader.send(&crate::harness::encode(&["GET", f])).await;
        while let Val::Push(items) = reader.read().await.expect("a frame") {
            forget(&mut cache, &items);
        }
    }
    for (f, port) in &fences {
        let mut d = Conn::connect(([127, 0, 0, 1], *port).into()).await;
        assert_eq!(d.cmd(&["SET", f, "x"]).await, Val::s("OK"));
    }
    let mut waiting: Vec<String> = fences.iter().map(|(f, _)| f.clone()).collect();
    while !waiting.is_empty() {
        match reader.read_within(Duration::from_secs(10)).await {
            Some(Val::Push(items)) => {
                forget(&mut cache, &items);
                if let Some(Val::Arr(ks)) = items.get(1) {
                    waiting.retain(|f| !ks.contains(&Val::Str(f.clone())));
                }
            }
            other => panic!("waiting for the fences' invalidations {waiting:?}, got {other:?}"),
        }
    }
    let mut stale = Vec::new();
    for (k, v) in &cache {
        let mut d = env.direct(k).await;
        let now = d.cmd(&["GET", k]).await;
        if &now != v {
            stale.push(format!("{k}: cached {v:?}, Redis {now:?}"));
        }
    }
    assert!(round > 10, "the reader ran {round} rounds");
    assert!(stale.is_empty(), "stale cache entries: {stale:?}");
}

fn forget(cache: &mut HashMap<String, Val>, items: &[Val]) {
    match items.get(1) {
        Some(Val::Arr(keys)) => {
            for k in keys {
                if let Val::Str(k) = k {
                    cache.remove(k);
                }
            }
        }
        _ => cache.clear(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cache_never_stale_standalone() {
    client_cache_never_stale(Mode::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cache_never_stale_cluster() {
    client_cache_never_stale(Mode::Cluster).await;
}

/// Without the L1 Pake hears no writes: tracking is refused with the reason, not accepted
/// and left silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_without_the_l1_is_refused_with_the_reason() {
    let lab = crate::harness::lab(crate::harness::options(Mode::Standalone)).await;
    let mut rc = crate::harness::redis_config(lab.url());
    rc.l1 = false;
    let pake = crate::harness::start_pake(rc).await;
    let mut c = Conn::connect(pake.redis_addr.expect("redis listener")).await;
    let e = c.cmd(&["CLIENT", "TRACKING", "ON"]).await;
    assert!(e.err_text().contains("l1 = true"), "{e:?}");
    assert_eq!(c.cmd(&["CLIENT", "GETREDIR"]).await, Val::Int(-1));
}

/// A RESP2 client has its invalidations sent to a second, subscribed connection
/// (`REDIRECT`), and a RESP3 client that subscribes keeps hearing of what it tracks; the
/// frames are Redis's, straight (`addr` is Redis) or through Pake.
async fn redirect_transcript(addr: std::net::SocketAddr, other: &mut Conn) -> Vec<Val> {
    let mut out = Vec::new();
    let mut sub = Conn::connect(addr).await;
    let Val::Int(id) = sub.cmd(&["CLIENT", "ID"]).await else {
        panic!("CLIENT ID");
    };
    out.push(sub.cmd(&["SUBSCRIBE", "__redis__:invalidate"]).await);
    let mut c = Conn::connect(addr).await;
    let id_text = id.to_string();
    out.push(
        c.cmd(&["CLIENT", "TRACKING", "ON", "REDIRECT", &id_text])
            .await,
    );
    assert_eq!(c.cmd(&["CLIENT", "GETREDIR"]).await, Val::Int(id));
    out.push(c.cmd(&["GET", "rd:a"]).await);
    assert_eq!(other.cmd(&["SET", "rd:a", "1"]).await, Val::s("OK"));
    out.push(sub.read().await.unwrap_or(Val::s("no invalidation")));
    // its own write is announced to the target too
    out.push(c.cmd(&["GET", "rd:a"]).await);
    out.push(c.cmd(&["SET", "rd:a", "2"]).await);
    out.push(sub.read().await.unwrap_or(Val::s("no invalidation")));
    // a RESP3 client subscribed to something else still hears of what it tracks
    let mut r3 = Conn::connect(addr).await;
    assert!(!r3.cmd(&["HELLO", "3"]).await.is_err());
    out.push(r3.cmd(&["CLIENT", "TRACKING", "ON"]).await);
    out.push(r3.cmd(&["GET", "rd:b"]).await);
    out.push(r3.cmd(&["SUBSCRIBE", "rd:news"]).await);
    assert_eq!(other.cmd(&["SET", "rd:b", "1"]).await, Val::s("OK"));
    out.push(r3.read().await.unwrap_or(Val::s("no invalidation")));
    assert!(!other.cmd(&["PUBLISH", "rd:news", "hi"]).await.is_err());
    out.push(r3.read().await.unwrap_or(Val::s("no message")));
    // the target leaves: a RESP3 client hears that its redirection is broken, and
    // TRACKINGINFO says so (the target's id, which differs, written as 0)
    let mut gone = Conn::connect(addr).await;
    let Val::Int(gone_id) = gone.cmd(&["CLIENT", "ID"]).await else {
        panic!("CLIENT ID");
    };
    let mut r = Conn::connect(addr).await;
    assert!(!r.cmd(&["HELLO", "3"]).await.is_err());
    let gone_text = gone_id.to_string();
    out.push(
        r.cmd(&["CLIENT", "TRACKING", "ON", "REDIRECT", &gone_text])
            .await,
    );
    out.push(r.cmd(&["GET", "rd:c"]).await);
    drop(gone);
    let mut probe = Conn::connect(addr).await;
    let mut left = false;
    for _ in 0..100 {
        if probe.cmd(&["CLIENT", "LIST", "ID", &gone_text]).await == Val::s("") {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(left, "the target never left");
    assert_eq!(other.cmd(&["SET", "rd:c", "1"]).await, Val::s("OK"));
    let without_id = |v: Val| match v {
        Val::Push(mut items) => {
            if items.get(1) == Some(&Val::Int(gone_id)) {
                items[1] = Val::Int(0);
            }
            Val::Push(items)
        }
        Val::Map(pairs) => Val::Map(
            pairs
                .into_iter()
                .map(|(k, v)| match v == Val::Int(gone_id) {
                    true => (k, Val::Int(0)),
                    false => (k, v),
                })
                .collect(),
        ),
        other => other,
    };
    out.push(without_id(
        r.read().await.unwrap_or(Val::s("no broken-redirect push")),
    ));
    out.push(sorted(without_id(r.cmd(&["CLIENT", "TRACKINGINFO"]).await)));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_and_subscribed_clients_hear_as_from_redis() {
    let env = Env::start(Mode::Standalone).await;
    let redis = ([127, 0, 0, 1], env.node_port_for("rd:a")).into();
    let mut other = env.direct("rd:a").await;
    let want = redirect_transcript(redis, &mut other).await;
    assert!(
        !want.iter().any(|v| format!("{v:?}").contains("no ")),
        "{want:#?}"
    );
    assert_eq!(other.cmd(&["FLUSHALL"]).await, Val::s("OK"));
    let mut other = env.conn().await;
    let got = redirect_transcript(env.addr(), &mut other).await;
    assert_eq!(want, got);
}

/// While no stream hears a node's writes (its tracking connection lost and not armed again:
/// Redis refuses new connections), a tracked read is invalidated at once, behind its reply:
/// a write in that window is announced by nobody, and the flush sent when the stream arms
/// again comes only after it. Found by a script turning tracking on the moment Pake started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_while_no_stream_hears_writes_is_invalidated_at_once() {
    let env = Env::start(Mode::Standalone).await;
    let mut reader = env.conn().await;
    assert!(!reader.cmd(&["HELLO", "3"]).await.is_err());
    assert_eq!(
        reader.cmd(&["CLIENT", "TRACKING", "ON"]).await,
        Val::s("OK")
    );
    let mut admin = env.direct("unheard:a").await;
    let mut writer = env.direct("unheard:a").await;
    assert_eq!(admin.cmd(&["SET", "unheard:a", "1"]).await, Val::s("OK"));
    // read while armed: tracked, no invalidation until written
    assert_eq!(reader.cmd(&["GET", "unheard:a"]).await, Val::s("1"));
    assert_eq!(reader.cmd(&["PING"]).await, Val::s("PONG"));
    // no new connection from here on: Pake's stream, once killed, cannot arm again
    assert_eq!(
        admin.cmd(&["CONFIG", "SET", "maxclients", "1"]).await,
        Val::s("OK")
    );
    let list = match admin.cmd(&["CLIENT", "LIST"]).await {
        Val::Str(s) => s,
        other => panic!("CLIENT LIST: {other:?}"),
    };
    let ids: Vec<&str> = (list.lines())
        .filter(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .collect();
    assert_eq!(ids.len(), 1, "one tracking stream: {list}");
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", ids[0]]).await,
        Val::Int(1)
    );
    // the loss flushes the client (the stream may have missed writes)
    let flush = Val::Push(vec![Val::s("invalidate"), Val::Nil]);
    assert_eq!(reader.read().await, Some(flush.clone()));
    // a read now: its reply, then its invalidation
    assert_eq!(reader.cmd(&["GET", "unheard:a"]).await, Val::s("1"));
    assert_eq!(
        reader.read_within(Duration::from_secs(5)).await,
        Some(push_of(&["unheard:a"])),
        "a key read while no stream hears its writes must not stay cached"
    );
    assert_eq!(writer.cmd(&["SET", "unheard:a", "2"]).await, Val::s("OK"));
    assert_eq!(
        admin.cmd(&["CONFIG", "SET", "maxclients", "10000"]).await,
        Val::s("OK")
    );
    // armed again: the flush, then reads are tracked as before
    assert_eq!(
        reader.read_within(Duration::from_secs(10)).await,
        Some(flush)
    );
    assert_eq!(reader.cmd(&["GET", "unheard:a"]).await, Val::s("2"));
    assert_eq!(
        reader.cmd(&["PING"]).await,
        Val::s("PONG"),
        "tracked, not invalidated"
    );
    assert_eq!(writer.cmd(&["SET", "unheard:a", "3"]).await, Val::s("OK"));
    assert_eq!(
        reader.read_within(Duration::from_secs(5)).await,
        Some(push_of(&["unheard:a"]))
    );
}
