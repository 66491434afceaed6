//! `Server`: login, what it learns from the server, and how a failed connect reads.

use super::target;
use crate::pg::memory::Backend;
use crate::pg::server::{Server, ServerError};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn logs_in_and_keeps_what_the_server_reported() {
    let backend = Backend::start();
    let server = Server::connect(1, &target(&backend, None))
        .await
        .expect("trusted login");
    assert_eq!(server.key.pid, 1, "BackendKeyData kept");
    assert_eq!(server.key.secret, 7);
    let reported = |name: &str| {
        let found = server.params.reported.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str())
    };
    assert_eq!(reported("server_version"), Some("15.0 (memory)"));
    assert_eq!(reported("TimeZone"), Some("UTC"));
    assert!(
        server.is_idle(),
        "ReadyForQuery(I) after login: nothing owed"
    );
    assert_eq!(backend.connections(), 1);
}

#[tokio::test(start_paused = true)]
async fn sends_the_password_the_server_asks_for() {
    let backend = Backend::with_password(Some("right"));
    let server = Server::connect(1, &target(&backend, Some("right"))).await;
    assert!(server.is_ok(), "{:?}", server.err());
}

#[tokio::test(start_paused = true)]
async fn a_refused_login_keeps_the_servers_own_sqlstate() {
    let backend = Backend::with_password(Some("right"));
    let Err(e) = Server::connect(1, &target(&backend, Some("wrong"))).await else {
        panic!("a wrong password logged in");
    };
    assert!(matches!(e, ServerError::Rejected { .. }), "{e}");
    assert_eq!(e.server_code(), Some("28P01"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_times_out_at_connect_timeout() {
    let backend = Backend::mute();
    let mut t = target(&backend, None);
    t.connect_timeout = Duration::from_secs(3);
    let started = Instant::now();
    let Err(e) = Server::connect(1, &t).await else {
        panic!("a mute server logged in");
    };
    assert!(matches!(e, ServerError::ConnectTimeout { .. }), "{e}");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(3),
        "exactly the timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_gone_server_is_a_connect_error_naming_it() {
    let backend = Backend::start();
    let t = target(&backend, None);
    drop(backend);
    let Err(e) = Server::connect(1, &t).await else {
        panic!("connected to a backend that is gone");
    };
    assert!(matches!(e, ServerError::Connect { .. }), "{e}");
    assert!(e.to_string().contains(&t.host), "{e}");
}
