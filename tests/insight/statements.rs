//! Fingerprints, exact call/error/row counts, splits, N+1 and traces from real executions.

use crate::harness::{Outcome, Rig, Who};
use pake::insight::model::SortBy;
use pake::insight::{fingerprint, Fingerprint, QueryEvent, Route};
use std::time::Duration;

async fn seed(rig: &Rig) {
    rig.client("postgres")
        .await
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;",
        )
        .await
        .expect("seed");
}

/// `select v from t where id = $1` with an int4 parameter.
async fn by_id(rig: &mut Rig, c: &tokio_postgres::Client, id: i32, who: Who<'_>) -> Outcome {
    let s = id.to_string();
    rig.exec(c, "select v from t where id = $1", &[&id], &[Some(&s)], who)
        .await
}

#[tokio::test]
async fn constants_share_a_fingerprint_and_counts_are_exact() {
    let mut rig = Rig::default().await;
    seed(&rig).await;
    let c = rig.client("postgres").await;
    let who = Who::default();
    let mut eq = Vec::new();
    // one logical statement: literals, an int4 and an int8 parameter, a cast literal
    for sql in [
        "select v from t where id = 5",
        "SELECT v  FROM t WHERE id = 77 -- again",
    ] {
        eq.push(rig.exec(&c, sql, &[], &[], who).await);
    }
    for id in [7i32, 8, 9] {
        eq.push(by_id(&mut rig, &c, id, who).await);
    }
    eq.push(
        rig.exec(
            &c,
            "select v from t where id = $1::int8",
            &[&3i64],
            &[Some("3")],
            who,
        )
        .await,
    );
    // a wrong literal fails with 22P02 and still counts as a call of the same statement
    for _ in 0..2 {
        eq.push(
            rig.exec(&c, "select v from t where id = 'abc'", &[], &[], who)
                .await,
        );
    }
    // IN lists of any length and = ANY(array): another logical statement
    let mut lists = Vec::new();
    for sql in [
        "select v from t where id in (1, 2, 3)",
        "select v from t where id in (4, 5)",
    ] {
        lists.push(rig.exec(&c, sql, &[], &[], who).await);
    }
    let arr = vec![10i32, 11];
    lists.push(
        rig.exec(
            &c,
            "select v from t where id = any($1)",
            &[&arr],
            &[Some("{10,11}")],
            who,
        )
        .await,
    );
    // different structure: a different fingerprint each
    let by_v = rig
        .exec(&c, "select v from t where v = 'v1'", &[], &[], who)
        .await;
    let missing = rig
        .exec(&c, "select v from missing where id = 1", &[], &[], who)
        .await;

    let fp_eq = eq[0].fingerprint.id;
    assert!(
        eq.iter().all(|o| o.fingerprint.id == fp_eq),
        "{:?}",
        eq.iter().map(|o| &o.fingerprint.text).collect::<Vec<_>>()
    );
    let fp_in = lists[0].fingerprint.id;
    assert!(lists.iter().all(|o| o.fingerprint.id == fp_in));
    let ids = [fp_eq, fp_in, by_v.fingerprint.id, missing.fingerprint.id];
    for i in 0..ids.len() {
        for j in i + 1..ids.len() {
            assert_ne!(ids[i], ids[j]);
        }
    }
    assert_eq!(eq[6].error.as_deref(), Some("22P02"));
    assert_eq!(missing.error.as_deref(), Some("42P01"));

    check_counts(&rig, fp_eq, fp_in, missing.fingerprint.id);
}

/// Calls, errors by SQLSTATE, rows and wait of the statements sent above, exactly.
fn check_counts(rig: &Rig, fp_eq: u64, fp_in: u64, fp_missing: u64) {
    let hex = |id: u64| format!("{id:016x}");
    let q = rig.insight.query(&hex(fp_eq)).expect("recorded");
    assert_eq!(q.calls, 8);
    assert_eq!(q.errors, 2);
    assert_eq!(q.errors_by_sqlstate.len(), 1);
    assert_eq!(
        (
            q.errors_by_sqlstate[0].sqlstate.as_str(),
            q.errors_by_sqlstate[0].count
        ),
        ("22P02", 2)
    );
    assert_eq!(q.rows, 6, "one row per successful lookup");
    let l = rig.insight.query(&hex(fp_in)).expect("recorded");
    assert_eq!((l.calls, l.errors, l.rows), (3, 0, 7));
    let m = rig.insight.query(&hex(fp_missing)).expect("recorded");
    assert_eq!((m.calls, m.errors), (1, 1));
    assert_eq!(m.errors_by_sqlstate[0].sqlstate, "42P01");
    let summary = rig.insight.summary();
    assert_eq!(summary.calls, 13);
    assert_eq!(summary.fingerprints, 4);
    assert_eq!(summary.errors, 3);
    // pool wait is kept apart from execution time
    assert!(
        (q.wait_total_ms - 8.0 * 0.05).abs() < 1e-9,
        "{}",
        q.wait_total_ms
    );
}

#[tokio::test]
async fn splits_by_database_user_application_and_sorting() {
    let mut rig = Rig::default().await;
    seed(&rig).await;
    let c = rig.client("postgres").await;
    for (app, n) in [("billing", 5), ("web", 3)] {
        for i in 0..n {
            let who = Who {
                application: app,
                ..Who::default()
            };
            let id = i + 1;
            by_id(&mut rig, &c, id, who).await;
        }
    }
    rig.exec(
        &c,
        "select count(*) from t",
        &[],
        &[],
        Who {
            user: "report",
            ..Who::default()
        },
    )
    .await;
    let q = rig.insight.queries(SortBy::Calls, 10, None);
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].calls, 8, "sorted by calls, descending");
    let mut splits: Vec<(String, u64)> = q[0]
        .splits
        .iter()
        .map(|s| (s.application.clone(), s.calls))
        .collect();
    splits.sort();
    assert_eq!(
        splits,
        vec![("billing".to_string(), 5), ("web".to_string(), 3)]
    );
    assert_eq!(q[1].splits[0].user, "report");
    assert_eq!(rig.insight.queries(SortBy::Calls, 1, None).len(), 1);
    assert!(rig
        .insight
        .queries(SortBy::TotalTime, 10, Some("nope"))
        .is_empty());
    let shares: f64 = q.iter().map(|x| x.time_share).sum();
    assert!((shares - 1.0).abs() < 1e-9);
}

#[tokio::test]
async fn n_plus_one_in_a_transaction_and_trace_listing() {
    let mut rig = Rig::default().await;
    seed(&rig).await;
    let c = rig.client("postgres").await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let who = Who {
        client_id: 7,
        trace_id: Some(trace),
        ..Who::default()
    };
    rig.begin();
    c.batch_execute("BEGIN").await.expect("begin");
    let parent = rig
        .exec(
            &c,
            "select id from t where v like 'v1%' order by id",
            &[],
            &[],
            who,
        )
        .await;
    let mut child = None;
    for id in 1..=30i32 {
        child = Some(by_id(&mut rig, &c, id, who).await);
    }
    c.batch_execute("COMMIT").await.expect("commit");
    rig.commit();
    let other = rig
        .exec(
            &c,
            "select 1",
            &[],
            &[],
            Who {
                trace_id: Some("ffffffffffffffffffffffffffffffff"),
                ..Who::default()
            },
        )
        .await;
    let child = child.expect("ran");

    let found = rig.insight.n_plus_one();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].fingerprint,
        format!("{:016x}", child.fingerprint.id)
    );
    assert_eq!(found[0].max_per_transaction, 30);
    assert_eq!(found[0].last_client_id, 7);

    let stmts = rig.insight.trace(trace).expect("valid trace id");
    assert_eq!(stmts.len(), 31);
    assert_eq!(
        stmts[0].fingerprint,
        format!("{:016x}", parent.fingerprint.id)
    );
    assert!(stmts[1..]
        .iter()
        .all(|s| s.query == *child.fingerprint.text));
    let single = rig
        .insight
        .trace("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF")
        .expect("valid");
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].query, *other.fingerprint.text);
    assert!(rig.insight.trace("nope").is_err());
    // the slow sample carries the trace id, and the literal is redacted
    let slow = rig.insight.slow_samples(100);
    let s = slow
        .iter()
        .find(|s| s.fingerprint == format!("{:016x}", parent.fingerprint.id))
        .expect("sampled");
    assert_eq!(s.trace_id.as_deref(), Some(trace));
    assert!(!s.text.contains("v1%"), "{}", s.text);
    assert!(s.params.is_none());
}

fn event<'a>(fp: &'a Fingerprint, client: u64, us: u64) -> QueryEvent<'a> {
    QueryEvent {
        fingerprint: fp,
        text: &fp.text,
        params: &[],
        prepared: false,
        database: "postgres",
        user: "pake",
        application: "threads",
        route: Route::Replica,
        split: pake::insight::collector::split_hash("postgres", "pake", "threads", Route::Replica),
        client_id: client,
        client_addr: ([127, 0, 0, 1], 5000).into(),
        transaction: client,
        duration: Duration::from_micros(us),
        wait: Duration::ZERO,
        rows: 1,
        error: None,
        trace_id: None,
        writes: false,
    }
}

#[tokio::test]
async fn concurrent_records_are_all_counted_and_memory_is_bounded() {
    let config = pake::insight::InsightConfig {
        max_fingerprints: 50,
        slow_query_threshold: pake::config::Dur::secs(3600),
        n_plus_one_burst: u32::MAX,
        n_plus_one_per_transaction: u32::MAX,
        ..crate::harness::test_config()
    };
    let rig = Rig::start(config, pake::lab::PgOptions::default()).await;
    let c = rig.client("postgres").await;
    // fingerprints of statements the server really runs
    let fps: Vec<Fingerprint> = (0..200)
        .map(|i| {
            let sql = format!("select {i} as c{i}");
            fingerprint(&sql, pake::insight::parse(&sql).as_deref())
        })
        .collect();
    for i in [0usize, 199] {
        c.simple_query(&format!("select {i} as c{i}"))
            .await
            .expect("runs");
    }
    let ins = rig.insight.clone();
    let fps = std::sync::Arc::new(fps);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let ins = ins.clone();
            let fps = fps.clone();
            std::thread::spawn(move || {
                for n in 0..10_000u64 {
                    // fingerprints 0..50 take 1000x longer: they are the top 50 whatever
                    // the interleaving, so merges in between never evict them
                    let i = (n % 200) as usize;
                    let us = if i < 50 { 1000 } else { 1 };
                    ins.record(&event(&fps[i], t, us));
                    if n % 2500 == 0 {
                        ins.flush();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let s = rig.insight.summary();
    assert_eq!(s.fingerprints, 50);
    assert!(s.evicted >= 150, "{}", s.evicted);
    assert_eq!(s.dropped, 0);
    let top = rig.insight.queries(SortBy::TotalTime, 100, None);
    assert_eq!(top.len(), 50);
    for q in &top {
        assert_eq!(q.calls, 8 * 50, "{}", q.query);
    }
    let kept: Vec<&str> = top.iter().map(|q| q.query.as_str()).collect();
    assert!(kept.contains(&"select ? as c0") && kept.contains(&"select ? as c49"));
    assert!(!kept.contains(&"select ? as c199"));
    // Prometheus carries the top N only
    let families = rig.registry.gather();
    let calls = families
        .iter()
        .find(|f| f.name() == "pake_query_calls")
        .expect("family registered");
    assert_eq!(calls.get_metric().len(), 20);
}
