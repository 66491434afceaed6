//! Injected faults on Redis commands: a `-ERR`, added latency and a connection reset, each
//! scoped to one command, and nothing for the others.

use crate::harness::{Env, Mode, Val};
use pake::faults::{FaultKind, FaultSpec, Scope};
use std::time::{Duration, Instant};

fn on(command: &str, kind: FaultKind) -> FaultSpec {
    FaultSpec {
        kind,
        scope: Scope {
            redis_command: Some(command.into()),
            ..Scope::default()
        },
        share: 1.0,
        duration_seconds: 60,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_scoped_to_redis_commands() {
    let env = Env::start(Mode::Standalone).await;
    let faults = &env.pake.proxy.faults;
    assert!(
        faults.add(on("GET", FaultKind::Reset)).is_err(),
        "refused while fault injection is off"
    );
    faults.set_enabled(true);
    let mut c = env.conn().await;
    let err = faults
        .add(on(
            "GET",
            FaultKind::Error {
                sqlstate: None,
                redis_error: Some("ERR injected boom".into()),
                message: None,
            },
        ))
        .unwrap();
    assert_eq!(
        c.cmd(&["SET", "k", "v"]).await,
        Val::s("OK"),
        "SET is not in scope"
    );
    let v = c.cmd(&["GET", "k"]).await;
    assert!(
        v.is_err() && v.err_text().contains("injected boom"),
        "{v:?}"
    );
    faults.remove(err.id).unwrap();
    assert_eq!(c.cmd(&["GET", "k"]).await, Val::s("v"));

    let slow = faults
        .add(on("GET", FaultKind::Latency { millis: 300 }))
        .unwrap();
    let t = Instant::now();
    assert_eq!(c.cmd(&["GET", "k"]).await, Val::s("v"));
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "delayed: {:?}",
        t.elapsed()
    );
    faults.remove(slow.id).unwrap();

    faults.add(on("PING", FaultKind::Reset)).unwrap();
    c.send(&crate::harness::encode(&["PING"])).await;
    assert!(c.closed().await, "the connection is reset");
    let mut other = env.conn().await;
    assert_eq!(
        other.cmd(&["GET", "k"]).await,
        Val::s("v"),
        "others unaffected"
    );
}
