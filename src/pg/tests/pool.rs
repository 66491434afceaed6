//! `Pool`: reuse, fairness, the wait limit and what a discarded connection frees.

use super::{pool, pool_to, target_at};
use crate::pg::memory::Backend;
use crate::pg::pool::PoolCounts;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_checked_in_server_is_reused() {
    let backend = Backend::start();
    let p = pool(&backend, 4, Duration::from_secs(1));
    for _ in 0..5 {
        let s = p.checkout().await.expect("checkout");
        p.checkin(s);
    }
    assert_eq!(
        backend.connections(),
        1,
        "one connection served every checkout"
    );
    assert_eq!(p.counts().idle, 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_the_order_they_came() {
    let backend = Backend::start();
    let p = pool(&backend, 1, Duration::from_secs(60));
    let held = p.checkout().await.expect("first checkout");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let (p, order) = (p.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let s = p.checkout().await.expect("a waiter's checkout");
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(10)).await;
            p.checkin(s);
        }));
        // let waiter i queue before waiter i + 1 is spawned
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    p.checkin(held);
    for w in waiters {
        w.await.expect("waiter");
    }
    assert_eq!(
        *order.lock().unwrap(),
        [0, 1, 2, 3],
        "first come, first served"
    );
    assert_eq!(backend.connections(), 1, "the one server went round");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gets_57014_at_query_wait_timeout_and_the_holder_is_unharmed() {
    let backend = Backend::start();
    let p = pool(&backend, 1, Duration::from_secs(2));
    let held = p.checkout().await.expect("first checkout");
    let started = Instant::now();
    let Err(e) = p.checkout().await else {
        panic!("a second checkout from a full pool of one");
    };
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "exactly the wait limit"
    );
    assert!(e.is_timeout(), "{e}");
    assert_eq!(e.sqlstate().code(), "57014");
    assert!(e.hint().is_some_and(|h| h.contains("pool_size")));
    p.checkin(held);
    let again = p.checkout().await.expect("the held server came back");
    assert_eq!(again.key.pid, 1, "the same connection");
}

#[tokio::test(start_paused = true)]
async fn a_discarded_server_frees_its_place_for_a_new_one() {
    let backend = Backend::start();
    let p = pool(&backend, 1, Duration::from_secs(1));
    let s = p.checkout().await.expect("checkout");
    p.discard(s);
    let fresh = p.checkout().await.expect("room for a new connection");
    assert_eq!(fresh.key.pid, 2, "a new connection, not the discarded one");
    assert_eq!(backend.connections(), 2);
    p.checkin(fresh);
    assert_eq!(p.counts().idle, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_connect_reaches_the_client_and_frees_the_place() {
    let backend = Backend::with_password(Some("not the pool's"));
    let p = pool(&backend, 1, Duration::from_secs(1));
    for _ in 0..2 {
        let Err(e) = p.checkout().await else {
            panic!("logged in with the wrong password");
        };
        assert_eq!(e.sqlstate().code(), "28P01", "the server's own code: {e}");
    }
    assert_eq!(backend.connections(), 2, "the failed place was given back");
    assert!(p.last_error().is_some_and(|e| e.contains("password")));
}

/// A pool whose server nobody listens at: nothing can connect.
fn nowhere(password: Option<&str>) -> Arc<super::Pool> {
    pool_to(target_at("127.0.0.1", 1, password), |pool| {
        pool.min_pool_size = 2
    })
}

#[tokio::test(start_paused = true)]
async fn min_pool_size_warms_only_a_pool_whose_login_can_work() {
    let known = nowhere(Some("secret"));
    known.ensure_min();
    // the opens are counted before they run (on this thread, after the next yield)
    assert_eq!(known.counts().active, 2, "two connections opening");
    let unknown = nowhere(None);
    unknown.ensure_min();
    assert_eq!(
        unknown.counts(),
        PoolCounts::default(),
        "no password to send: no warm-up before a connection has worked"
    );
}

#[tokio::test(start_paused = true)]
async fn a_closed_pool_refuses_checkouts() {
    let p = nowhere(Some("secret"));
    p.close();
    let Err(e) = p.checkout().await else {
        panic!("checkout from a closed pool");
    };
    assert!(e.is_closed(), "{e}");
    assert_eq!(
        e.sqlstate(),
        tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW
    );
}
