//! `CLIENT PAUSE` through Pake, against a real Redis: what it holds and what it must not.
//!
//! Redis holds a paused write's client only; other clients' reads go on. Through Pake the
//! clients share backend links (replies matched in order), so a held write must not sit
//! on a link other clients' reads use.

use crate::harness::{encode, metric, options, Conn, Env, Mode, Val};
use std::time::Duration;

/// How long a read that Redis answers at once may take through Pake here.
const PROMPT: Duration = Duration::from_secs(2);

/// One round: `pauser` pauses writes, `writer` sends a write (held) and, pipelined behind
/// it, a read of the key it writes; `reader` reads meanwhile, and so does `pauser` before
/// it unpauses, as Redis's own `pause` unit does. Everything but the write answers at once;
/// the write and the writer's read after it only once unpaused, in order. `Err`: what did
/// not answer in time.
async fn round(
    pauser: &mut Conn,
    writer: &mut Conn,
    reader: &mut Conn,
    n: usize,
) -> Result<(), String> {
    let key = format!("held:{n}");
    let paused = pauser.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]).await;
    assert_eq!(paused, Val::s("OK"));
    let mut batch = encode(&["SET", &key, "v"]);
    batch.extend(encode(&["GET", &key]));
    writer.send(&batch).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut late = Vec::new();
    let other = format!("other:{n}");
    for read in [
        &["GET", &other[..]][..],
        &["DBSIZE"],
        &["INFO", "clients"],
        &["GET", &key],
    ] {
        reader.send(&encode(read)).await;
        match reader.read_within(PROMPT).await {
            Some(Val::Err(e)) => panic!("{read:?}: {e}"),
            Some(v) if read == ["GET", &key] => assert_eq!(v, Val::Nil, "the held SET ran"),
            Some(_) => {}
            None => late.push(format!("{read:?} of another client")),
        }
        if !late.is_empty() {
            break; // its reply is still owed: the next read would take it
        }
    }
    let mut pauser_owed = false;
    if late.is_empty() {
        pauser.send(&encode(&["INFO", "clients"])).await;
        match pauser.read_within(PROMPT).await {
            Some(Val::Str(info)) => assert!(info.contains("blocked_clients:"), "{info}"),
            Some(other) => panic!("INFO: {other:?}"),
            None => {
                pauser_owed = true;
                late.push("the pauser's INFO".into())
            }
        }
    }
    // the unpause answers however the rest went (it has a connection of its own): the
    // round after starts clean, whatever this one found
    let unpause = encode(&["CLIENT", "UNPAUSE"]);
    pauser.send(&unpause).await;
    let limit = Duration::from_secs(8);
    if pauser_owed {
        assert!(
            pauser.read_within(limit).await.is_some(),
            "the pauser's late INFO"
        );
    }
    let unpaused = pauser.read_within(limit).await;
    assert_eq!(unpaused, Some(Val::s("OK")), "CLIENT UNPAUSE");
    assert_eq!(
        writer.read_within(limit).await,
        Some(Val::s("OK")),
        "the held SET"
    );
    assert_eq!(
        writer.read_within(limit).await,
        Some(Val::s("v")),
        "the writer's GET, after it"
    );
    if late.iter().any(|l| l.contains("another")) {
        while reader
            .read_within(Duration::from_millis(500))
            .await
            .is_some()
        {}
    }
    match late.is_empty() {
        true => Ok(()),
        false => Err(late.join(", ")),
    }
}

async fn rounds(env: &Env, count: usize) -> Vec<String> {
    let (mut pauser, mut writer, mut reader) =
        (env.conn().await, env.conn().await, env.conn().await);
    let mut late = Vec::new();
    for n in 0..count {
        if let Err(e) = round(&mut pauser, &mut writer, &mut reader, n).await {
            late.push(format!("round {n}: {e}"));
        }
    }
    late
}

/// During `CLIENT PAUSE … WRITE` the reads of every other client answer at once, as from
/// Redis, while a write is held; the writer's own later commands wait for it. Before,
/// the held write sat on the shared link the reads went on (every round with one reactor
/// thread, where all clients share it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_on_while_a_paused_write_is_held() {
    let env = Env::with(options(Mode::Standalone), |c| c.threads = 1).await;
    let one = rounds(&env, 3).await;
    let env = Env::start(Mode::Standalone).await;
    let runtime = rounds(&env, 4).await;
    assert!(
        one.is_empty() && runtime.is_empty(),
        "one thread: {one:?}; the test's runtime: {runtime:?}"
    );
}

/// At most `max_held_writes` writes wait on connections of their own; one more is answered
/// `-ERR` at once, not run, and the client stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_held_past_the_limit_are_refused() {
    let env = Env::with(options(Mode::Standalone), |c| c.max_held_writes = 1).await;
    let (mut pauser, mut first, mut second) =
        (env.conn().await, env.conn().await, env.conn().await);
    let paused = pauser.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]).await;
    assert_eq!(paused, Val::s("OK"));
    first.send(&encode(&["SET", "first", "1"])).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    second.send(&encode(&["SET", "second", "2"])).await;
    let refused = second.read_within(PROMPT).await.map(|v| v.err_text());
    let refused = refused.unwrap_or_default();
    assert!(refused.contains("max_held_writes"), "{refused}");
    assert_eq!(second.cmd(&["GET", "second"]).await, Val::Nil, "not run");
    assert_eq!(pauser.cmd(&["CLIENT", "UNPAUSE"]).await, Val::s("OK"));
    assert_eq!(first.read_within(PROMPT).await, Some(Val::s("OK")));
    assert_eq!(second.cmd(&["SET", "second", "2"]).await, Val::s("OK"));
}

/// `CLIENT PAUSE … ALL` holds reads too, in Redis: a read the L1 could answer waits as
/// well, until the pause is over. Before, the L1 answered it at once. (Redis 7.0 holds a
/// `CLIENT UNPAUSE` too during such a pause: the pause here ends by its timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_of_all_holds_reads_the_l1_could_answer() {
    let env = Env::start(Mode::Standalone).await;
    let (mut pauser, mut reader) = (env.conn().await, env.conn().await);
    assert_eq!(reader.cmd(&["SET", "cached", "v"]).await, Val::s("OK"));
    for _ in 0..3 {
        // the first fills the L1 (once its fill is vouched for), the rest hit
        assert_eq!(reader.cmd(&["GET", "cached"]).await, Val::s("v"));
    }
    let mut direct = env.direct("cached").await;
    let paused = pauser.cmd(&["CLIENT", "PAUSE", "1500", "ALL"]).await;
    assert_eq!(paused, Val::s("OK"));
    let started = std::time::Instant::now();
    for conn in [&mut reader, &mut direct] {
        conn.send(&encode(&["GET", "cached"])).await;
    }
    for conn in [&mut reader, &mut direct] {
        let v = conn.read_within(Duration::from_secs(4)).await;
        assert_eq!(v, Some(Val::s("v")));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1200),
            "answered during the pause: {waited:?}"
        );
    }
    assert_eq!(reader.cmd(&["GET", "cached"]).await, Val::s("v"));
}

/// A cluster is paused as one server: every primary holds writes (the pause went to one
/// node only), the reads of other clients go on, and the unpause releases them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_pauses_every_primary() {
    let env = Env::start(Mode::Cluster).await;
    let keys = env.key_per_node("pause:p");
    assert_eq!(keys.len(), 3, "a key on each primary");
    let (mut pauser, mut writer, mut reader) =
        (env.conn().await, env.conn().await, env.conn().await);
    let paused = pauser.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]).await;
    assert_eq!(paused, Val::s("OK"));
    writer.send(&encode(&["SET", &keys[0], "held"])).await;
    let mut direct = Vec::new();
    for key in &keys {
        let mut d = env.direct(key).await;
        d.send(&encode(&["SET", key, "direct"])).await;
        direct.push(d);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, d) in direct.iter_mut().enumerate() {
        let early = d.read_within(Duration::from_millis(100)).await;
        assert_eq!(early, None, "primary {i} ran a write during the pause");
    }
    for key in &keys {
        reader.send(&encode(&["GET", key])).await;
        assert_eq!(
            reader.read_within(PROMPT).await,
            Some(Val::Nil),
            "GET {key}"
        );
    }
    assert_eq!(pauser.cmd(&["CLIENT", "UNPAUSE"]).await, Val::s("OK"));
    assert_eq!(writer.read_within(PROMPT).await, Some(Val::s("OK")));
    for d in &mut direct {
        assert_eq!(d.read_within(PROMPT).await, Some(Val::s("OK")));
    }
}

/// A `CLIENT PAUSE` inside a transaction pauses as one outside it (Redis's `pause` unit
/// sends one so): a write held by it must not hold the reads of other clients either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_sent_in_a_transaction_is_known_too() {
    let env = Env::with(options(Mode::Standalone), |c| c.threads = 1).await;
    let (mut pauser, mut writer, mut reader) =
        (env.conn().await, env.conn().await, env.conn().await);
    let in_tx = |inner: &[&str]| {
        let mut b = encode(&["MULTI"]);
        b.extend(encode(inner));
        b.extend(encode(&["EXEC"]));
        b
    };
    pauser
        .send(&in_tx(&["CLIENT", "PAUSE", "10000", "WRITE"]))
        .await;
    for want in [Val::s("OK"), Val::s("QUEUED"), Val::Arr(vec![Val::s("OK")])] {
        assert_eq!(pauser.read().await, Some(want));
    }
    // pipelined: a lone SET could go by write-through, on the tracking connection
    let mut batch = encode(&["SET", "in_tx", "v"]);
    batch.extend(encode(&["GET", "in_tx"]));
    writer.send(&batch).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    reader.send(&encode(&["DBSIZE"])).await;
    assert!(
        matches!(reader.read_within(PROMPT).await, Some(Val::Int(_))),
        "DBSIZE"
    );
    pauser.send(&in_tx(&["CLIENT", "UNPAUSE"])).await;
    for want in [Val::s("OK"), Val::s("QUEUED"), Val::Arr(vec![Val::s("OK")])] {
        assert_eq!(pauser.read().await, Some(want));
    }
    assert_eq!(writer.read_within(PROMPT).await, Some(Val::s("OK")));
    assert_eq!(writer.read_within(PROMPT).await, Some(Val::s("v")));
}

/// The value of Pake's count of connections of their own that held writes went on.
fn held(env: &Env) -> f64 {
    metric(&env.pake, "pake_redis_held_by_pause_total")
}

/// A `CLIENT PAUSE` Redis refuses (a user without the right, a timeout it does not read, one
/// queued in a transaction Redis aborts or whose entry it refuses) pauses nothing: the write
/// after it takes the shared path as before it. Before, each was noted as it was sent, and
/// every write went alone on a connection of its own until its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_redis_refused_is_not_noted() {
    let env = Env::start(Mode::Standalone).await;
    let (mut admin, mut limited, mut writer) =
        (env.conn().await, env.conn().await, env.conn().await);
    let user = [
        "ACL",
        "SETUSER",
        "nopause",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-client|pause",
    ];
    assert_eq!(admin.cmd(&user).await, Val::s("OK"));
    assert_eq!(limited.cmd(&["AUTH", "nopause", "pw"]).await, Val::s("OK"));
    let in_tx = |inner: &[&str]| {
        let mut b = encode(&["MULTI"]);
        b.extend(encode(inner));
        b.extend(encode(&["EXEC"]));
        b
    };
    let pause = ["CLIENT", "PAUSE", "10000", "WRITE"];
    let unread = ["CLIENT", "PAUSE", "0100", "WRITE"];
    // (what, sent by the admin, the bytes, how many replies)
    for (case, by_admin, bytes, count) in [
        ("NOPERM", false, encode(&pause), 1),
        ("a timeout Redis does not read", true, encode(&unread), 1),
        ("EXECABORT", false, in_tx(&pause), 3),
        ("refused in EXEC", true, in_tx(&unread), 3),
    ] {
        let conn = if by_admin { &mut admin } else { &mut limited };
        conn.send(&bytes).await;
        let mut replies = Vec::new();
        for _ in 0..count {
            replies.push(conn.read_within(PROMPT).await);
        }
        let refused = match replies.last() {
            Some(Some(Val::Err(_))) => true,
            Some(Some(Val::Arr(entries))) => matches!(entries[..], [Val::Err(_)]),
            _ => false,
        };
        assert!(refused, "{case}: {replies:?}");
        assert_eq!(
            writer.cmd(&["SET", "k", case]).await,
            Val::s("OK"),
            "{case}"
        );
        assert_eq!(held(&env), 0.0, "{case}: the write after it was held");
        // a pause noted wrongly ends here, so that each case is seen alone
        assert_eq!(admin.cmd(&["CLIENT", "UNPAUSE"]).await, Val::s("OK"));
    }
}

/// A `CLIENT UNPAUSE` Redis refuses ends nothing, and neither does a `SCRIPT KILL` (the
/// other command that ends what holds a server up) sent in a transaction: writes stay held
/// apart, the reads of others go on. (It held before the notes of a pause and an unpause
/// were tied to Redis's replies too; kept so that they stay symmetric.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_outlives_a_refused_unpause_and_a_script_kill() {
    let env = Env::with(options(Mode::Standalone), |c| c.threads = 1).await;
    let (mut admin, mut limited, mut writer, mut reader) = (
        env.conn().await,
        env.conn().await,
        env.conn().await,
        env.conn().await,
    );
    let user = [
        "ACL",
        "SETUSER",
        "nounpause",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-client|unpause",
    ];
    assert_eq!(admin.cmd(&user).await, Val::s("OK"));
    assert_eq!(
        limited.cmd(&["AUTH", "nounpause", "pw"]).await,
        Val::s("OK")
    );
    let paused = admin.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]).await;
    assert_eq!(paused, Val::s("OK"));
    let refused = limited.cmd(&["CLIENT", "UNPAUSE"]).await;
    assert!(refused.err_text().contains("NOPERM"), "{refused:?}");
    let mut kill = encode(&["MULTI"]);
    kill.extend(encode(&["SCRIPT", "KILL"]));
    kill.extend(encode(&["EXEC"]));
    limited.send(&kill).await;
    for _ in 0..3 {
        assert!(limited.read_within(PROMPT).await.is_some(), "SCRIPT KILL");
    }
    let mut batch = encode(&["SET", "after", "v"]);
    batch.extend(encode(&["GET", "after"]));
    writer.send(&batch).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    reader.send(&encode(&["DBSIZE"])).await;
    let dbsize = reader.read_within(PROMPT).await;
    assert!(matches!(dbsize, Some(Val::Int(_))), "DBSIZE: {dbsize:?}");
    assert_eq!(held(&env), 1.0, "the write went apart");
    assert_eq!(admin.cmd(&["CLIENT", "UNPAUSE"]).await, Val::s("OK"));
    assert_eq!(writer.read_within(PROMPT).await, Some(Val::s("OK")));
    assert_eq!(writer.read_within(PROMPT).await, Some(Val::s("v")));
}

/// In a cluster, during a pause: a write to several primaries (a cross-slot `MSET`, a
/// `FLUSHALL`) waits on connections of its own, not on the shared links the reads of other
/// clients go on; `max_held_writes` counts each of its connections, and one that would pass
/// it is refused whole, at once. A pause Redis refused (every primary) holds nothing.
/// Before, the `MSET`'s parts sat on the primaries' shared links and held every read behind
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_write_to_several_primaries_is_held_apart() {
    let env = Env::with(options(Mode::Cluster), |c| {
        c.threads = 1;
        c.max_held_writes = 4;
    })
    .await;
    let keys = env.key_per_node("pause:s");
    assert_eq!(keys.len(), 3, "a key on each primary");
    let k: Vec<&str> = keys.iter().map(|k| &k[..]).collect();
    let (mut pauser, mut writer, mut flusher, mut reader) = (
        env.conn().await,
        env.conn().await,
        env.conn().await,
        env.conn().await,
    );
    let mset = |v| vec!["MSET", k[0], v, k[1], v, k[2], v];
    assert_eq!(writer.cmd(&mset("1")).await, Val::s("OK"));
    let paused = pauser.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]).await;
    assert_eq!(paused, Val::s("OK"));
    let mut batch = encode(&mset("2"));
    batch.extend(encode(&["GET", k[0]]));
    writer.send(&batch).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for key in &k {
        reader.send(&encode(&["GET", key])).await;
        let v = reader.read_within(PROMPT).await;
        assert_eq!(v, Some(Val::s("1")), "GET {key} during the pause");
    }
    reader.send(&encode(&["DBSIZE"])).await;
    let dbsize = reader.read_within(PROMPT).await;
    assert!(matches!(dbsize, Some(Val::Int(_))), "DBSIZE: {dbsize:?}");
    assert_eq!(held(&env), 3.0, "one connection per primary");
    flusher.send(&encode(&["FLUSHALL"])).await;
    let over = flusher.read_within(PROMPT).await.map(|v| v.err_text());
    let over = over.unwrap_or_default();
    assert!(over.contains("max_held_writes"), "{over}");

    assert_eq!(pauser.cmd(&["CLIENT", "UNPAUSE"]).await, Val::s("OK"));
    assert_eq!(writer.read_within(PROMPT).await, Some(Val::s("OK")));
    assert_eq!(writer.read_within(PROMPT).await, Some(Val::s("2")));
    for key in &k {
        assert_eq!(reader.cmd(&["GET", key]).await, Val::s("2"), "not flushed");
    }
    let paused = pauser.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]).await;
    assert_eq!(paused, Val::s("OK"));
    flusher.send(&encode(&["FLUSHALL"])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    reader.send(&encode(&["GET", k[1]])).await;
    let v = reader.read_within(PROMPT).await;
    assert_eq!(v, Some(Val::s("2")), "GET during the held FLUSHALL");
    assert_eq!(pauser.cmd(&["CLIENT", "UNPAUSE"]).await, Val::s("OK"));
    assert_eq!(flusher.read_within(PROMPT).await, Some(Val::s("OK")));
    assert_eq!(reader.cmd(&["DBSIZE"]).await, Val::Int(0));

    let held_before = held(&env);
    let refused = pauser.cmd(&["CLIENT", "PAUSE", "0100", "WRITE"]).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(writer.cmd(&["SET", k[0], "0"]).await, Val::s("OK"));
    assert_eq!(writer.cmd(&mset("1")).await, Val::s("OK"));
    assert_eq!(held(&env), held_before, "held after a pause Redis refused");
}
