//! The session, from a tokio-postgres client through Pake to the in-memory backend: what
//! a client sees when the pool is busy, when it idles in a transaction or when its server
//! dies, and that no server goes back to the pool dirty.

use super::proxy;
use crate::pg::memory::{accept, cancel, client, sqlstate, Backend};
use std::time::Duration;
use tokio::time::Instant;
use tokio_postgres::SimpleQueryMessage;

/// The first column of the first row of `sql`'s result.
async fn value(c: &tokio_postgres::Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let rows = c.simple_query(sql).await?;
    let first = rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    Ok(first.unwrap_or_default())
}

#[tokio::test(start_paused = true)]
async fn clients_in_transaction_mode_share_one_server_between_transactions() {
    let backend = Backend::start();
    let p = proxy(&backend, "pool_size = 2").await;
    let a = client(&p, "app", "a", "db").await.expect("login a");
    let b = client(&p, "app", "a", "db").await.expect("login b");
    assert_eq!(value(&a, "SELECT 42").await.expect("a's query"), "42");
    let pid_a = value(&a, "SELECT pg_backend_pid()").await.expect("a's pid");
    let pid_b = value(&b, "SELECT pg_backend_pid()").await.expect("b's pid");
    assert_eq!(pid_a, pid_b, "one server, handed from client to client");
}

#[tokio::test(start_paused = true)]
async fn a_wrong_password_is_28p01_and_the_proxy_serves_the_next_client() {
    let backend = Backend::start();
    let p = proxy(&backend, "").await;
    let Err(e) = client(&p, "app", "wrong", "db").await else {
        panic!("logged in with a wrong password");
    };
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    let good = client(&p, "app", "a", "db").await.expect("login");
    assert_eq!(value(&good, "SELECT 1").await.expect("query"), "1");
}

#[tokio::test(start_paused = true)]
async fn a_client_waiting_on_a_busy_pool_gets_57014_at_query_wait_timeout() {
    let backend = Backend::start();
    let p = proxy(&backend, "pool_size = 1\nquery_wait_timeout = \"3s\"").await;
    let holder = client(&p, "app", "a", "db").await.expect("login holder");
    let waiter = client(&p, "app", "a", "db").await.expect("login waiter");
    holder.simple_query("BEGIN").await.expect("begin");
    let started = Instant::now();
    let Err(e) = waiter.simple_query("SELECT 1").await else {
        panic!("a query ran while the only server was in another client's transaction");
    };
    assert_eq!(sqlstate(&e), "57014", "{e}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    holder
        .simple_query("COMMIT")
        .await
        .expect("the holder goes on");
    assert_eq!(
        value(&waiter, "SELECT 5").await.expect("then the waiter"),
        "5"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_in_a_failed_transaction_past_the_timeout_ends_the_client_not_the_next_one() {
    let backend = Backend::start();
    let p = proxy(
        &backend,
        "pool_size = 1\nidle_transaction_timeout = \"10s\"",
    )
    .await;
    let idle = client(&p, "app", "a", "db").await.expect("login");
    idle.simple_query("BEGIN").await.expect("begin");
    let _ = idle.simple_query("FAIL").await.expect_err("asked to fail");
    tokio::time::sleep(Duration::from_secs(9)).await;
    let Err(e) = idle.simple_query("SELECT 1").await else {
        panic!("a statement in an aborted transaction succeeded");
    };
    assert_eq!(
        sqlstate(&e),
        "25P02",
        "still served at 9 s, in its failed transaction"
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    let Err(e) = idle.simple_query("ROLLBACK").await else {
        panic!("the client idle in a transaction past the timeout is still served");
    };
    assert!(e.is_closed() || sqlstate(&e) == "25P03", "{e}");
    let next = client(&p, "app", "a", "db").await.expect("login");
    assert_eq!(
        value(&next, "SELECT 7")
            .await
            .expect("not in the aborted transaction"),
        "7"
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_dying_mid_query_is_an_error_for_its_client_only() {
    let backend = Backend::start();
    let p = proxy(&backend, "pool_size = 2").await;
    let victim = client(&p, "app", "a", "db").await.expect("login victim");
    let other = client(&p, "app", "a", "db").await.expect("login other");
    let Err(e) = victim.simple_query("DIE").await else {
        panic!("a query whose server died succeeded");
    };
    let code = sqlstate(&e);
    assert!(code.starts_with("08") || code.starts_with("57"), "{e}");
    assert_eq!(value(&other, "SELECT 3").await.expect("others go on"), "3");
    let opened = backend.connections();
    assert!(opened >= 2, "the dead connection was replaced: {opened}");
}

#[tokio::test(start_paused = true)]
async fn session_mode_resets_a_server_before_the_next_client_gets_it() {
    let backend = Backend::start();
    let p = proxy(&backend, "pool_mode = \"session\"\npool_size = 1").await;
    let first = client(&p, "app", "a", "db").await.expect("login first");
    let pid = value(&first, "SELECT pg_backend_pid()").await.expect("pid");
    first
        .simple_query("SET application_name = 'first'")
        .await
        .expect("set");
    drop(first);
    let second = client(&p, "app", "a", "db").await.expect("login second");
    assert_eq!(
        value(&second, "SELECT pg_backend_pid()")
            .await
            .expect("pid"),
        pid
    );
    let seen = backend.queries();
    let set = seen
        .iter()
        .position(|q| q.starts_with("SET application_name = 'first'"));
    let reset = seen.iter().rposition(|q| q == "DISCARD ALL");
    assert!(
        matches!((set, reset), (Some(s), Some(r)) if r > s),
        "reset after the first client's SET: {seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_logs_in_is_dropped_at_client_login_timeout() {
    use tokio::io::AsyncReadExt;
    let backend = Backend::start();
    let p = proxy(&backend, "client_login_timeout = \"4s\"").await;
    let mut near = accept(&p);
    let started = Instant::now();
    let mut heard = Vec::new();
    let _ = near.read_to_end(&mut heard).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(4),
        "closed at the timeout"
    );
    let said = String::from_utf8_lossy(&heard);
    assert!(
        heard.first() == Some(&b'E')
            && said.contains("C08P01")
            && said.contains("client_login_timeout"),
        "an ErrorResponse 08P01 naming the setting: {said:?}"
    );
    assert_eq!(p.client_count(), 0, "its place is given back");
}

#[tokio::test(start_paused = true)]
async fn a_server_out_of_step_is_dropped_and_the_client_gets_a_clean_one() {
    let backend = Backend::start();
    let p = proxy(&backend, "pool_size = 1").await;
    let c = client(&p, "app", "a", "db").await.expect("login");
    let pid = value(&c, "SELECT pg_backend_pid()").await.expect("pid");
    let Err(e) = c.simple_query("TWICE").await else {
        panic!("the client went on with a server out of step");
    };
    assert_eq!(sqlstate(&e), "08006", "{e}");
    let message = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("expected nothing")),
        "{message:?}"
    );
    let next = client(&p, "app", "a", "db").await.expect("login");
    let fresh = value(&next, "SELECT pg_backend_pid()")
        .await
        .expect("a server");
    assert_ne!(fresh, pid, "the desynchronised server was not reused");
}

#[tokio::test(start_paused = true)]
async fn a_cancel_ends_a_wait_for_a_server_at_once() {
    let backend = Backend::start();
    let p = proxy(&backend, "pool_size = 1\nquery_wait_timeout = \"60s\"").await;
    let holder = client(&p, "app", "a", "db").await.expect("login holder");
    let waiter = std::sync::Arc::new(client(&p, "app", "a", "db").await.expect("login waiter"));
    holder.simple_query("BEGIN").await.expect("begin");
    let started = Instant::now();
    let asking = waiter.clone();
    let query = tokio::spawn(async move { asking.simple_query("SELECT 1").await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    cancel(&p, &waiter).await.expect("cancel sent");
    let Err(e) = query.await.expect("query task") else {
        panic!("the canceled query ran");
    };
    assert_eq!(sqlstate(&e), "57014", "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    holder
        .simple_query("COMMIT")
        .await
        .expect("the holder is unharmed");
    assert_eq!(
        value(&waiter, "SELECT 2")
            .await
            .expect("the waiter goes on"),
        "2"
    );
}

/// Wait (on the paused clock) until `backend` has received `statement`.
async fn until_seen(backend: &Backend, statement: &str) {
    for _ in 0..1000 {
        if backend.queries().iter().any(|q| q == statement) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the backend never received {statement}");
}

/// A spawned statement's outcome, or a panic when it is still running a minute on.
async fn finished<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the statement was not canceled")
        .expect("query task")
}

#[tokio::test(start_paused = true)]
async fn a_cancel_reaches_the_server_running_the_clients_statement() {
    let backend = Backend::start();
    let p = proxy(&backend, "pool_size = 1").await;
    let c = std::sync::Arc::new(client(&p, "app", "a", "db").await.expect("login"));
    let running = c.clone();
    let query = tokio::spawn(async move { running.simple_query("HANG").await });
    until_seen(&backend, "HANG").await;
    cancel(&p, &c).await.expect("cancel sent");
    let Err(e) = finished(query).await else {
        panic!("the canceled statement succeeded");
    };
    assert_eq!(sqlstate(&e), "57014", "{e}");
    assert_eq!(backend.cancels(), 1);
    // the client keeps its connection; the server the cancel went to is not handed out
    // again (a cancel signal may land late), so the next statement runs on a new one
    assert_eq!(
        value(&c, "SELECT 4").await.expect("the client goes on"),
        "4"
    );
    assert_eq!(backend.connections(), 2, "the canceled server was replaced");
}

#[tokio::test(start_paused = true)]
async fn a_late_cancel_never_reaches_the_next_clients_statement() {
    let backend = Backend::start();
    let p = proxy(&backend, "pool_size = 1").await;
    let early = client(&p, "app", "a", "db").await.expect("login early");
    let next = std::sync::Arc::new(client(&p, "app", "a", "db").await.expect("login next"));
    assert_eq!(value(&early, "SELECT 1").await.expect("early runs"), "1");
    // the only server now runs the next client's statement
    let running = next.clone();
    let query = tokio::spawn(async move { running.simple_query("HANG").await });
    until_seen(&backend, "HANG").await;
    // the early client's cancel, sent after its statement was done, goes nowhere
    cancel(&p, &early).await.expect("cancel sent");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(backend.cancels(), 0, "a cancel reached the server");
    assert!(
        !query.is_finished(),
        "the next client's statement was canceled"
    );
    // the right client's cancel does reach it
    cancel(&p, &next).await.expect("cancel sent");
    let Err(e) = finished(query).await else {
        panic!("the canceled statement succeeded");
    };
    assert_eq!(sqlstate(&e), "57014", "{e}");
    assert_eq!(backend.cancels(), 1);
}
