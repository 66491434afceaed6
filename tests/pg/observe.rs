//! Metrics, health and readiness over the admin HTTP listener.

use crate::harness::{eventually, http_get, Env};
use std::time::Duration;

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_served() {
    let env = Env::start().await;
    let c = env.client().await;
    for i in 0..10 {
        let v: i32 = c.query_one("select $1::int", &[&i]).await.unwrap().get(0);
        assert_eq!(v, i);
    }
    c.batch_execute("begin; select 1; commit").await.unwrap();
    let (status, text) = http_get(&env.admin_url("/metrics")).await;
    assert_eq!(status, 200);
    let labels = "{database=\"postgres\",target=\"primary\",user=\"pake\"}";
    let queries = metric(&text, &format!("pake_pg_queries_total{labels}")).unwrap();
    assert!(queries >= 11.0, "queries {queries}\n{text}");
    let tx = metric(&text, &format!("pake_pg_transactions_total{labels}")).unwrap();
    assert!(tx >= 11.0, "transactions {tx}");
    assert!(
        metric(
            &text,
            &format!("pake_pg_client_received_bytes_total{labels}")
        )
        .unwrap()
            > 0.0
    );
    assert!(metric(&text, &format!("pake_pg_client_sent_bytes_total{labels}")).unwrap() > 0.0);
    assert!(
        metric(
            &text,
            &format!("pake_pg_checkout_wait_seconds_count{labels}")
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        metric(&text, &format!("pake_pg_pool_size{labels}")),
        Some(5.0)
    );
    let idle = metric(
        &text,
        "pake_pg_servers{database=\"postgres\",state=\"idle\",target=\"primary\",user=\"pake\"}",
    );
    assert!(idle.unwrap() >= 1.0);
    assert!(text.contains("pake_pg_client_logins_total{result=\"ok\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let mut env = Env::start().await;
    let (status, body) = http_get(&env.admin_url("/health")).await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let c = env.client().await;
    c.query_one("select 1", &[]).await.unwrap();
    let (status, body) = http_get(&env.admin_url("/ready")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ready\":true"));
    // with the backend down, the next request fails to reconnect, and readiness says so
    tokio::task::block_in_place(|| env.lab.primary.stop());
    assert!(c.query_one("select 1", &[]).await.is_err());
    let (status, body) = http_get(&env.admin_url("/ready")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"ready\":false"));
    tokio::task::block_in_place(|| env.lab.primary.start()).unwrap();
    let back = eventually(Duration::from_secs(20), || async {
        if let Ok(c) = pake::lab::postgres::connect(&env.url("postgres")).await {
            let _ = c.query_one("select 1", &[]).await;
        }
        http_get(&env.admin_url("/ready")).await.0 == 200
    })
    .await;
    assert!(back);
    // health stays green throughout: the process is alive
    assert_eq!(http_get(&env.admin_url("/health")).await.0, 200);
}
