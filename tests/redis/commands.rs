//! Command groups through Pake, written once and run across standalone/cluster and
//! RESP2/RESP3: strings, hashes, lists, sets, sorted sets, pipelining in order, cross-slot
//! multi-key commands, MULTI/EXEC/WATCH, pub/sub, blocking commands, AUTH forwarding.

use crate::harness::{Conn, Env, Mode, Val};
use pake::lab::RedisOptions;
use std::time::Duration;

macro_rules! matrix {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone_resp2() {
                $body(Mode::Standalone, false).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone_resp3() {
                $body(Mode::Standalone, true).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster_resp2() {
                $body(Mode::Cluster, false).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster_resp3() {
                $body(Mode::Cluster, true).await
            }
        }
    };
}

/// A connection through Pake, switched to RESP3 when asked.
async fn client(env: &Env, resp3: bool) -> Conn {
    let mut c = env.conn().await;
    if resp3 {
        let hello = c.cmd(&["HELLO", "3"]).await;
        let Val::Map(fields) = hello else {
            panic!("HELLO 3 must answer a map, got {hello:?}")
        };
        assert!(
            fields.contains(&(Val::s("proto"), Val::Int(3))),
            "{fields:?}"
        );
    }
    c
}

fn arr(items: &[&str]) -> Val {
    Val::Arr(items.iter().map(|s| Val::s(s)).collect())
}

matrix!(groups, groups_body);
async fn groups_body(mode: Mode, resp3: bool) {
    let env = Env::start(mode).await;
    let mut c = client(&env, resp3).await;
    assert_eq!(c.cmd(&["PING"]).await, Val::s("PONG"));
    assert_eq!(c.cmd(&["SET", "s", "hello"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["APPEND", "s", " world"]).await, Val::Int(11));
    assert_eq!(c.cmd(&["GET", "s"]).await, Val::s("hello world"));
    assert_eq!(c.cmd(&["STRLEN", "s"]).await, Val::Int(11));
    assert_eq!(c.cmd(&["GETRANGE", "s", "0", "4"]).await, Val::s("hello"));
    assert_eq!(c.cmd(&["INCR", "n"]).await, Val::Int(1));
    assert_eq!(c.cmd(&["GET", "missing"]).await, Val::Nil);
    assert_eq!(c.cmd(&["HSET", "h", "a", "1", "b", "2"]).await, Val::Int(2));
    assert_eq!(c.cmd(&["HGET", "h", "a"]).await, Val::s("1"));
    assert_eq!(
        c.cmd(&["HMGET", "h", "a", "zz", "b"]).await,
        Val::Arr(vec![Val::s("1"), Val::Nil, Val::s("2")])
    );
    let all = c.cmd(&["HGETALL", "h"]).await;
    let expect_pairs = [(Val::s("a"), Val::s("1")), (Val::s("b"), Val::s("2"))];
    match all {
        Val::Map(m) => assert_eq!(m.len(), 2, "{m:?}"),
        Val::Arr(a) => assert_eq!(a.len(), 4, "{a:?}"),
        other => panic!("HGETALL: {other:?} (want {expect_pairs:?})"),
    }
    assert_eq!(c.cmd(&["RPUSH", "l", "a", "b", "c"]).await, Val::Int(3));
    assert_eq!(
        c.cmd(&["LRANGE", "l", "0", "-1"]).await,
        arr(&["a", "b", "c"])
    );
    assert_eq!(c.cmd(&["SADD", "set", "x"]).await, Val::Int(1));
    assert_eq!(c.cmd(&["SMEMBERS", "set"]).await, arr(&["x"]));
    assert_eq!(
        c.cmd(&["ZADD", "z", "1", "one", "2", "two"]).await,
        Val::Int(2)
    );
    assert_eq!(
        c.cmd(&["ZRANGE", "z", "0", "-1"]).await,
        arr(&["one", "two"])
    );
    assert_eq!(c.cmd(&["EXISTS", "s"]).await, Val::Int(1));
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "tester"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, Val::s("tester"));
    assert_eq!(c.cmd(&["ECHO", "hi"]).await, Val::s("hi"));
    let select = c.cmd(&["SELECT", "1"]).await;
    match mode {
        Mode::Standalone => {
            assert_eq!(select, Val::s("OK"));
            assert_eq!(
                c.cmd(&["GET", "s"]).await,
                Val::Nil,
                "db 1 is another keyspace"
            );
            assert_eq!(c.cmd(&["SELECT", "0"]).await, Val::s("OK"));
        }
        Mode::Cluster => assert!(select.err_text().contains("cluster mode"), "{select:?}"),
    }
    // pipelining: one write, replies in order (writes and cached reads interleaved)
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend(crate::harness::encode(&["INCR", "p"]));
        batch.extend(crate::harness::encode(&["GET", "p"]));
        let _ = i;
    }
    c.send(&batch).await;
    for i in 1..=200 {
        assert_eq!(c.read().await, Some(Val::Int(i)));
        assert_eq!(
            c.read().await,
            Some(Val::s(&i.to_string())),
            "read-your-writes in a pipeline"
        );
    }
    // inline commands
    c.send(b"SET inline \"a b\"\r\nGET inline\r\n").await;
    assert_eq!(c.read().await, Some(Val::s("OK")));
    assert_eq!(c.read().await, Some(Val::s("a b")));
    assert_eq!(c.cmd(&["QUIT"]).await, Val::s("OK"));
    assert!(c.closed().await);
}

matrix!(multikey, multikey_body);
async fn multikey_body(mode: Mode, resp3: bool) {
    let env = Env::start(mode).await;
    let mut c = client(&env, resp3).await;
    let keys: Vec<String> = (0..30).map(|i| format!("mk:{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for k in &keys {
        mset.push(k.clone());
        mset.push(format!("v-{k}"));
    }
    let mset: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(c.cmd(&mset).await, Val::s("OK"));
    // every value really is on its node
    for k in keys.iter().step_by(7) {
        let mut d = env.direct(k).await;
        assert_eq!(d.cmd(&["GET", k]).await, Val::Str(format!("v-{k}")));
    }
    let mut mget: Vec<&str> = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    mget.push("mk:none");
    let mut want: Vec<Val> = keys.iter().map(|k| Val::Str(format!("v-{k}"))).collect();
    want.push(Val::Nil);
    assert_eq!(c.cmd(&mget).await, Val::Arr(want.clone()));
    assert_eq!(
        c.cmd(&mget).await,
        Val::Arr(want),
        "second MGET (from the L1)"
    );
    let mut exists: Vec<&str> = vec!["EXISTS"];
    exists.extend(keys.iter().take(10).map(String::as_str));
    exists.push("mk:none");
    assert_eq!(c.cmd(&exists).await, Val::Int(10));
    exists[0] = "TOUCH";
    assert_eq!(c.cmd(&exists).await, Val::Int(10));
    let mut del: Vec<&str> = vec!["DEL"];
    del.extend(keys.iter().take(5).map(String::as_str));
    assert_eq!(c.cmd(&del).await, Val::Int(5));
    del[0] = "UNLINK";
    assert_eq!(c.cmd(&del).await, Val::Int(0));
    assert_eq!(
        c.cmd(&["MGET", "mk:0", "mk:5"]).await,
        Val::Arr(vec![Val::Nil, Val::s("v-mk:5")])
    );
    let msetnx = c.cmd(&["MSETNX", "a", "1", "b", "2"]).await;
    match mode {
        Mode::Cluster => assert!(msetnx.err_text().starts_with("CROSSSLOT"), "{msetnx:?}"),
        Mode::Standalone => assert_eq!(msetnx, Val::Int(1)),
    }
    assert_eq!(
        c.cmd(&["MSETNX", "{t}a", "1", "{t}b", "2"]).await,
        Val::Int(1)
    );
}

matrix!(transactions, transactions_body);
async fn transactions_body(mode: Mode, resp3: bool) {
    let env = Env::start(mode).await;
    let mut c = client(&env, resp3).await;
    assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["SET", "{t}a", "1"]).await, Val::s("QUEUED"));
    assert_eq!(c.cmd(&["INCR", "{t}a"]).await, Val::s("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]).await,
        Val::Arr(vec![Val::s("OK"), Val::Int(2)])
    );
    assert_eq!(
        c.cmd(&["GET", "{t}a"]).await,
        Val::s("2"),
        "EXEC's writes are not served stale"
    );
    // WATCH: a write by someone else aborts the transaction
    assert_eq!(c.cmd(&["WATCH", "{t}a"]).await, Val::s("OK"));
    let mut other = env.direct("{t}a").await;
    assert_eq!(other.cmd(&["SET", "{t}a", "theirs"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["SET", "{t}a", "mine"]).await, Val::s("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, Val::Nil);
    assert_eq!(c.cmd(&["GET", "{t}a"]).await, Val::s("theirs"));
    assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["SET", "x", "1"]).await, Val::s("QUEUED"));
    assert_eq!(c.cmd(&["DISCARD"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["EXEC"]).await.err_text(), "ERR EXEC without MULTI");
    // an error while queueing (arity, unknown command, a command Pake refuses) discards the
    // whole transaction, as Redis does: nothing of it runs (ioredis's own suite checks this)
    for bad in [
        &["SET", "{t}foo"][..],
        &["NOSUCHCMD", "x"],
        &["SYNC"],
        &["CLIENT", "REPLY", "OFF"],
    ] {
        assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
        assert_eq!(c.cmd(&["INCR", "{t}ctr"]).await, Val::s("QUEUED"));
        assert!(c.cmd(bad).await.is_err(), "{bad:?} is refused");
        assert_eq!(c.cmd(&["INCR", "{t}ctr"]).await, Val::s("QUEUED"));
        let exec = c.cmd(&["EXEC"]).await;
        assert!(
            exec.err_text().starts_with("EXECABORT"),
            "{bad:?}: {exec:?}"
        );
        assert_eq!(c.cmd(&["GET", "{t}ctr"]).await, Val::Nil, "{bad:?}");
    }
    // RESET is not queued: it ends the transaction at once, as in Redis
    assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["INCR", "{t}ctr"]).await, Val::s("QUEUED"));
    assert_eq!(c.cmd(&["RESET"]).await, Val::s("RESET"));
    assert_eq!(c.cmd(&["EXEC"]).await.err_text(), "ERR EXEC without MULTI");
    assert_eq!(c.cmd(&["GET", "{t}ctr"]).await, Val::Nil);
    if mode == Mode::Cluster {
        assert_eq!(c.cmd(&["MULTI"]).await, Val::s("OK"));
        assert_eq!(c.cmd(&["SET", "a", "1"]).await, Val::s("QUEUED"));
        assert!(c
            .cmd(&["SET", "b", "1"])
            .await
            .err_text()
            .starts_with("CROSSSLOT"));
        assert!(c.cmd(&["EXEC"]).await.err_text().starts_with("EXECABORT"));
    }
}

matrix!(pubsub_blocking, pubsub_blocking_body);
async fn pubsub_blocking_body(mode: Mode, resp3: bool) {
    let env = Env::start(mode).await;
    let mut sub = client(&env, resp3).await;
    let mut c = client(&env, resp3).await;
    let confirm = sub.cmd(&["SUBSCRIBE", "news"]).await;
    let items = match confirm {
        Val::Push(i) | Val::Arr(i) => i,
        other => panic!("subscribe confirmation: {other:?}"),
    };
    assert_eq!(items[0], Val::s("subscribe"));
    let mut delivered = false;
    for _ in 0..25 {
        assert!(matches!(
            c.cmd(&["PUBLISH", "news", "hello"]).await,
            Val::Int(_)
        ));
        if matches!(sub.read_within(Duration::from_millis(200)).await,
            Some(Val::Push(m)) | Some(Val::Arr(m)) if m.last() == Some(&Val::s("hello")))
        {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "a published message reaches the subscriber");
    // BLPOP blocks on a dedicated link until someone pushes
    let mut blocked = client(&env, resp3).await;
    blocked
        .send(&crate::harness::encode(&["BLPOP", "queue", "10"]))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.cmd(&["LPUSH", "queue", "job"]).await, Val::Int(1));
    assert_eq!(
        blocked.read().await,
        Some(Val::Arr(vec![Val::s("queue"), Val::s("job")]))
    );
    assert_eq!(
        blocked.cmd(&["PING"]).await,
        Val::s("PONG"),
        "the client goes on after BLPOP"
    );
    let _ = mode;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_forwarded_to_redis() {
    let opts = RedisOptions {
        users: vec![("alice".into(), "wonder".into())],
        ..RedisOptions::default()
    };
    let env = Env::with(opts, |_| {}).await;
    let mut c = env.conn().await;
    let bad = c.cmd(&["AUTH", "alice", "nope"]).await;
    assert!(bad.err_text().contains("WRONGPASS"), "{bad:?}");
    assert_eq!(c.cmd(&["AUTH", "alice", "wonder"]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).await, Val::s("alice"));
    let mut c3 = env.conn().await;
    let hello = c3.cmd(&["HELLO", "3", "AUTH", "alice", "wonder"]).await;
    assert!(matches!(hello, Val::Map(_)), "{hello:?}");
    assert_eq!(c3.cmd(&["ACL", "WHOAMI"]).await, Val::s("alice"));
}
