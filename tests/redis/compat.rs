//! Drop-in behaviour a client library's own test suite expects (issue 16): slot rules only
//! against a cluster, CLIENT commands answered for Pake's own client connections, a
//! Pake-level MONITOR (bounded: a slow monitor is dropped), AUTH/HELLO AUTH verdicts.

use crate::harness::{options, redis_config, start_pake, Conn, Env, Mode, Val};
use pake::lab::RedisOptions;
use std::time::Duration;

fn text(v: &Val) -> String {
    match v {
        Val::Str(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// The `field=value` of one CLIENT LIST line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(' ')
        .find_map(|f| f.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_multi_across_slots_on_a_standalone_redis() {
    let env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    // a, b and c hash to different cluster slots: a single Redis takes them together
    assert_eq!(c.cmd(&["WATCH", "a", "b"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["SET", "c", "1"]).await, Val::s("QUEUED"));
    assert_eq!(c.cmd(&["MSET", "a", "1", "d", "2"]).await, Val::s("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]).await,
        Val::Arr(vec![Val::s("OK"), Val::s("OK")])
    );
    // a touched WATCH still aborts the transaction
    let mut other = env.conn().await;
    assert_eq!(c.cmd(&["WATCH", "a", "zz"]).await, Val::s("OK"));
    assert_eq!(other.cmd(&["SET", "zz", "x"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["GET", "c"]).await, Val::s("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, Val::Nil);
}

/// PING takes one message at most, as Redis's own suite checks (unit/protocol): through Pake
/// `PING x y z` answered `x`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_with_more_than_one_message_is_refused_as_redis_refuses_it() {
    let env = Env::start(Mode::Standalone).await;
    let mut pake = env.conn().await;
    let mut direct = env.direct("x").await;
    for args in [&["PING"][..], &["PING", "x"], &["PING", "x", "y", "z"]] {
        assert_eq!(pake.cmd(args).await, direct.cmd(args).await, "{args:?}");
    }
    assert_eq!(
        pake.cmd(&["PING", "x", "y"]).await.err_text(),
        "ERR wrong number of arguments for 'ping' command"
    );
}

/// A WATCH outlives a SELECT, as in Redis (found with Redis's own suite, unit/multi): the
/// transaction runs in the new db and a touched key of the old one still aborts it. Through
/// Pake the SELECT dropped the link holding the WATCH, and every EXEC after it was nil.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_outlives_a_select() {
    let env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    let mut other = env.conn().await;
    for touched in [false, true] {
        assert_eq!(c.cmd(&["SELECT", "0"]).await, Val::s("OK"));
        assert_eq!(c.cmd(&["WATCH", "w"]).await, Val::s("OK"));
        assert_eq!(c.cmd(&["SELECT", "1"]).await, Val::s("OK"));
        if touched {
            assert_eq!(other.cmd(&["SET", "w", "theirs"]).await, Val::s("OK"));
        }
        assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
        assert_eq!(c.cmd(&["SET", "in1", "mine"]).await, Val::s("QUEUED"));
        let exec = c.cmd(&["EXEC"]).await;
        let want = if touched {
            Val::Nil
        } else {
            Val::Arr(vec![Val::s("OK")])
        };
        assert_eq!(exec, want, "touched: {touched}");
        // the transaction ran (or not) in db 1, and the session is in db 1
        let got = c.cmd(&["GET", "in1"]).await;
        assert_eq!(got == Val::s("mine"), !touched, "{got:?}");
        assert_eq!(c.cmd(&["DEL", "in1"]).await, Val::Int(i64::from(!touched)));
        assert_eq!(c.cmd(&["EXISTS", "w"]).await, Val::Int(0), "db 1 has no w");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_across_slots_is_still_crossslot_on_a_cluster() {
    let env = Env::start(Mode::Cluster).await;
    let mut c = env.conn().await;
    let r = c.cmd(&["WATCH", "a", "b"]).await;
    assert!(r.err_text().starts_with("CROSSSLOT"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_answer_for_pake_connections() {
    let env = Env::start(Mode::Standalone).await;
    let mut a = env.conn().await;
    let mut b = env.conn().await;
    let a_id = match a.cmd(&["CLIENT", "ID"]).await {
        Val::Int(n) => n,
        other => panic!("{other:?}"),
    };
    assert_eq!(a.cmd(&["CLIENT", "SETNAME", "alpha"]).await, Val::s("OK"));
    assert_eq!(
        a.cmd(&["CLIENT", "SETINFO", "lib-name", "compat"]).await,
        Val::s("OK")
    );
    assert_eq!(b.cmd(&["SELECT", "3"]).await, Val::s("OK"));
    let list = text(&b.cmd(&["CLIENT", "LIST"]).await);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "Pake's two clients, not its pool: {list}");
    let a_line = lines
        .iter()
        .find(|l| field(l, "id") == a_id.to_string())
        .unwrap_or_else(|| panic!("client {a_id} in {list}"));
    assert_eq!(field(a_line, "name"), "alpha");
    assert_eq!(field(a_line, "lib-name"), "compat");
    let a_addr = a.stream.tcp().expect("tcp").local_addr().expect("addr");
    assert_eq!(field(a_line, "addr"), a_addr.to_string());
    assert_eq!(field(a_line, "laddr"), env.addr().to_string());
    let info = text(&b.cmd(&["CLIENT", "INFO"]).await);
    assert_eq!(field(&info, "db"), "3");
    assert!(info.ends_with('\n') && info.lines().count() == 1, "{info}");

    // KILL: by id (another client), skipme, by addr (old form), errors
    let r = b.cmd(&["CLIENT", "KILL", "ID", &a_id.to_string()]).await;
    assert_eq!(r, Val::Int(1));
    assert!(a.closed().await, "the killed client is disconnected");
    // a client is registered once Pake has accepted it, which a connect does not wait for (as
    // with Redis): each new client is answered once before another kills it
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["PING"]).await, Val::s("PONG"));
    let c_addr = c.stream.tcp().expect("tcp").local_addr().expect("addr");
    let r = b.cmd(&["CLIENT", "KILL", "ID", "999999"]).await;
    assert_eq!(r, Val::Int(0));
    let r = b.cmd(&["CLIENT", "KILL", "nosuch:1"]).await;
    assert_eq!(r.err_text(), "ERR No such client");
    let r = b
        .cmd(&["CLIENT", "KILL", "LADDR", &env.addr().to_string()])
        .await;
    assert_eq!(r, Val::Int(1), "c only: SKIPME yes by default");
    assert!(c.closed().await);
    let r = b.cmd(&["CLIENT", "KILL", "ID", "0"]).await;
    assert!(r.is_err(), "{r:?}");
    let _ = c_addr;
    let mut d = env.conn().await;
    assert_eq!(d.cmd(&["PING"]).await, Val::s("PONG"));
    let d_addr = d.stream.tcp().expect("tcp").local_addr().expect("addr");
    assert_eq!(
        b.cmd(&["CLIENT", "KILL", &d_addr.to_string()]).await,
        Val::s("OK")
    );
    assert!(d.closed().await);
    // SKIPME no: the caller goes too, after its reply
    let r = b
        .cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no"])
        .await;
    assert_eq!(r, Val::Int(1));
    assert!(b.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_streams_commands_in_redis_format() {
    let env = Env::start(Mode::Standalone).await;
    let mut m = env.conn().await;
    assert_eq!(m.cmd(&["MONITOR"]).await, Val::s("OK"));
    let mut c = env.conn().await;
    let addr = c.stream.tcp().expect("tcp").local_addr().expect("addr");
    assert_eq!(c.cmd(&["SELECT", "2"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["SET", "mk", "a \"b\""]).await, Val::s("OK"));
    assert!(c.cmd(&["AUTH", "secret"]).await.is_err(), "no password set");
    let mut lines = Vec::new();
    while lines.len() < 3 {
        match m.read().await {
            Some(Val::Str(l)) => lines.push(l),
            other => panic!("monitor line: {other:?}"),
        }
    }
    assert!(
        lines[0].ends_with(&format!("[0 {addr}] \"SELECT\" \"2\"")),
        "{lines:?}"
    );
    assert!(
        lines[1].ends_with(&format!("[2 {addr}] \"SET\" \"mk\" \"a \\\"b\\\"\"")),
        "{lines:?}"
    );
    let (secs, _) = lines[1].split_once(' ').expect("time");
    assert!(
        secs.split_once('.')
            .is_some_and(|(s, us)| s.len() >= 10 && us.len() == 6),
        "{secs}"
    );
    assert!(!lines[2].contains("secret"), "AUTH is redacted: {lines:?}");
    // a monitor that hangs up (ioredis half-closes) gets nothing more: a stray +OK is read
    // as the reply to its next command
    use tokio::io::AsyncWriteExt;
    m.stream.shutdown().await.expect("half-close");
    assert_eq!(m.read().await, None, "nothing after the client's EOF");
}

/// RESET ends a MONITOR and the connection goes on as a new one, as in Redis (its own suite,
/// unit/introspection); through Pake the connection was closed after `+OK`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_ends_a_monitor_and_the_connection_goes_on() {
    let env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["SELECT", "2"]).await, Val::s("OK"));
    let mut r = env.conn().await;
    assert_eq!(r.cmd(&["MONITOR"]).await, Val::s("OK"));
    assert_eq!(r.cmd(&["RESET"]).await, Val::s("RESET"));
    assert_eq!(r.cmd(&["PING"]).await, Val::s("PONG"));
    assert_eq!(c.cmd(&["SET", "mk", "2"]).await, Val::s("OK"));
    assert_eq!(
        r.cmd(&["GET", "mk"]).await,
        Val::Nil,
        "reset to db 0, monitoring no more"
    );
    let list = text(&r.cmd(&["CLIENT", "LIST", "TYPE", "normal"]).await);
    assert!(list.lines().count() >= 2, "{list}");
}

/// Redis's ACLs decide who may MONITOR through Pake too: a user without the permission
/// gets Redis's NOPERM (and goes on), not every client's commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_needs_the_permission_redis_gives() {
    let env = Env::start(Mode::Standalone).await;
    let mut admin = env.direct("x").await;
    let setuser = [
        "ACL", "SETUSER", "watcher", "reset", "on", ">pw", "+ping", "+auth",
    ];
    assert_eq!(admin.cmd(&setuser).await, Val::s("OK"));
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["AUTH", "watcher", "pw"]).await, Val::s("OK"));
    let refused = c.cmd(&["MONITOR"]).await;
    assert!(refused.err_text().starts_with("NOPERM"), "{refused:?}");
    assert_eq!(c.cmd(&["PING"]).await, Val::s("PONG"), "the client goes on");
    // the default user may
    let mut m = env.conn().await;
    assert_eq!(m.cmd(&["MONITOR"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["PING"]).await, Val::s("PONG"));
    let line = m.read().await;
    assert!(
        matches!(&line, Some(Val::Str(l)) if l.ends_with("\"PING\"")),
        "{line:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_monitor_is_dropped_and_others_keep_going() {
    let env = Env::start(Mode::Standalone).await;
    let mut slow = env.conn().await;
    assert_eq!(slow.cmd(&["MONITOR"]).await, Val::s("OK"));
    let mut c = env.conn().await;
    // 48 MiB of commands while the monitor reads nothing: far past the 4 MiB budget and
    // what the sockets buffer; the writer is never held up
    let big = "x".repeat(1 << 20);
    for i in 0..48 {
        assert_eq!(
            c.cmd(&["SET", &format!("big{i}"), &big]).await,
            Val::s("OK")
        );
    }
    let mut last = None;
    while let Some(v) = slow.read_within(Duration::from_secs(5)).await {
        last = Some(v);
    }
    let last = last.expect("some monitor output");
    assert!(
        last.err_text().contains("MONITOR dropped by Pake"),
        "{:?}",
        last.err_text().get(..80)
    );
    assert_eq!(c.cmd(&["PING"]).await, Val::s("PONG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_verdicts_come_from_redis() {
    let opts = RedisOptions {
        password: Some("pw".into()),
        users: vec![("app".into(), "apppw".into())],
        ..options(Mode::Standalone)
    };
    let env = Env::with(opts, |_| {}).await;
    let mut c: Conn = env.conn().await;
    let r = c.cmd(&["AUTH", "wrong"]).await;
    assert!(r.err_text().starts_with("WRONGPASS"), "{r:?}");
    let r = c.cmd(&["AUTH", "app", "wrong"]).await;
    assert!(r.err_text().starts_with("WRONGPASS"), "{r:?}");
    let r = c.cmd(&["HELLO", "3", "AUTH", "app", "apppw"]).await;
    assert!(matches!(r, Val::Map(_)), "{r:?}");
    let who = c.cmd(&["ACL", "WHOAMI"]).await;
    assert_eq!(who, Val::s("app"));
    let r = c.cmd(&["HELLO", "3", "AUTH", "app", "nope"]).await;
    assert!(r.err_text().starts_with("WRONGPASS"), "{r:?}");
}

/// A client that has not logged in, in front of a Redis with a password: Pake answers each
/// command with Redis's own bytes (unknown and arity errors first, then `-NOAUTH`; HELLO
/// without AUTH refused; RESET and QUIT allowed), and a pipeline behind AUTH runs once it
/// is in. Before, such a client ran every command as the URL's user. With
/// `require_client_auth = false` it still does, by choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_logs_in_where_redis_asks_it_to() {
    let opts = RedisOptions {
        password: Some("pw".into()),
        ..options(Mode::Standalone)
    };
    let env = Env::with(opts, |_| {}).await;
    let steps: &[&[&str]] = &[
        &["PING"],
        &["GET", "k"],
        &["NOPE", "x"],
        &["GET"],
        &["CLIENT", "ID"],
        &["MULTI"],
        &["SELECT", "1"],
        &["HELLO", "3"],
        &["HELLO"],
        &["RESET"],
        &["GET", "k"],
        &["AUTH", "default", "wrong"],
        &["GET", "k"],
        &["AUTH", "pw"],
        &["SET", "k", "v"],
        &["GET", "k"],
        &["RESET"],
        &["GET", "k"],
        &["HELLO", "2", "AUTH", "default", "pw"],
        &["GET", "k"],
    ];
    let mut transcripts = Vec::new();
    for mut c in [env.direct("k").await, env.conn().await] {
        let mut t = Vec::new();
        for step in steps {
            let reply = raw(&mut c, step).await;
            // HELLO's map names the server's own id and version: compare its first line
            let reply = match step.first() == Some(&"HELLO") && reply.first() != Some(&b'-') {
                true => b"*map*".to_vec(),
                false => reply,
            };
            t.push(format!("{step:?} -> {}", String::from_utf8_lossy(&reply)));
        }
        transcripts.push(t);
    }
    assert_eq!(transcripts[0], transcripts[1], "Redis, then Pake");
    assert!(
        transcripts[1][1].contains("-NOAUTH Authentication required."),
        "{:?}",
        transcripts[1]
    );
    // behind AUTH in one write: the GET runs logged in
    let mut c = env.conn().await;
    c.send(
        &[
            crate::harness::encode(&["AUTH", "pw"]),
            crate::harness::encode(&["GET", "k"]),
        ]
        .concat(),
    )
    .await;
    assert_eq!(c.read().await, Some(Val::s("OK")));
    assert_eq!(c.read().await, Some(Val::s("v")));

    let open = start_pake({
        let mut rc = redis_config(env.lab.url());
        rc.require_client_auth = Some(false);
        rc
    })
    .await;
    let mut c = Conn::connect(open.redis_addr.expect("redis listener")).await;
    assert_eq!(
        c.cmd(&["GET", "k"]).await,
        Val::s("v"),
        "require_client_auth = false: the URL's user"
    );
}

/// Send `args` and return the reply's bytes exactly as they came.
async fn raw(c: &mut Conn, args: &[&str]) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    c.send(&crate::harness::encode(args)).await;
    let mut buf = bytes::BytesMut::new();
    let limits = pake::redis::resp::Limits::backend();
    loop {
        if let Ok(Some(n)) = pake::redis::resp::scan(&buf, 0, &limits) {
            assert_eq!(n, buf.len(), "one reply");
            return buf.to_vec();
        }
        let read = tokio::time::timeout(Duration::from_secs(10), c.stream.read_buf(&mut buf));
        assert!(
            read.await.expect("reply in time").expect("read") > 0,
            "closed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_replies_pass_byte_exact_and_cluster_only_commands_are_refused() {
    let env = Env::start(Mode::Standalone).await;
    let mut through = env.conn().await;
    let mut direct = env.direct("k").await;
    for c in [&mut through, &mut direct] {
        assert!(matches!(c.cmd(&["HELLO", "3"]).await, Val::Map(_)));
    }
    // sets of maps (COMMAND INFO) and set order (GETKEYSANDFLAGS) as Redis wrote them
    for args in [
        &["COMMAND", "INFO", "GET", "LMOVE"][..],
        &[
            "COMMAND",
            "GETKEYSANDFLAGS",
            "LMOVE",
            "a",
            "b",
            "LEFT",
            "RIGHT",
        ],
    ] {
        assert_eq!(
            String::from_utf8_lossy(&raw(&mut through, args).await),
            String::from_utf8_lossy(&raw(&mut direct, args).await),
            "{args:?}"
        );
    }
    let r = through.cmd(&["READONLY"]).await;
    assert_eq!(
        r.err_text(),
        "ERR This instance has cluster support disabled"
    );
    // CLIENT LIST names each client's last command (a subscriber's is subscribe)
    let mut sub = env.conn().await;
    assert!(matches!(sub.cmd(&["SUBSCRIBE", "ch"]).await, Val::Arr(_)));
    let list = text(&through.cmd(&["CLIENT", "LIST"]).await);
    let line = list
        .lines()
        .find(|l| field(l, "flags") == "P")
        .unwrap_or_else(|| panic!("the subscriber in {list}"));
    assert_eq!(field(line, "cmd"), "subscribe");
}

/// A named client that subscribes keeps its name: once subscribed its connection is Redis's
/// (a dedicated link), which now carries the name (ioredis names its connection, subscribes,
/// unsubscribes, then checks CLIENT GETNAME).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_keeps_its_name() {
    let env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    assert_eq!(
        c.cmd(&["CLIENT", "SETNAME", "niceName"]).await,
        Val::s("OK")
    );
    let confirm = c.cmd(&["SUBSCRIBE", "names"]).await;
    assert!(matches!(confirm, Val::Arr(_) | Val::Push(_)), "{confirm:?}");
    let gone = c.cmd(&["UNSUBSCRIBE", "names"]).await;
    assert!(matches!(gone, Val::Arr(_) | Val::Push(_)), "{gone:?}");
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, Val::s("niceName"));
}

/// CLIENT REPLY OFF / ON / SKIP: the commands run, their replies are dropped (also L1 hits
/// and errors); ON answers OK; RESET turns replies back on (redis-py's test_client_reply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_off_on_and_skip() {
    let env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["SET", "reply:k", "0"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["GET", "reply:k"]).await, Val::s("0"), "cached");
    let mut batch = Vec::new();
    for cmd in [
        &["CLIENT", "REPLY", "OFF"][..],
        &["GET", "reply:k"],
        &["SET", "reply:k", "1"],
        &["NOSUCHCMD"],
        &["CLIENT", "REPLY", "SKIP"],
        &["INCR", "reply:n"],
        &["CLIENT", "REPLY", "ON"],
        &["GET", "reply:k"],
        &["CLIENT", "REPLY", "SKIP"],
        &["SET", "reply:k", "2"],
        &["GET", "reply:k"],
        &["CLIENT", "REPLY", "OFF"],
        &["RESET"],
        &["GET", "reply:n"],
    ] {
        batch.extend(crate::harness::encode(cmd));
    }
    c.send(&batch).await;
    let mut got = Vec::new();
    while let Some(v) = c.read_within(Duration::from_millis(500)).await {
        got.push(v);
    }
    let want = [
        Val::s("OK"),
        Val::s("1"),
        Val::s("2"),
        Val::s("RESET"),
        Val::s("1"),
    ];
    assert_eq!(got, want);
}

/// CLIENT UNBLOCK names a client by the id Pake gave it: its blocked command (on Pake's
/// dedicated link) returns as Redis unblocks it, nil for TIMEOUT, -UNBLOCKED for ERROR; a
/// client not blocked gets 0 (redis-py's test_client_unblock, ioredis's client.ts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_unblock_by_pakes_id() {
    let env = Env::start(Mode::Standalone).await;
    let mut a = env.conn().await;
    let mut b = env.conn().await;
    let Val::Int(id) = a.cmd(&["CLIENT", "ID"]).await else {
        panic!("client id")
    };
    let id = id.to_string();
    assert_eq!(b.cmd(&["CLIENT", "UNBLOCK", &id]).await, Val::Int(0));
    for (mode, want_err) in [("TIMEOUT", false), ("ERROR", true)] {
        a.send(&crate::harness::encode(&["BLPOP", "unblock:none", "0"]))
            .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // blocked at Redis: `flags=b` in CLIENT LIST, as Redis shows it (its own suite
        // waits on it)
        let flags = |v: Val| field(text(&v).trim(), "flags").to_string();
        while flags(b.cmd(&["CLIENT", "LIST", "ID", &id]).await) != "b" {
            assert!(std::time::Instant::now() < deadline, "{mode}: never b");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while b.cmd(&["CLIENT", "UNBLOCK", &id, mode]).await != Val::Int(1) {
            assert!(
                std::time::Instant::now() < deadline,
                "{mode}: never unblocked"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = a.read().await.expect("the blocked command returns");
        match want_err {
            true => assert!(got.err_text().starts_with("UNBLOCKED"), "{got:?}"),
            false => assert_eq!(got, Val::Nil, "{mode}"),
        }
        assert_eq!(a.cmd(&["PING"]).await, Val::s("PONG"));
        assert_eq!(flags(b.cmd(&["CLIENT", "LIST", "ID", &id]).await), "N");
    }
    let bad = b.cmd(&["CLIENT", "UNBLOCK", &id, "SOON"]).await;
    assert!(bad.err_text().contains("TIMEOUT or ERROR"), "{bad:?}");
    // ioredis's way: once CLIENT LIST shows the client in BLPOP, one UNBLOCK unblocks it
    // (Pake lists the command when it arrives, before its link is ready at Redis: a new
    // client's first blocking command waits for a link and its id)
    for round in 0..30 {
        let mut a = env.conn().await;
        let Val::Int(id) = a.cmd(&["CLIENT", "ID"]).await else {
            panic!("client id")
        };
        let id = id.to_string();
        a.send(&crate::harness::encode(&["BLPOP", "unblock:none", "0"]))
            .await;
        loop {
            let list = b.cmd(&["CLIENT", "LIST", "ID", &id]).await;
            if format!("{list:?}").contains("cmd=blpop") {
                break;
            }
        }
        let n = b.cmd(&["CLIENT", "UNBLOCK", &id]).await;
        assert_eq!(n, Val::Int(1), "round {round}");
        assert_eq!(a.read().await, Some(Val::Nil), "round {round}");
        assert_eq!(a.cmd(&["PING"]).await, Val::s("PONG"));
    }
}

/// A client that sends its commands and half-closes at once still gets every reply, as from
/// Redis (ioredis closes after a WRONGTYPE in a pipelined MULTI; Pake dropped EXEC's reply
/// more often than not) — up to a command that would block, which Redis drops with the
/// client, and what follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_owed_at_a_half_close_are_written() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start(Mode::Standalone).await;
    let mut batch = Vec::new();
    for cmd in [
        &["MULTI"][..],
        &["SET", "hc:k", "1"],
        &["INCR", "hc:k"],
        &["EXEC"],
        &["GET", "hc:k"],
        &["BLPOP", "hc:none", "0"],
        &["PING"],
    ] {
        batch.extend(crate::harness::encode(cmd));
    }
    for round in 0..30 {
        let mut c = env.conn().await;
        c.send(&batch).await;
        c.stream.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        while let Some(v) = c.read().await {
            got.push(v);
        }
        let want = [
            Val::s("OK"),
            Val::s("QUEUED"),
            Val::s("QUEUED"),
            Val::Arr(vec![Val::s("OK"), Val::Int(2)]),
            Val::s("2"),
        ];
        assert_eq!(got, want, "round {round}");
    }
}

/// A client that sends a blocking command and hangs up at once loses nothing Redis would
/// not take from it directly: Redis drops a blocked client at its EOF, writing what it had
/// answered first. An element already there is popped and written to the half-closed
/// client; on an empty list nothing is left waiting, so an element pushed once the client
/// sees its connection close stays in the list. Before, Pake read the EOF, dropped the link
/// unread and closed the client: the first element was popped and lost, and a push racing
/// the link's close was taken by the abandoned BLPOP (ioredis's reconnect test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_cut_off_by_a_hang_up_takes_nothing_away() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start(Mode::Standalone).await;
    let mut direct = env.direct("bq:ready").await;
    for round in 0..10 {
        assert_eq!(direct.cmd(&["RPUSH", "bq:ready", "v"]).await, Val::Int(1));
        let mut c = env.conn().await;
        c.send(&crate::harness::encode(&["BLPOP", "bq:ready", "0"]))
            .await;
        c.stream.shutdown().await.expect("half-close");
        let got = c.read().await;
        let want = Val::Arr(vec![Val::s("bq:ready"), Val::s("v")]);
        assert_eq!(
            got,
            Some(want),
            "round {round}: the popped element is the client's"
        );
        assert!(c.closed().await);

        let mut c = env.conn().await;
        c.send(&crate::harness::encode(&["BLPOP", "bq:empty", "0"]))
            .await;
        c.stream.shutdown().await.expect("half-close");
        assert!(
            c.read().await.is_none(),
            "round {round}: no reply, then the close"
        );
        assert_eq!(direct.cmd(&["RPUSH", "bq:empty", "w"]).await, Val::Int(1));
        assert_eq!(
            direct.cmd(&["LPOP", "bq:empty"]).await,
            Val::s("w"),
            "round {round}: nothing blocks on the list any more"
        );
    }
}

/// Replies queued before a blocking command leave before it waits: a PING pipelined ahead
/// of a BLPOP is answered at once, as by Redis (Pake held it until the BLPOP returned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_before_a_blocking_command_are_not_held_back() {
    let env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    let mut batch = crate::harness::encode(&["PING"]);
    batch.extend(crate::harness::encode(&["BLPOP", "hold:none", "3"]));
    c.send(&batch).await;
    let first = c.read_within(Duration::from_millis(1500)).await;
    assert_eq!(
        first,
        Some(Val::s("PONG")),
        "the PING's reply waited for the BLPOP"
    );
    assert_eq!(c.read().await, Some(Val::Nil));
}

/// A client with `CLIENT REPLY OFF` still gets its subscriptions' confirmations and
/// messages, in RESP3 and RESP2, as from Redis (its own suite, unit/pubsub, hung on it
/// through Pake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_confirmations_are_pushed_with_replies_off() {
    let env = Env::start(Mode::Standalone).await;
    // RESP2 too: Redis writes them whatever the reply mode (keyspace notifications' tests)
    for resp3 in [true, false] {
        let mut transcripts = Vec::new();
        for through_pake in [false, true] {
            let mut c = match through_pake {
                true => env.conn().await,
                false => env.direct("x").await,
            };
            let mut publisher = env.conn().await;
            if resp3 {
                assert!(!c.cmd(&["HELLO", "3"]).await.is_err());
            }
            c.send(&crate::harness::encode(&["CLIENT", "REPLY", "OFF"]))
                .await;
            c.send(&crate::harness::encode(&["PSUBSCRIBE", "roff*"]))
                .await;
            let mut got = vec![c.read_within(Duration::from_secs(5)).await];
            assert_eq!(publisher.cmd(&["PUBLISH", "roff", "m"]).await, Val::Int(1));
            got.push(c.read_within(Duration::from_secs(5)).await);
            transcripts.push(got);
        }
        assert!(
            transcripts[0].iter().all(Option::is_some),
            "{transcripts:?}"
        );
        assert_eq!(
            transcripts[0], transcripts[1],
            "resp3 {resp3}: direct, then Pake"
        );
    }
}

/// A long script, or a write held by `CLIENT PAUSE`, holds up the shared link it went on;
/// the command that ends it goes on a connection of its own (`rescue.rs`). With one reactor
/// thread every client of Pake shares that link, so before, the rescue queued behind what
/// it was sent to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_kill_and_client_unpause_reach_a_server_held_up() {
    let env = Env::with(options(Mode::Standalone), |c| c.threads = 1).await;
    let mut direct = env.direct("k").await;
    let limit = direct
        .cmd(&["CONFIG", "SET", "lua-time-limit", "100"])
        .await;
    assert_eq!(limit, Val::s("OK"));
    let mut runner = env.conn().await;
    let mut rescuer = env.conn().await;
    let spin = crate::harness::encode(&["EVAL", "while true do end", "0"]);
    runner.send(&spin).await;
    let mut tries = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let kill = crate::harness::encode(&["SCRIPT", "KILL"]);
        rescuer.send(&kill).await;
        match rescuer.read_within(Duration::from_secs(10)).await {
            Some(v) if v == Val::s("OK") => break,
            // the script has not started yet
            Some(v) if v.err_text().starts_with("NOTBUSY") && tries < 20 => tries += 1,
            other => panic!("SCRIPT KILL: {other:?}"),
        }
    }
    let ended = runner.read_within(Duration::from_secs(10)).await;
    let ended = ended.map(|v| v.err_text()).unwrap_or_default();
    assert!(ended.contains("killed"), "the script's reply: {ended}");
    assert_eq!(runner.cmd(&["PING"]).await, Val::s("PONG"));

    assert_eq!(
        rescuer.cmd(&["CLIENT", "PAUSE", "30000", "WRITE"]).await,
        Val::s("OK")
    );
    runner
        .send(&crate::harness::encode(&["SET", "held", "1"]))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let unpause = crate::harness::encode(&["CLIENT", "UNPAUSE"]);
    rescuer.send(&unpause).await;
    let unpaused = rescuer.read_within(Duration::from_secs(10)).await;
    assert_eq!(unpaused, Some(Val::s("OK")), "CLIENT UNPAUSE");
    let held = runner.read_within(Duration::from_secs(10)).await;
    assert_eq!(held, Some(Val::s("OK")), "the held write, once unpaused");
    assert_eq!(runner.cmd(&["GET", "held"]).await, Val::s("1"));

    // a cluster asks every primary: one that ended something answers for all
    let env = Env::start(Mode::Cluster).await;
    let mut c = env.conn().await;
    let idle = c.cmd(&["SCRIPT", "KILL"]).await.err_text();
    assert!(idle.starts_with("NOTBUSY"), "{idle}");
    assert_eq!(c.cmd(&["CLIENT", "UNPAUSE"]).await, Val::s("OK"));
}

/// Redis skips a request of zero or a negative count (its protocol unit sends `*-10`) and
/// reads on; Pake closed the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_negative_request_count_is_skipped() {
    let env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    c.send(b"*-10\r\n*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").await;
    let pong = c.read_within(Duration::from_secs(5)).await;
    assert_eq!(pong, Some(Val::s("PONG")));
    assert_eq!(c.cmd(&["ECHO", "still here"]).await, Val::s("still here"));
}

/// Commands Redis's own suite calls that Pake's table lacked (its hyperloglog unit stopped
/// at PFSELFTEST): each answers as Redis does, or says why Pake refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperloglog_internals_and_cluster_chatter_answer_as_redis() {
    let env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    let mut direct = env.direct("hll").await;
    for conn in [&mut c, &mut direct] {
        conn.cmd(&["DEL", "hll"]).await;
        assert_eq!(
            conn.cmd(&["PFADD", "hll", "a", "b", "c"]).await,
            Val::Int(1)
        );
    }
    assert_eq!(c.cmd(&["PFSELFTEST"]).await, Val::s("OK"));
    let regs = c.cmd(&["PFDEBUG", "GETREG", "hll"]).await;
    assert_eq!(regs, direct.cmd(&["PFDEBUG", "GETREG", "hll"]).await);
    assert!(matches!(&regs, Val::Arr(r) if r.len() == 16384), "{regs:?}");
    assert_eq!(c.cmd(&["PFCOUNT", "hll"]).await, Val::Int(3));
    let asking = c.cmd(&["ASKING"]).await;
    assert_eq!(
        asking,
        direct.cmd(&["ASKING"]).await,
        "standalone: no cluster"
    );
    for refused in [&["FAILOVER"][..], &["REPLCONF", "listening-port", "1"]] {
        let e = c.cmd(refused).await.err_text();
        assert!(e.contains("directly"), "{refused:?}: {e}");
    }
}
