//! Fault injection through the admin API: every kind, scoped and expiring as asked, and
//! refused when fault injection is off or the caller is not an admin.

use crate::harness::{code, frame, http, query, with_guest, Env, Opts, Raw};
use std::time::{Duration, Instant};

const ADMIN: Option<(&str, &str)> = Some(("pake", "pake"));

fn enabled() -> Opts {
    Opts {
        tweak: |c| {
            c.general.fault_injection = true;
            with_guest(c);
        },
        ..Opts::default()
    }
}

async fn add(env: &Env, fault: &str) -> serde_json::Value {
    let (status, body) = http("POST", &env.admin_url("/api/faults"), ADMIN, Some(fault)).await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_when_off_or_not_admin() {
    let env = Env::start().await;
    let fault = r#"{"kind":{"type":"reset"}}"#;
    let (status, _) = http("POST", &env.admin_url("/api/faults"), ADMIN, Some(fault)).await;
    assert_eq!(status, 403, "off by default");
    let (status, _) = http("GET", &env.admin_url("/api/faults"), ADMIN, None).await;
    assert_eq!(status, 403);
    let env = Env::with(enabled()).await;
    let (status, _) = http("POST", &env.admin_url("/api/faults"), None, Some(fault)).await;
    assert_eq!(status, 401, "no credentials");
    let (status, _) = http(
        "POST",
        &env.admin_url("/api/faults"),
        Some(("pake", "wrong")),
        Some(fault),
    )
    .await;
    assert_eq!(status, 401, "wrong password");
    let (status, _) = http(
        "POST",
        &env.admin_url("/api/faults"),
        Some(("guest", "guest")),
        Some(fault),
    )
    .await;
    assert_eq!(status, 403, "not an admin");
    let (status, body) = http("GET", &env.admin_url("/api/faults"), ADMIN, None).await;
    assert_eq!((status, body.as_str()), (200, "[]"), "nothing injected");
    let (status, _) = http(
        "POST",
        &env.admin_url("/api/faults"),
        ADMIN,
        Some(r#"{"kind":{"type":"reset"},"share":3}"#),
    )
    .await;
    assert_eq!(status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_scoped_and_expiring() {
    let env = Env::with(enabled()).await;
    let c = env.client().await;
    // latency, only for its statement
    add(
        &env,
        r#"{"kind":{"type":"latency","millis":400},"scope":{"fingerprint":"latency_probe"}}"#,
    )
    .await;
    let t = Instant::now();
    c.simple_query("select 1 as latency_probe").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(400), "delayed");
    let t = Instant::now();
    c.simple_query("select 1 as other").await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "other statements are not"
    );
    // an error with a given SQLSTATE, scoped to the pool, expiring after a second
    let f = add(&env, r#"{"kind":{"type":"error","sqlstate":"40001","message":"injected conflict"},"scope":{"pool":"postgres/pake"},"duration_seconds":1}"#).await;
    let e = c.simple_query("select 2").await.unwrap_err();
    assert_eq!(code(&e), "40001");
    let (_, listed) = http("GET", &env.admin_url("/api/faults"), ADMIN, None).await;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == f["id"])
        .unwrap();
    assert!(mine["hits"].as_u64().unwrap() >= 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.simple_query("select 3")
        .await
        .expect("the error fault expired");
    // a share of requests
    let f = add(
        &env,
        r#"{"kind":{"type":"error"},"scope":{"fingerprint":"share_probe"},"share":0.5}"#,
    )
    .await;
    let mut failed = 0;
    for _ in 0..200 {
        if let Err(e) = c.simple_query("select 1 as share_probe").await {
            assert_eq!(code(&e), "58000");
            failed += 1;
        }
    }
    assert!((60..=140).contains(&failed), "about half: {failed}");
    let (status, _) = http(
        "DELETE",
        &env.admin_url(&format!("/api/faults/{}", f["id"])),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = http(
        "DELETE",
        &env.admin_url(&format!("/api/faults/{}", f["id"])),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 404);
    // bandwidth cap: 300 kB at 1 MB/s takes at least 0.3 s
    add(&env, r#"{"kind":{"type":"bandwidth","bytes_per_second":1000000},"scope":{"fingerprint":"bw_probe"}}"#).await;
    let t = Instant::now();
    let rows = c
        .query(
            "select repeat('x', 1000) as bw_probe from generate_series(1, 300)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 300);
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "capped: {:?}",
        t.elapsed()
    );
    // reset: the connection is closed under the client
    add(
        &env,
        r#"{"kind":{"type":"reset"},"scope":{"fingerprint":"reset_probe"}}"#,
    )
    .await;
    let e = c.simple_query("select 1 as reset_probe").await.unwrap_err();
    assert!(e.is_closed() || code(&e).is_empty(), "{e}");
    let fresh = env.client().await;
    fresh
        .simple_query("select 1 as other")
        .await
        .expect("everyone else is fine");
}

/// A statement Pake fails itself while the transaction's BEGIN is still deferred (with a
/// replica, BEGIN waits for the statement that decides where it runs) aborts that
/// transaction as a server would: status `E`, later statements refused with 25P02, and
/// COMMIT answered as ROLLBACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_in_a_deferred_transaction_aborts_it() {
    let env = Env::with(Opts {
        lab: pake::lab::PgOptions {
            replica: true,
            ..Default::default()
        },
        ..enabled()
    })
    .await;
    add(
        &env,
        r#"{"kind":{"type":"error","sqlstate":"40001"},"scope":{"fingerprint":"abort_probe"}}"#,
    )
    .await;
    let mut raw = Raw::login(&env, &env.lab.user, &env.lab.password, "postgres")
        .await
        .expect("login");
    async fn run(raw: &mut Raw, bytes: &[u8]) -> (String, String, String, u8) {
        raw.send(bytes).await;
        let r = raw.until_ready().await;
        (r.tags, r.sqlstate, r.command, r.status)
    }
    let begin = run(&mut raw, &query("BEGIN")).await;
    assert_eq!((begin.0.as_str(), begin.3), ("CZ", b'T'));
    let failed = run(&mut raw, &query("select 1 as abort_probe")).await;
    assert_eq!(
        (failed.0.as_str(), failed.1.as_str(), failed.3),
        ("EZ", "40001", b'E')
    );
    let refused = run(&mut raw, &query("select 2")).await;
    assert_eq!((refused.1.as_str(), refused.3), ("25P02", b'E'));
    let mut parse = frame(b'P', b"s\0select 3\0\0\0");
    parse.extend(frame(b'S', b""));
    let refused = run(&mut raw, &parse).await;
    assert_eq!(
        (refused.0.as_str(), refused.1.as_str(), refused.3),
        ("EZ", "25P02", b'E')
    );
    let end = run(&mut raw, &query("COMMIT")).await;
    assert_eq!((end.2.as_str(), end.3), ("ROLLBACK", b'I'));
    let after = run(&mut raw, &query("select 4")).await;
    assert_eq!((after.1.as_str(), after.3), ("", b'I'));
}
