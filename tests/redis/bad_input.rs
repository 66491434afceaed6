//! Bad input: malformed RESP, bulk strings over `max_bulk_len`, too-deep nesting, unknown
//! commands, a backend down. The offender gets `-ERR …` (and is disconnected when its
//! stream cannot be trusted); everyone else is unaffected.

use crate::harness::{eventually, metric, Conn, Env, Mode, Val};
use pake::lab::RedisOptions;
use std::time::Duration;

/// Send `bytes`, expect an error containing `want`, then a closed connection.
async fn refused_and_closed(env: &Env, bytes: &[u8], want: &str) {
    let mut c = env.conn().await;
    c.send(bytes).await;
    let reply = c.read().await.expect("an error before the close");
    assert!(
        reply.err_text().contains(want),
        "{reply:?} should mention {want:?}"
    );
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_errors_close_only_the_offender() {
    let env = Env::with(RedisOptions::default(), |c| {
        c.max_bulk_len = pake::config::Bytes(4096);
        c.max_nesting = 2;
    })
    .await;
    let mut bystander = env.conn().await;
    assert_eq!(bystander.cmd(&["SET", "calm", "1"]).await, Val::s("OK"));
    refused_and_closed(&env, b"*1\r\n$x\r\n", "Protocol error: invalid bulk length").await;
    refused_and_closed(
        &env,
        b"*2\r\n$3\r\nGET\r\n:1\r\n",
        "Protocol error: expected '$'",
    )
    .await;
    refused_and_closed(&env, b"*zz\r\n", "invalid multibulk length").await;
    // declared size over the limit: refused at the header, before any payload is sent
    refused_and_closed(
        &env,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n",
        "over max_bulk_len",
    )
    .await;
    refused_and_closed(
        &env,
        b"*1\r\n*1\r\n*1\r\n$1\r\na\r\n",
        "nesting deeper than 2",
    )
    .await;
    refused_and_closed(&env, b"SET k \"unterminated\r\n", "unbalanced quotes").await;
    // a bulk under the limit is fine
    let big = "x".repeat(4000);
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["SET", "big", &big]).await, Val::s("OK"));
    assert_eq!(c.cmd(&["GET", "big"]).await, Val::Str(big));
    assert_eq!(
        bystander.cmd(&["GET", "calm"]).await,
        Val::s("1"),
        "others unaffected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_errors_keep_the_connection() {
    let env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    let unknown = c.cmd(&["FROBNICATE", "a"]).await;
    assert_eq!(
        unknown.err_text(),
        "ERR unknown command 'FROBNICATE', with args beginning with: 'a' "
    );
    assert_eq!(
        c.cmd(&["GET"]).await.err_text(),
        "ERR wrong number of arguments for 'get' command"
    );
    assert!(c
        .cmd(&["SYNC"])
        .await
        .err_text()
        .contains("not supported through Pake"));
    assert!(c
        .cmd(&["CLIENT", "TRACKING", "on", "OPTIN", "OPTOUT"])
        .await
        .err_text()
        .contains("both OPTIN mode and OPTOUT"));
    assert!(c.cmd(&["INCR", "notanumber"]).await == Val::Int(1));
    c.cmd(&["SET", "str", "abc"]).await;
    assert!(c
        .cmd(&["INCR", "str"])
        .await
        .err_text()
        .contains("not an integer"));
    assert_eq!(c.cmd(&["PING"]).await, Val::s("PONG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_is_an_error_and_recovery_rearms() {
    let mut env = Env::start(Mode::Standalone).await;
    let mut c = env.conn().await;
    assert_eq!(c.cmd(&["SET", "d", "1"]).await, Val::s("OK"));
    c.cmd(&["GET", "d"]).await;
    env.lab.kill(0);
    // the cached value must not outlive the tracking connection
    let flushed = eventually(Duration::from_secs(5), || async {
        metric(&env.pake, "pake_redis_tracking_connections") == 0.0
    })
    .await;
    assert!(flushed, "tracking noticed the node is gone");
    let reply = c.cmd(&["GET", "d"]).await;
    assert!(reply.err_text().starts_with("ERR"), "{reply:?}");
    let mut other = Conn::connect(env.addr()).await;
    assert_eq!(
        other.cmd(&["PING"]).await,
        Val::s("PONG"),
        "Pake itself stays up"
    );
    tokio::task::block_in_place(|| env.lab.restart(0)).expect("restart");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while c.cmd(&["SET", "d", "2"]).await != Val::s("OK") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "commands work again once Redis is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.wait_armed(&env.pake).await;
    assert_eq!(c.cmd(&["GET", "d"]).await, Val::s("2"));
    assert!(metric(&env.pake, "pake_redis_backend_errors_total") >= 1.0);
}
