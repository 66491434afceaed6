//! The memory budget and fair service, against real Redis: a wide MGET is answered in key
//! order (standalone and cluster) while a bystander keeps getting answers; a reply or a
//! request past its client's budget, or past the process budget, gets `-ERR` (the request
//! case also a close) and nobody else notices; a client that pipelines without reading is
//! paused, not buffered.

use crate::harness::{encode, eventually, metric, Conn, Env, Mode, Val};
use pake::config::Bytes;
use pake::lab::RedisOptions;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes every Redis client together hold on the process budget right now.
fn process_used(env: &Env) -> usize {
    env.pake.redis.as_ref().expect("redis side").budget.used()
}

/// `SET k{i} v{i}` for `0..n`, pipelined in batches.
async fn fill(c: &mut Conn, n: usize) {
    for start in (0..n).step_by(5000) {
        let end = n.min(start + 5000);
        let mut batch = Vec::new();
        for i in start..end {
            batch.extend(encode(&["SET", &format!("k{i}"), &format!("v{i}")]));
        }
        c.send(&batch).await;
        for _ in start..end {
            assert_eq!(c.read().await, Some(Val::s("OK")));
        }
    }
}

/// A bystander reading `k1` in a loop until `stop`; how many right answers it got.
fn bystander(env: &Env, stop: Arc<AtomicUsize>) -> tokio::task::JoinHandle<usize> {
    let addr = env.addr();
    tokio::spawn(async move {
        let mut c = Conn::connect(addr).await;
        let mut ok = 0;
        while stop.load(Ordering::Relaxed) == 0 {
            assert_eq!(c.cmd(&["GET", "k1"]).await, Val::s("v1"), "bystander");
            ok += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ok
    })
}

async fn wide_mget(mode: Mode) {
    let env = Env::start(mode).await;
    let n = 30_000;
    let mut c = env.conn().await;
    fill(&mut c, n).await;
    let stop = Arc::new(AtomicUsize::new(0));
    let watcher = bystander(&env, stop.clone());
    // every tenth key is missing: nil in its place
    let keys: Vec<String> = (0..n + n / 10)
        .map(|i| match i % 11 {
            10 => format!("missing{i}"),
            _ => format!("k{}", i - i / 11),
        })
        .collect();
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    let Val::Arr(items) = c.cmd(&args).await else {
        panic!("MGET did not answer an array");
    };
    assert_eq!(items.len(), keys.len());
    for (k, v) in keys.iter().zip(&items) {
        match k.strip_prefix('k') {
            Some(i) => assert_eq!(v, &Val::Str(format!("v{i}")), "{k}"),
            None => assert_eq!(v, &Val::Nil, "{k}"),
        }
    }
    stop.store(1, Ordering::Relaxed);
    assert!(watcher.await.expect("bystander") > 0);
    // every lease went back
    assert!(eventually(Duration::from_secs(5), || async { process_used(&env) == 0 }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_mget_keeps_key_order_standalone() {
    wide_mget(Mode::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_mget_keeps_key_order_cluster() {
    wide_mget(Mode::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_over_the_client_budget_are_refused_and_the_connection_stays() {
    let env = Env::with(RedisOptions::cluster(3, 0), |c| {
        c.client_max_reply_bytes = Bytes(64 << 10);
    })
    .await;
    let mut c = env.conn().await;
    let big = "x".repeat(100_000);
    assert_eq!(c.cmd(&["SET", "big", &big]).await, Val::s("OK"));
    let e = c.cmd(&["GET", "big"]).await.err_text();
    assert!(e.contains("client_max_reply_bytes"), "{e}");
    assert_eq!(c.cmd(&["PING"]).await, Val::s("PONG"), "still usable");
    // a fan-out: 300 keys of 1000 bytes over every primary, 300KB merged
    let value = "y".repeat(1000);
    let keys: Vec<String> = (0..300).map(|i| format!("wide{i}")).collect();
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, &value]).await, Val::s("OK"));
    }
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    let e = c.cmd(&args).await.err_text();
    assert!(
        e.contains("reply to MGET") && e.contains("client_max_reply_bytes"),
        "{e}"
    );
    // what fits is answered
    let Val::Arr(items) = c.cmd(&args[..40]).await else {
        panic!("a small MGET is answered");
    };
    assert_eq!(items.len(), 39);
    assert!(metric(&env.pake, "pake_redis_budget_refusals_total") >= 2.0);
    assert!(eventually(Duration::from_secs(5), || async { process_used(&env) == 0 }).await);
}

/// A partial `SET key <value of len bytes>` carrying `sent` bytes of the value.
fn partial_set(key: &str, len: usize, sent: usize) -> Vec<u8> {
    let mut b = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${len}\r\n", key.len()).into_bytes();
    b.extend(std::iter::repeat_n(b'x', sent));
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_a_budget_close_only_their_connection() {
    let env = Env::with(RedisOptions::default(), |c| {
        c.max_bulk_len = Bytes(60 << 10);
        c.client_max_request_bytes = Bytes(64 << 10);
        c.client_max_reply_bytes = Bytes(64 << 10);
        c.clients_max_memory = Bytes(64 << 10);
    })
    .await;
    let mut calm = env.conn().await;
    assert_eq!(calm.cmd(&["SET", "k1", "v1"]).await, Val::s("OK"));
    // one command past the client's own budget (each argument under max_bulk_len)
    let mut greedy = env.conn().await;
    let mut many = b"*20000\r\n".to_vec();
    while many.len() < 66_000 {
        many.extend(b"$5\r\nabcde\r\n");
    }
    greedy.send(&many).await;
    let e = greedy
        .read()
        .await
        .expect("an error before the close")
        .err_text();
    assert!(e.contains("client_max_request_bytes"), "{e}");
    assert!(greedy.closed().await);
    assert_eq!(calm.cmd(&["GET", "k1"]).await, Val::s("v1"));
    assert_eq!(
        process_used(&env),
        0,
        "the greedy client's bytes went with it"
    );
    // two clients half-way through big values hold most of the process budget ...
    let mut a = env.conn().await;
    let mut b = env.conn().await;
    a.send(&partial_set("a", 50_000, 45_000)).await;
    b.send(&partial_set("b", 50_000, 45_000)).await;
    let both = eventually(Duration::from_secs(5), || async {
        process_used(&env) >= 2 * (45_000 - pake::redis::budget::FREE_PER_CLIENT)
    })
    .await;
    assert!(both, "both partial values are buffered");
    // ... so a third is refused, by the process budget ...
    let mut c = env.conn().await;
    c.send(&partial_set("c", 50_000, 45_000)).await;
    let e = c
        .read()
        .await
        .expect("an error before the close")
        .err_text();
    assert!(e.contains("clients_max_memory"), "{e}");
    // ... while the first two finish, and small commands never notice
    assert_eq!(calm.cmd(&["GET", "k1"]).await, Val::s("v1"));
    let rest = [&b"x".repeat(5_000)[..], b"\r\n"].concat();
    a.send(&rest).await;
    assert_eq!(a.read().await, Some(Val::s("OK")));
    b.send(&rest).await;
    assert_eq!(b.read().await, Some(Val::s("OK")));
    assert_eq!(
        calm.cmd(&["STRLEN", "a"]).await,
        Val::Int(50_000),
        "the value arrived whole"
    );
    assert!(metric(&env.pake, "pake_redis_budget_refusals_total") >= 2.0);
}

/// A MULTI queue is the client's request bytes held until EXEC: past the client's request
/// budget the command is refused and the transaction aborted, the connection stays, nothing
/// runs, and the bytes go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_queue_past_the_request_budget_aborts_the_transaction() {
    let env = Env::with(RedisOptions::default(), |c| {
        c.max_bulk_len = Bytes(60 << 10);
        c.client_max_request_bytes = Bytes(64 << 10);
    })
    .await;
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
    let value = "x".repeat(10_000);
    let mut queued = 0;
    let e = loop {
        match c.cmd(&["SET", &format!("m{queued}"), &value]).await {
            Val::Str(s) if s == "QUEUED" => queued += 1,
            other => break other.err_text(),
        }
        assert!(queued < 100, "the queue is never refused");
    };
    assert!(
        e.contains("client_max_request_bytes") && e.contains("MULTI"),
        "{e}"
    );
    assert!(queued >= 5, "only {queued} queued within 64 KiB");
    let e = c.cmd(&["EXEC"]).await.err_text();
    assert!(e.starts_with("EXECABORT"), "{e}");
    assert_eq!(c.cmd(&["PING"]).await, Val::s("PONG"), "still usable");
    assert_eq!(c.cmd(&["GET", "m0"]).await, Val::Nil, "nothing ran");
    // the queue's bytes went back: a transaction within the budget runs
    assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
    for i in 0..queued {
        let set = c.cmd(&["SET", &format!("m{i}"), &value]).await;
        assert_eq!(set, Val::s("QUEUED"));
    }
    let Val::Arr(done) = c.cmd(&["EXEC"]).await else {
        panic!("EXEC of a transaction within the budget");
    };
    assert_eq!(done.len(), queued);
    assert_eq!(c.cmd(&["STRLEN", "m0"]).await, Val::Int(10_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_paused_not_buffered() {
    let env = Env::start(Mode::Standalone).await;
    let mut calm = env.conn().await;
    assert_eq!(calm.cmd(&["SET", "k1", "v1"]).await, Val::s("OK"));
    // 22MB of commands: more than the kernel's socket buffers hold
    let n = 1_000_000;
    let stream = tokio::net::TcpStream::connect(env.addr())
        .await
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let sent = Arc::new(AtomicUsize::new(0));
    let progress = sent.clone();
    let writer = tokio::spawn(async move {
        let one = encode(&["GET", "k1"]);
        for _ in 0..n / 1000 {
            wr.write_all(&one.repeat(1000)).await.expect("write");
            progress.fetch_add(1000, Ordering::Relaxed);
        }
        wr
    });
    // the writer stalls: Pake stopped reading it, so the kernel's buffers filled
    let mut last = usize::MAX;
    let stalled = eventually(Duration::from_secs(30), || {
        let now = sent.load(Ordering::Relaxed);
        let still = now == last;
        last = now;
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            still
        }
    })
    .await;
    assert!(
        stalled && sent.load(Ordering::Relaxed) < n,
        "the writer must be paused"
    );
    // what Pake holds for it stays small: the read and write buffers' high-water marks
    assert!(
        process_used(&env) < 1 << 20,
        "{} bytes held",
        process_used(&env)
    );
    assert_eq!(
        calm.cmd(&["GET", "k1"]).await,
        Val::s("v1"),
        "others are served"
    );
    // once it reads, every reply comes, in order
    let want = b"$2\r\nv1\r\n";
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let mut carry = Vec::new();
    while got < n {
        let k = rd.read(&mut buf).await.expect("read");
        assert!(k > 0, "closed after {got} replies");
        carry.extend_from_slice(&buf[..k]);
        let whole = carry.len() / want.len();
        assert!(carry[..whole * want.len()]
            .chunks(want.len())
            .all(|c| c == want));
        got += whole;
        carry.drain(..whole * want.len());
    }
    assert_eq!(got, n);
    writer.await.expect("writer");
}
