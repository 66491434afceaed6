//! Pake's own multiplexed links to a standalone Redis (`src/redis/backend/mux.rs`): the
//! commands of many clients share one connection per reactor thread. What must hold: each
//! client's replies in its own order, a server that stops answering or drops the link
//! costs only the commands it owed, and a link's queue is bounded.

use crate::harness::{Conn, Env, Mode, Val};
use std::time::{Duration, Instant};

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Many clients pipelining writes and reads of their own keys: every reply in order,
/// reads seeing the writes before them (the L1 is on: reads behind a pending write go to
/// Redis, in the same FIFO as the write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_of_many_clients_share_links_and_keep_their_order() {
    let env = Env::start(Mode::Standalone).await;
    let mut tasks = Vec::new();
    for c in 0..16 {
        let mut conn = env.conn().await;
        tasks.push(tokio::spawn(async move {
            let key = format!("links:order:{c}");
            let mut batch = Vec::new();
            for _ in 0..500 {
                batch.extend(crate::harness::encode(&["INCR", &key]));
                batch.extend(crate::harness::encode(&["GET", &key]));
                batch.extend(crate::harness::encode(&["MGET", &key, "links:none"]));
            }
            conn.send(&batch).await;
            for i in 1..=500i64 {
                assert_eq!(conn.read().await, Some(Val::Int(i)), "client {c} INCR {i}");
                assert_eq!(
                    conn.read().await,
                    Some(Val::s(&i.to_string())),
                    "client {c} GET {i}"
                );
                assert_eq!(
                    conn.read().await,
                    Some(Val::Arr(vec![Val::s(&i.to_string()), Val::Nil])),
                    "client {c} MGET {i}"
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
}

/// A server that stops answering: the commands it owes fail once the command timeout has
/// passed (not before, not never), and once it answers again the link is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_fails_what_it_owes_after_the_timeout_and_the_link_comes_back() {
    let env = Env::with(crate::harness::options(Mode::Standalone), |rc| {
        rc.command_timeout = pake::config::Dur::secs(1);
    })
    .await;
    let mut conn = env.conn().await;
    assert_eq!(conn.cmd(&["INCR", "links:stall"]).await, Val::Int(1));
    let pid = env.lab.nodes[0].pid().expect("redis pid");
    signal(pid, "-STOP");
    let started = Instant::now();
    conn.send(&crate::harness::encode(&["INCR", "links:stall"]))
        .await;
    let reply = conn.read_within(Duration::from_secs(10)).await;
    let waited = started.elapsed();
    signal(pid, "-CONT");
    let reply = reply.expect("an answer while Redis is stopped");
    assert!(reply.is_err(), "{reply:?}");
    assert!(
        waited >= Duration::from_millis(900),
        "failed after {waited:?}"
    );
    // back: the next command reaches Redis on a fresh connection
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match conn.cmd(&["INCR", "links:stall"]).await {
            Val::Int(n) => {
                assert!(n >= 2, "{n}");
                break;
            }
            other => assert!(Instant::now() < deadline, "still failing: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server drops every client connection (Pake's links among them): the link
/// reconnects, and a pipeline sent after that is answered whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_the_server_dropped_reconnects() {
    let env = Env::start(Mode::Standalone).await;
    let mut conn = env.conn().await;
    assert_eq!(conn.cmd(&["INCR", "links:drop"]).await, Val::Int(1));
    let mut direct = env.direct("links:drop").await;
    let killed = direct
        .cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        .await;
    assert!(matches!(killed, Val::Int(n) if n >= 1), "{killed:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let last = loop {
        match conn.cmd(&["INCR", "links:drop"]).await {
            Val::Int(n) => break n,
            other => assert!(Instant::now() < deadline, "still failing: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut batch = Vec::new();
    for _ in 0..1000 {
        batch.extend(crate::harness::encode(&["INCR", "links:drop"]));
    }
    conn.send(&batch).await;
    for i in 1..=1000 {
        assert_eq!(conn.read().await, Some(Val::Int(last + i)));
    }
}

/// A link's queue is bounded: with Redis stopped, large writes from many clients fill it,
/// the ones past the bound are refused at once with an error, and every one that was
/// accepted is applied once Redis runs again. A full queue is no Redis failure (one client's
/// huge pipeline fills it too: ioredis's suite sends 600 MiB): the circuit breaker, opening
/// here at the first failure, stays closed for everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_link_queue_refuses_commands_with_an_error_and_keeps_the_rest() {
    let env = Env::with(crate::harness::options(Mode::Standalone), |rc| {
        rc.command_timeout = pake::config::Dur::secs(60);
        rc.circuit_breaker_failures = 1;
    })
    .await;
    let value = "v".repeat(1 << 20);
    let mut conns = Vec::new();
    for _ in 0..64 {
        let mut c = env.conn().await;
        assert_eq!(c.cmd(&["PING"]).await, Val::s("PONG"));
        conns.push(c);
    }
    let pid = env.lab.nodes[0].pid().expect("redis pid");
    signal(pid, "-STOP");
    for (i, c) in conns.iter_mut().enumerate() {
        // APPEND: a write whose result Pake cannot know, so it takes the shared link
        c.send(&crate::harness::encode(&[
            "APPEND",
            &format!("links:big:{i}"),
            &value,
        ]))
        .await;
    }
    // the refusals come at once, while Redis is still stopped
    let mut refused = Vec::new();
    let mut queue_full = 0;
    for (i, c) in conns.iter_mut().enumerate() {
        if let Some(v) = c.read_within(Duration::from_millis(200)).await {
            let text = v.err_text();
            assert!(text.contains("too much queued"), "{v:?}");
            queue_full += 1;
            refused.push(i);
        }
    }
    signal(pid, "-CONT");
    assert!(queue_full > 0, "64 MiB queued with no refusal");
    assert!(refused.len() < 64, "everything refused");
    let mut direct = env.direct("links:big:0").await;
    for (i, c) in conns.iter_mut().enumerate() {
        if refused.contains(&i) {
            continue;
        }
        let v = c.read_within(Duration::from_secs(30)).await;
        assert_eq!(v, Some(Val::Int(1 << 20)), "client {i}");
        let len = direct.cmd(&["STRLEN", &format!("links:big:{i}")]).await;
        assert_eq!(len, Val::Int(1 << 20), "client {i}");
    }
    // and the proxy goes on: the breaker never opened
    assert_eq!(
        conns[0].cmd(&["SET", "links:after", "1"]).await,
        Val::s("OK")
    );
}

/// Redis answers a script with a table nested 100 deep: the reply reaches the client whole
/// (deeper than a client may nest its requests), and the shared link serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_reply_passes_and_the_link_serves_on() {
    let env = Env::start(Mode::Standalone).await;
    let mut conn = env.conn().await;
    assert_eq!(conn.cmd(&["INCR", "links:deep"]).await, Val::Int(1));
    let script = "local t={} local c=t for i=1,100 do c[1]={} c=c[1] end c[1]='bottom' return t";
    let out = crate::harness::cli(&env, &[], &["EVAL", script, "0"]).await;
    assert!(out.contains("bottom"), "{out}");
    assert!(!out.contains("ERR"), "{out}");
    assert_eq!(conn.cmd(&["INCR", "links:deep"]).await, Val::Int(2));
}

/// WAIT for a replica that does not exist blocks its connection: it goes on a link of its
/// own, so commands of other clients (on the same threads) are answered meanwhile and
/// nobody's link hits the command timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_blocks_only_its_own_client() {
    let env = Env::with(crate::harness::options(Mode::Standalone), |rc| {
        rc.command_timeout = pake::config::Dur::secs(1);
    })
    .await;
    let mut waiter = env.conn().await;
    waiter
        .send(&crate::harness::encode(&["WAIT", "1", "0"]))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut others = Vec::new();
    for _ in 0..8 {
        others.push(env.conn().await);
    }
    for round in 1..=3i64 {
        for (i, c) in others.iter_mut().enumerate() {
            let v = c.cmd(&["INCR", &format!("links:wait:{i}")]).await;
            assert_eq!(v, Val::Int(round), "client {i} round {round}");
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(waiter.read_within(Duration::from_millis(10)).await, None);
}

/// A user deleted while its link is pooled: Redis refuses the link's next login; Pake does not
/// try again on a timer (ioredis's ACL tests saw a dozen failed AUTHs a second, forever, with
/// no client connected), only when a command wants the link, and the user's clients work
/// again once the user is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_retried_on_demand_not_on_a_timer() {
    let opts = pake::lab::RedisOptions {
        users: vec![("alice".into(), "wonder".into())],
        ..pake::lab::RedisOptions::default()
    };
    let env = Env::with(opts, |_| {}).await;
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["AUTH", "alice", "wonder"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["INCR", "links:alice"]).await, Val::Int(1));
    let mut admin = env.direct("x").await;
    // failed logins as alice: ACL LOG counts them in one entry
    let denied = |log: Val| -> i64 {
        let Val::Arr(entries) = log else { return 0 };
        let mut n = 0;
        for e in entries {
            let Val::Arr(kv) = e else { continue };
            let field = |k: &str| kv.iter().position(|v| *v == Val::s(k)).map(|i| &kv[i + 1]);
            if field("username") == Some(&Val::s("alice")) {
                if let Some(Val::Int(c)) = field("count") {
                    n += c;
                }
            }
        }
        n
    };
    assert_eq!(admin.cmd(&["ACL", "DELUSER", "alice"]).await, Val::Int(1));
    // each link notices and tries once at once (it had served): wait until those are in
    // (on a loaded machine that took more than 800 ms), never more than 5 s; a retry on a
    // timer every half second or faster never settles
    let mut before = denied(admin.cmd(&["ACL", "LOG"]).await);
    let settle = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = denied(admin.cmd(&["ACL", "LOG"]).await);
        if (now == before && now > 0) || settle.elapsed() > Duration::from_secs(5) {
            break;
        }
        before = now;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = denied(admin.cmd(&["ACL", "LOG"]).await);
    assert_eq!(
        after, before,
        "failed logins while no command wanted the link"
    );
    let setuser = [
        "ACL", "SETUSER", "alice", "on", ">wonder", "~*", "&*", "+@all",
    ];
    assert_eq!(admin.cmd(&setuser).await, Val::s("OK"));
    // the first command wants the link: it waits for the new login, which Redis now takes
    assert_eq!(c.cmd(&["INCR", "links:alice"]).await, Val::Int(2));
    // again, and the user back right after a command saw the refusal: the next command
    // works at once (ioredis's auth tests: the link sat out a backoff first, and a
    // command in it failed though the user existed again)
    assert_eq!(admin.cmd(&["ACL", "DELUSER", "alice"]).await, Val::Int(1));
    let mut refused = false;
    for _ in 0..100 {
        if c.cmd(&["INCR", "links:alice"]).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "a command as the deleted user was never refused");
    assert_eq!(admin.cmd(&setuser).await, Val::s("OK"));
    let next = c.cmd(&["INCR", "links:alice"]).await;
    assert!(!next.is_err(), "{next:?}");
}

/// A least-privilege user (`~app:* +get +set`, no `ping`) works through Pake as directly: the
/// link Pake opens for it checks Redis with a PING that this user is refused (NOPERM), which
/// still proves the link is up. (Found with redis-rs's suite: every command of such a user
/// answered "Redis is unavailable".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_ping_gets_a_link() {
    let env = Env::with(crate::harness::options(Mode::Standalone), |_| {}).await;
    let mut admin = env.direct("x").await;
    let setuser = [
        "ACL", "SETUSER", "app", "reset", "on", ">pw", "~app:*", "+get", "+set",
    ];
    assert_eq!(admin.cmd(&setuser).await, Val::s("OK"));
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["AUTH", "app", "pw"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["SET", "app:1", "v"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["GET", "app:1"]).await, Val::s("v"));
    // what the user may not do is refused by Redis, in its words
    match c.cmd(&["GET", "other"]).await {
        Val::Err(e) => assert!(e.starts_with("NOPERM"), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// A command Redis refuses to queue inside MULTI (here NOPERM; READONLY on a replica, OOM)
/// fails the transaction as directly, and the EXECABORT names it: Pake answered `+QUEUED`
/// itself, where directly the command's own reply is the error. (Found with redis-rs's
/// suite: the client could not tell which command failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_refused_while_queued_is_named_by_the_abort() {
    let env = Env::with(crate::harness::options(Mode::Standalone), |_| {}).await;
    let mut admin = env.direct("x").await;
    let setuser = [
        "ACL", "SETUSER", "lim", "reset", "on", ">pw", "~*", "+multi", "+exec", "+get",
    ];
    assert_eq!(admin.cmd(&setuser).await, Val::s("OK"));
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["AUTH", "lim", "pw"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["GET", "q:1"]).await, Val::s("QUEUED"));
    assert_eq!(c.cmd(&["SET", "q:1", "v"]).await, Val::s("QUEUED"));
    let e = c.cmd(&["EXEC"]).await.err_text();
    assert!(e.starts_with("EXECABORT"), "{e}");
    assert!(e.contains("queued command 2: NOPERM"), "{e}");
    assert_eq!(admin.cmd(&["EXISTS", "q:1"]).await, Val::Int(0));
}

/// A SUBSCRIBE sent without waiting for its confirmation, then a PUBLISH on another
/// connection: the message arrives, as directly (Redis reads the two in the order they were
/// written). Before, the subscription's own link was still opening when the PUBLISH went on
/// a shared link, and the message was lost (47 of 50 in redis-rs's suite). Redis is paused
/// while the two are sent, so that the link's login is as slow as it can be: the PUBLISH
/// must wait for the subscription, not win a race with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_after_an_unanswered_subscribe_reaches_it() {
    let env = Env::with(crate::harness::options(Mode::Standalone), |_| {}).await;
    let mut admin = env.direct("x").await;
    let mut publisher = env.conn().await;
    for round in 0..5 {
        let channel = format!("race:{round}");
        let mut sub = env.conn().await;
        // a client library's handshake (RESP3: the subscription's link says HELLO too)
        assert!(!sub.cmd(&["HELLO", "3"]).await.is_err());
        assert_eq!(
            admin.cmd(&["CLIENT", "PAUSE", "300", "ALL"]).await,
            Val::s("OK")
        );
        sub.send(&crate::harness::encode(&["SUBSCRIBE", &channel]))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let receivers = publisher.cmd(&["PUBLISH", &channel, "m"]).await;
        assert_eq!(
            receivers,
            Val::Int(1),
            "round {round}: published before subscribed"
        );
        let confirm = sub.read().await;
        assert!(matches!(confirm, Some(Val::Push(_))), "{confirm:?}");
        match sub.read_within(Duration::from_secs(5)).await {
            Some(Val::Push(m)) => assert_eq!(m.last(), Some(&Val::s("m")), "round {round}"),
            other => panic!("round {round}: {other:?}"),
        }
    }
}

/// A blocking command whose link cannot open yet (Redis paused) and a write another client
/// sends after it: Redis must have the blocking command first, as it would directly (Redis's
/// own suite: `XREAD BLOCK … $` then `XADD` from another client). And two clients blocked on
/// one list are served in the order they blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_blocking_command_still_opening_reaches_it() {
    let env = Env::with(crate::harness::options(Mode::Standalone), |_| {}).await;
    let mut admin = env.direct("x").await;
    let mut writer = env.conn().await;
    for round in 0..3 {
        let stream = format!("bo:{round}");
        let mut reader = env.conn().await;
        pause(&mut admin).await;
        let xread = ["XREAD", "BLOCK", "0", "STREAMS", &stream, "$"];
        reader.send(&crate::harness::encode(&xread)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let id = writer.cmd(&["XADD", &stream, "*", "f", "v"]).await;
        assert!(matches!(id, Val::Str(_)), "{id:?}");
        match reader.read_within(Duration::from_secs(5)).await {
            Some(Val::Arr(streams)) => assert_eq!(streams.len(), 1, "round {round}"),
            Some(Val::Map(streams)) => assert_eq!(streams.len(), 1, "round {round}"),
            other => panic!("round {round}: the XADD overtook the XREAD: {other:?}"),
        }
    }
    let (mut first, mut second) = (env.conn().await, env.conn().await);
    pause(&mut admin).await;
    first
        .send(&crate::harness::encode(&["BLPOP", "bo:list", "0"]))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    second
        .send(&crate::harness::encode(&["BLPOP", "bo:list", "0"]))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(writer.cmd(&["RPUSH", "bo:list", "a"]).await, Val::Int(1));
    let got = first.read_within(Duration::from_secs(5)).await;
    assert_eq!(got, Some(Val::Arr(vec![Val::s("bo:list"), Val::s("a")])));
    assert_eq!(writer.cmd(&["RPUSH", "bo:list", "b"]).await, Val::Int(1));
    let got = second.read_within(Duration::from_secs(5)).await;
    assert_eq!(got, Some(Val::Arr(vec![Val::s("bo:list"), Val::s("b")])));
}

/// Hold every client of Redis for 300 ms: links opened meanwhile wait to log in.
async fn pause(admin: &mut Conn) {
    assert_eq!(
        admin.cmd(&["CLIENT", "PAUSE", "300", "ALL"]).await,
        Val::s("OK")
    );
}
