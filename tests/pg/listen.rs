//! LISTEN/NOTIFY through transaction pooling: one listening connection per database, every
//! notification to every client listening on its channel, UNLISTEN honoured, and a client
//! that never reads its notifications dropped without costing the others theirs.

use crate::harness::{Env, Opts, Raw};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// A client through Pake whose notifications arrive on the returned channel.
async fn listener(env: &Env) -> (Client, mpsc::UnboundedReceiver<(String, String)>) {
    let (client, mut conn) = tokio_postgres::connect(&env.url("postgres"), NoTls)
        .await
        .expect("connect through pake");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    (client, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, String) {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a notification in time")
        .expect("connection open")
}

/// Pake in transaction mode over `pool_size` servers.
async fn pooled(pool_size: usize) -> Env {
    Env::with(Opts {
        pool_size,
        ..Opts::default()
    })
    .await
}

/// A raw client of Pake, logged in as the lab's user.
async fn raw(env: &Env) -> Raw {
    Raw::login(env, &env.lab.user, &env.lab.password, "postgres")
        .await
        .expect("login")
}

/// The pid the next notification names, read with the replies up to a ReadyForQuery (it
/// comes before or after them).
async fn named_until_ready(listener: &mut Raw) -> i32 {
    let (mut from, mut ready) = (None, false);
    while from.is_none() || !ready {
        let (tag, body) = listener.read().await.expect("a reply");
        if tag == b'A' {
            from = Some(i32::from_be_bytes([body[0], body[1], body[2], body[3]]));
        }
        ready |= tag == b'Z';
    }
    from.unwrap_or_default()
}

async fn listening_backends(env: &Env) -> i64 {
    env.direct()
        .await
        .query_one(
            "select count(*) from pg_stat_activity where application_name = 'pake-listen'",
            &[],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn notifications_reach_every_listening_client_through_transaction_pooling() {
    let env = pooled(3).await;
    let mut clients = Vec::new();
    for i in 0..100 {
        let (c, rx) = listener(&env).await;
        c.batch_execute("LISTEN Jobs").await.expect("listen");
        if i % 2 == 1 {
            c.batch_execute("LISTEN marker")
                .await
                .expect("listen marker");
        }
        // a transaction on whatever server the pool gives: the subscription stays
        c.batch_execute("BEGIN; SELECT 1; COMMIT")
            .await
            .expect("transaction");
        clients.push((c, rx));
    }
    assert_eq!(listening_backends(&env).await, 1);
    let sender = env.direct().await;
    for n in 0..20 {
        sender
            .batch_execute(&format!("NOTIFY jobs, 'n{n}'; NOTIFY other, 'x'"))
            .await
            .expect("notify");
    }
    for (_, rx) in clients.iter_mut() {
        for n in 0..20 {
            assert_eq!(next(rx).await, ("jobs".to_string(), format!("n{n}")));
        }
    }
    // the odd half leaves jobs; `marker` closes the sequence for them
    for (c, _) in clients.iter().skip(1).step_by(2) {
        c.batch_execute("UNLISTEN jobs").await.expect("unlisten");
    }
    sender
        .batch_execute("NOTIFY jobs, 'late'; NOTIFY marker, 'end'")
        .await
        .expect("notify");
    for (i, (_, rx)) in clients.iter_mut().enumerate() {
        if i % 2 == 0 {
            assert_eq!(next(rx).await, ("jobs".into(), "late".into()));
        } else {
            assert_eq!(next(rx).await, ("marker".into(), "end".into()));
        }
    }
    let (status, metrics) = crate::harness::http_get(&env.admin_url("/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("pake_pg_listen_channels{database=\"postgres\"} 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("listen"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // everyone gone: the listening connection ends
    drop(clients);
    for _ in 0..100 {
        if listening_backends(&env).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the listening connection outlived its last client");
}

#[tokio::test]
async fn a_client_that_never_reads_notifications_is_dropped_and_others_get_all_of_theirs() {
    let env = Env::with(Opts {
        tweak: |c| c.general.listen_queue_size = pake::config::Bytes(64 << 10),
        ..Opts::default()
    })
    .await;
    let mut stalled = Raw::login(&env, &env.lab.user, &env.lab.password, "postgres")
        .await
        .expect("login");
    stalled
        .send(&crate::harness::frame(b'Q', b"LISTEN flood\0"))
        .await;
    loop {
        let (tag, _) = stalled.read().await.expect("LISTEN answered");
        if tag == b'Z' {
            break;
        }
    }
    let (good, mut rx) = listener(&env).await;
    good.batch_execute("LISTEN flood").await.expect("listen");
    // 5,000 notifications of ~4 KB: far more than the stalled client's sockets and queue hold
    let sender = env.direct().await;
    for batch in 0..25 {
        sender
            .batch_execute(&format!(
                "SELECT pg_notify('flood', {batch} * 200 + g || repeat('x', 4000)) \
                 FROM generate_series(0, 199) g"
            ))
            .await
            .expect("notify");
    }
    for n in 0..5000 {
        let (ch, payload) = next(&mut rx).await;
        assert_eq!(ch, "flood");
        assert!(
            payload.starts_with(&format!("{n}x")),
            "{n}: {}",
            &payload[..10]
        );
    }
    // the stalled client finds what its sockets held, then the end of its connection (with
    // the reason when it still fitted in the socket: a client that never reads may not see it)
    let mut notifications = 0;
    while let Some((tag, body)) = stalled.read().await {
        match tag {
            b'A' => notifications += 1,
            b'E' => assert_eq!(crate::harness::sqlstate(&body), "54000"),
            other => panic!("unexpected message {}", other as char),
        }
    }
    assert!(notifications < 5000, "{notifications}");
    use tokio::io::AsyncReadExt;
    let eof = tokio::time::timeout(Duration::from_secs(5), stalled.stream.read(&mut [0u8; 1]))
        .await
        .expect("closed, not just quiet");
    assert!(matches!(eof, Ok(0) | Err(_)), "{eof:?}");
    let (_, metrics) = crate::harness::http_get(&env.admin_url("/metrics")).await;
    assert!(
        metrics.contains("pake_pg_listen_clients_dropped_total{database=\"postgres\"} 1"),
        "dropped counter"
    );
    // and the good client still works
    good.batch_execute("SELECT 1").await.expect("still served");
}

/// Read messages up to and including one with `until`; their tags in order.
async fn tags_until(raw: &mut Raw, until: u8) -> Vec<u8> {
    let mut tags = Vec::new();
    loop {
        let (tag, body) = raw.read().await.expect("a reply");
        assert_ne!(tag, b'E', "error {}", crate::harness::sqlstate(&body));
        tags.push(tag);
        if tag == until {
            return tags;
        }
    }
}

#[tokio::test]
async fn listen_over_the_extended_protocol_is_multiplexed_and_names_the_sender_as_pake_does() {
    use crate::harness::frame;
    let env = pooled(2).await;
    let mut listener = raw(&env).await;
    // asyncpg's add_listener: Parse + Describe + Flush, then Bind + Execute + Sync
    let mut prepare = frame(b'P', b"s1\0LISTEN ext\0\0\0");
    prepare.extend(frame(b'D', b"Ss1\0"));
    prepare.extend(frame(b'H', b""));
    listener.send(&prepare).await;
    assert_eq!(tags_until(&mut listener, b'n').await, b"1tn");
    let mut run = frame(b'B', b"\0s1\0\0\0\0\0\0\0");
    run.extend(frame(b'E', b"\0\0\0\0\0"));
    run.extend(frame(b'S', b""));
    listener.send(&run).await;
    assert_eq!(tags_until(&mut listener, b'Z').await, b"2CZ");
    // JDBC's shape: the unnamed statement, described as a portal, in one batch
    let mut jdbc = frame(b'P', b"\0LISTEN \"Ext2\"\0\0\0");
    jdbc.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
    jdbc.extend(frame(b'D', b"P\0"));
    jdbc.extend(frame(b'E', b"\0\0\0\0\0"));
    jdbc.extend(frame(b'S', b""));
    listener.send(&jdbc).await;
    assert_eq!(tags_until(&mut listener, b'Z').await, b"12nCZ");
    // not pinned: the one listening connection listens, no pooled server does
    assert_eq!(listening_backends(&env).await, 1);
    let (_, metrics) = crate::harness::http_get(&env.admin_url("/metrics")).await;
    assert!(
        metrics.contains("pake_pg_pinned_clients{database=\"postgres\",user=\"pake\"} 0"),
        "no pinned client"
    );
    // a notification names its sender by the pid Pake gave it, as get_server_pid() knows it
    let mut sender = raw(&env).await;
    assert_ne!(sender.pid, listener.pid);
    sender
        .send(&frame(b'Q', b"NOTIFY ext, 'one'; NOTIFY \"Ext2\", 'two'\0"))
        .await;
    tags_until(&mut sender, b'Z').await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let (tag, body) = listener.read().await.expect("a notification");
        assert_eq!(tag, b'A');
        let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let mut rest = body[4..].split(|&b| b == 0).map(String::from_utf8_lossy);
        let (channel, payload) = (
            rest.next().unwrap_or_default(),
            rest.next().unwrap_or_default(),
        );
        got.push((pid, channel.to_string(), payload.to_string()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            (sender.pid, "Ext2".to_string(), "two".to_string()),
            (sender.pid, "ext".to_string(), "one".to_string()),
        ]
    );
}

/// A `LISTEN` read while the listening connection still runs the `UNLISTEN` of the channel's
/// last listener listens again once that is done: it was answered at once, and the server
/// left not listening (psycopg's `test_notify`, a new connection listening as the last one
/// leaves).
#[tokio::test]
async fn a_listen_right_after_the_last_unlisten_still_listens() {
    let env = pooled(2).await;
    let sender = env.direct().await;
    let (mut leaving, mut leaving_rx) = listener(&env).await;
    let (mut coming, mut coming_rx) = listener(&env).await;
    for round in 0..20 {
        leaving.batch_execute("LISTEN hand").await.expect("listen");
        // answered at once; the server's UNLISTEN runs after it
        leaving
            .batch_execute("UNLISTEN hand")
            .await
            .expect("unlisten");
        coming.batch_execute("LISTEN hand").await.expect("listen");
        sender
            .batch_execute(&format!("NOTIFY hand, 'r{round}'"))
            .await
            .expect("notify");
        assert_eq!(
            next(&mut coming_rx).await,
            ("hand".to_string(), format!("r{round}")),
            "round {round}"
        );
        coming
            .batch_execute("UNLISTEN hand")
            .await
            .expect("unlisten");
        std::mem::swap(&mut leaving, &mut coming);
        // a notification the one that left still got would fail the next round
        std::mem::swap(&mut leaving_rx, &mut coming_rx);
    }
}

/// The listening connection receives a notification a moment after the sending transaction
/// commits; the server it came from must not serve another client before then, or the
/// notification would name that client as its sender (pgjdbc's `select pg_notify(?, ?)`
/// followed at once by the listener's own statement on the same server named the listener).
#[tokio::test]
async fn a_notification_names_its_sender_even_when_the_server_moves_on_at_once() {
    use crate::harness::frame;
    let env = pooled(1).await;
    let mut listener = raw(&env).await;
    let mut sender = raw(&env).await;
    listener.send(&frame(b'Q', b"LISTEN race\0")).await;
    tags_until(&mut listener, b'Z').await;
    for i in 0..20 {
        // pg_notify (NOTIFY's function form) running, the listener's statement waiting
        let call = format!("select pg_notify('race', '{i}'), pg_sleep(0.1)\0");
        sender.send(&frame(b'Q', call.as_bytes())).await;
        // queued for the one server: it gets it the moment the sender's transaction ends
        tokio::time::sleep(Duration::from_millis(20)).await;
        listener.send(&frame(b'Q', b"select 1\0")).await;
        tags_until(&mut sender, b'Z').await;
        assert_eq!(
            named_until_ready(&mut listener).await,
            sender.pid,
            "notification {i}: named the listener"
        );
    }
}

/// A server writes its own session's notifications before the ReadyForQuery that ends the
/// notifying transaction, and psycopg's and pgjdbc's handlers count on it (psycopg's
/// `test_notify_handlers` checks them right after `execute`). Through Pake the client's
/// NOTIFY runs on a pooled server and reaches it through the listening connection: the
/// ReadyForQuery waits for that, for a plain NOTIFY, `pg_notify` in an explicit transaction,
/// and a NOTIFY to a channel another client listens on (told only once that one has it).
#[tokio::test]
async fn a_listening_client_gets_its_own_notification_before_ready_for_query() {
    use crate::harness::{frame, query};
    let env = pooled(2).await;
    let mut me = raw(&env).await;
    me.send(&query("LISTEN mine")).await;
    tags_until(&mut me, b'Z').await;
    for i in 0..20 {
        me.send(&query(&format!("NOTIFY mine, 'n{i}'"))).await;
        let tags = tags_until(&mut me, b'Z').await;
        assert_eq!(tags, b"CAZ", "round {i}: notification before ReadyForQuery");
    }
    me.send(&query("BEGIN")).await;
    tags_until(&mut me, b'Z').await;
    me.send(&frame(b'Q', b"select pg_notify('mine', 'in tx')\0"))
        .await;
    assert_eq!(
        tags_until(&mut me, b'Z').await,
        b"TDCZ",
        "nothing until COMMIT"
    );
    me.send(&query("COMMIT")).await;
    assert_eq!(tags_until(&mut me, b'Z').await, b"CAZ");
    // another client listens: its notification is with it when the notifier is told
    let (other, mut rx) = listener(&env).await;
    other.batch_execute("LISTEN theirs").await.expect("listen");
    let mut notifier = raw(&env).await;
    notifier.send(&query("NOTIFY theirs, 'x'")).await;
    assert_eq!(tags_until(&mut notifier, b'Z').await, b"CZ");
    assert_eq!(next(&mut rx).await, ("theirs".into(), "x".into()));
}

/// Session mode: LISTEN runs on the client's own server, and a notification names its
/// sender by backend pid; drivers compare it with the pid their BackendKeyData gave them
/// (asyncpg's and psycopg's own suites), which is Pake's. So a sender that holds its server
/// is named by its Pake pid, the listener's own NOTIFY and another client's alike.
#[tokio::test]
async fn session_mode_notifications_name_senders_by_the_pid_pake_gave_them() {
    use crate::harness::query;
    let env = Env::with(Opts {
        mode: pake::config::PoolMode::Session,
        ..Opts::default()
    })
    .await;
    let mut me = raw(&env).await;
    let mut other = raw(&env).await;
    me.send(&query("LISTEN ch")).await;
    tags_until(&mut me, b'Z').await;
    // the listener's own notification comes with its NOTIFY, the other's when it next asks
    let senders = async |raw: &mut Raw| {
        let mut pids = Vec::new();
        loop {
            let (tag, body) = raw.read().await.expect("a reply");
            match tag {
                b'A' => pids.push(i32::from_be_bytes([body[0], body[1], body[2], body[3]])),
                b'Z' => return pids,
                _ => {}
            }
        }
    };
    me.send(&query("NOTIFY ch, 'mine'")).await;
    assert_eq!(senders(&mut me).await, vec![me.pid], "its own notification");
    other.send(&query("NOTIFY ch, 'theirs'")).await;
    tags_until(&mut other, b'Z').await;
    let mut named = Vec::new();
    for _ in 0..100 {
        me.send(&query("select 1")).await;
        named = senders(&mut me).await;
        if !named.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        named,
        vec![other.pid],
        "named by the pid Pake handed the sender"
    );
    // a sender that leaves right after its NOTIFY (psycopg's test_notify) is still named
    let mut leaving = raw(&env).await;
    leaving.send(&query("NOTIFY ch, 'bye'")).await;
    tags_until(&mut leaving, b'Z').await;
    let leaving_pid = leaving.pid;
    drop(leaving);
    let mut named = Vec::new();
    for _ in 0..100 {
        me.send(&query("select 1")).await;
        named = senders(&mut me).await;
        if !named.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(named, vec![leaving_pid], "named after the sender left");
}

/// A client that notifies itself, in one transaction, more than its inbox holds: a server
/// writes them all before the ReadyForQuery; through Pake they flow to the client while the
/// ReadyForQuery waits for the listener (a waiting session that did not drain its inbox
/// stalled the listener on it, and the client was dropped with 54000 after 5 s).
#[tokio::test]
async fn a_transaction_notifying_its_own_listener_past_the_inbox_size() {
    use crate::harness::query;
    let env = Env::with(Opts {
        tweak: |c| c.general.listen_queue_size = pake::config::Bytes(16 << 10),
        ..Opts::default()
    })
    .await;
    let mut me = Raw::login(&env, &env.lab.user, &env.lab.password, "postgres")
        .await
        .expect("login");
    me.send(&query("LISTEN bulk")).await;
    tags_until(&mut me, b'Z').await;
    // 64 notifications of 1 KiB: four times the inbox
    let payload = "x".repeat(1024);
    me.send(&query(&format!(
        "BEGIN; SELECT pg_notify('bulk', '{payload}' || g) FROM generate_series(1, 64) g; COMMIT"
    )))
    .await;
    let tags = tags_until(&mut me, b'Z').await;
    let notified = tags.iter().filter(|&&t| t == b'A').count();
    assert_eq!(notified, 64, "every notification before ReadyForQuery");
    me.send(&query("select 1")).await;
    assert_eq!(
        tags_until(&mut me, b'Z').await,
        b"TDCZ",
        "the client is still served"
    );
}

/// The pid a notification names, read up to the ReadyForQuery of a `select 1` sent to make
/// the client read.
async fn sender_named(listener: &mut Raw) -> i32 {
    listener.send(&crate::harness::query("select 1")).await;
    named_until_ready(listener).await
}

/// Transaction mode: a notification names its sender by the pid Pake gave it also when it
/// reaches a listener whose `LISTEN` ran in a transaction (pinned to a server of its own,
/// which delivers it), and when the sender held its server before anyone listened
/// (psycopg2's test_notify: both named the sender's server).
#[tokio::test]
async fn a_notification_names_its_sender_whichever_way_it_comes() {
    use crate::harness::query;
    let env = pooled(4).await;
    // a listener pinned by its transaction's LISTEN; the sender pooled
    let mut pinned = raw(&env).await;
    pinned.send(&query("BEGIN; LISTEN pinned; COMMIT")).await;
    tags_until(&mut pinned, b'Z').await;
    let mut sender = raw(&env).await;
    sender.send(&query("NOTIFY pinned, 'a'")).await;
    tags_until(&mut sender, b'Z').await;
    assert_eq!(
        sender_named(&mut pinned).await,
        sender.pid,
        "pinned listener"
    );

    // a sender pinned (a temp table) before anyone listens through Pake
    let mut early = raw(&env).await;
    early
        .send(&query("CREATE TEMP TABLE early_pin (a int)"))
        .await;
    tags_until(&mut early, b'Z').await;
    let mut shared = raw(&env).await;
    shared.send(&query("LISTEN shared")).await;
    tags_until(&mut shared, b'Z').await;
    early.send(&query("NOTIFY shared, 'b'")).await;
    tags_until(&mut early, b'Z').await;
    assert_eq!(sender_named(&mut shared).await, early.pid, "early sender");
}
