//! Writes are never EXPLAIN ANALYZEd — even with `explain_analyze` on, and even when a
//! writing function hides in a statement the proxy took for a read. Checked two ways: a
//! counter table the writes would bump, and the server's statement log.

use crate::harness::{eventually, test_config, Rig, Who};
use pake::insight::InsightConfig;
use pake::lab::PgOptions;

#[tokio::test]
async fn writes_are_never_explain_analyzed() {
    let config = InsightConfig {
        explain_analyze: true,
        ..test_config()
    };
    let opts = PgOptions {
        conf: vec!["log_statement = 'all'".into()],
        ..PgOptions::default()
    };
    let mut rig = Rig::start(config, opts).await;
    let c = rig.client("postgres").await;
    c.batch_execute(
        "CREATE TABLE hits (n int);
         CREATE TABLE big AS SELECT g AS id FROM generate_series(1, 1000) g;
         CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS
           'INSERT INTO hits VALUES (100) RETURNING n';",
    )
    .await
    .expect("seed");
    let write = Who {
        writes: true,
        ..Who::default()
    };
    let ins = rig
        .exec(&c, "insert into hits values (1)", &[], &[], write)
        .await;
    let upd = rig
        .exec(&c, "update hits set n = n + 1 where n = 1", &[], &[], write)
        .await;
    // a writing function the router could not see: flagged as a read
    let hidden = rig
        .exec(&c, "select bump()", &[], &[], Who::default())
        .await;
    let read = rig
        .exec(
            &c,
            "select count(*) from big where id > 10",
            &[],
            &[],
            Who::default(),
        )
        .await;
    for o in [&ins, &upd, &hidden, &read] {
        assert!(o.error.is_none(), "{:?}", o.error);
    }
    let hex = |o: &crate::harness::Outcome| format!("{:016x}", o.fingerprint.id);
    let insight = rig.insight.clone();
    let read_plan = eventually(|| insight.plan(&hex(&read))).await;
    assert!(
        read_plan.analyzed,
        "reads are ANALYZEd in this configuration"
    );
    let ins_plan = eventually(|| insight.plan(&hex(&ins))).await;
    let upd_plan = eventually(|| insight.plan(&hex(&upd))).await;
    assert!(!ins_plan.analyzed && !upd_plan.analyzed);
    // the hidden write was tried under ANALYZE only inside a READ ONLY transaction: it failed
    eventually(|| (rig.insight.summary().explain_errors >= 1).then_some(())).await;
    assert!(rig.insight.plan(&hex(&hidden)).is_none());

    // exactly the test's own writes happened: insert 1 (then +1), bump() once
    let mut rows: Vec<i32> = c
        .query("select n from hits order by n", &[])
        .await
        .expect("count")
        .iter()
        .map(|r| r.get(0))
        .collect();
    rows.sort_unstable();
    assert_eq!(rows, vec![2, 100]);
    let log = rig.lab.primary.log();
    let analyzed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("EXPLAIN (ANALYZE"))
        .collect();
    assert!(analyzed.iter().any(|l| l.contains("from big")), "{log}");
    for l in &analyzed {
        assert!(
            !l.contains("insert into hits") && !l.contains("update hits"),
            "{l}"
        );
    }
    assert!(log.contains("EXPLAIN (FORMAT JSON) insert into hits values (1)"));
}

/// A plan capture leaves no session of Pake's on the client's database: the side connection
/// it ran on was kept for good, so the client's `DROP DATABASE` (or a `CREATE DATABASE …
/// TEMPLATE` of it) failed with 55006 for as long as Pake ran — Django's suite could not drop
/// its test database after a statement past the slow threshold.
#[tokio::test]
async fn a_plan_capture_leaves_no_session_on_the_database() {
    let mut rig = Rig::default().await;
    let admin = rig.client("postgres").await;
    admin
        .batch_execute("CREATE DATABASE captured")
        .await
        .expect("create");
    rig.register("captured");
    let c = rig.client("captured").await;
    let who = Who {
        database: "captured",
        ..Who::default()
    };
    let read = rig.exec(&c, "select 1 as one", &[], &[], who).await;
    assert!(read.error.is_none(), "{:?}", read.error);
    let hex = format!("{:016x}", read.fingerprint.id);
    let insight = rig.insight.clone();
    eventually(|| insight.plan(&hex)).await;
    drop(c);
    let clone = admin
        .batch_execute("CREATE DATABASE captured_clone TEMPLATE captured")
        .await;
    assert!(clone.is_ok(), "the template is free: {clone:?}");
    let dropped = admin.batch_execute("DROP DATABASE captured").await;
    assert!(dropped.is_ok(), "the database is free: {dropped:?}");
}
