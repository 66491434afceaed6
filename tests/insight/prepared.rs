//! What the advisor learns from a statement as prepared. Through a real Pake, an Execute is
//! recorded with the text its statement was prepared with (placeholders where the values are
//! bound), so a value the application binds is never taken for part of the shape — even when
//! every literal-text run of the same shape happened to carry the same value — and a literal
//! written into a prepared statement is, though no execution ever showed a value.

use crate::harness::eventually;
use crate::recover::{start_pake, through};
use pake::insight::explain::RawText;
use pake::insight::model::IndexAdvice;
use pake::insight::{fingerprint, parse};
use pake::lab::{PgLab, PgOptions};
use tokio_postgres::types::{ToSql, Type};

const SCHEMA: &str = "
CREATE EXTENSION hypopg;
CREATE TABLE tickets (id int PRIMARY KEY, state text NOT NULL, queue int NOT NULL,
  opened_at timestamptz NOT NULL, body text NOT NULL);
INSERT INTO tickets SELECT g,
  CASE g % 100 WHEN 0 THEN 'open' WHEN 1 THEN 'held' ELSE 'closed' END,
  g % 40, timestamptz '2026-01-01' + g * interval '1 minute', repeat('x', 60)
  FROM generate_series(1, 200000) g;
ANALYZE tickets;
";

/// The application binds the state; a reporting tool ran the same shape as literal text, and
/// every time it asked for `'open'`.
const BOUND: &str = "select id, opened_at from tickets where state = $1 and opened_at > $2";
/// The state is written into the statement; the shape only ever runs prepared.
const WRITTEN: &str =
    "select id from tickets where state = 'held' and queue = $1 order by opened_at desc limit 20";

fn helps<'a>(advice: &'a [IndexAdvice], needle: &str) -> Vec<&'a IndexAdvice> {
    advice
        .iter()
        .filter(|a| a.helps.iter().any(|h| h.query.contains(needle)))
        .collect()
}

#[tokio::test]
async fn the_prepared_text_says_which_values_are_constant() {
    let lab = tokio::task::spawn_blocking(|| PgLab::start(PgOptions::default()))
        .await
        .expect("lab thread")
        .expect("lab start");
    let direct = lab.client("postgres").await.expect("direct");
    direct.batch_execute(SCHEMA).await.expect("schema");
    let pake = start_pake(&lab).await;
    let c = through(&lab, &pake).await;
    let ins = pake.proxy.insight.clone();

    // literal text, always 'open', each run its own merge (three samples of the shape)
    for day in 10..13 {
        let sql = format!(
            "select id, opened_at from tickets where state = 'open' and opened_at > '2026-04-{day}'"
        );
        c.simple_query(&sql).await.expect("literal run");
        ins.flush();
    }
    // the same shape prepared, with the state bound
    let bound = c.prepare(BOUND).await.expect("prepare");
    for state in ["open", "held", "closed", "open"] {
        let values = [
            RawText(Some(state)),
            RawText(Some("2026-04-11 00:00:00+00")),
        ];
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as _).collect();
        c.query(&bound, &refs).await.expect("bound run");
    }
    let written = c.prepare(WRITTEN).await.expect("prepare");
    for queue in [3i32, 7, 11] {
        c.query(&written, &[&queue]).await.expect("written run");
        // and as an unnamed statement, as many drivers send it
        c.query_typed(WRITTEN, &[(&queue, Type::INT4)])
            .await
            .expect("unnamed run");
    }
    ins.flush();

    let advice = ins.advise().await.expect("advisor runs");
    let on_bound = helps(&advice.indexes, "opened_at >");
    assert!(!on_bound.is_empty(), "{:#?}", advice.indexes);
    for a in &on_bound {
        assert_eq!(
            a.predicate, None,
            "a bound value taken for a constant: {a:#?}"
        );
        assert!(
            a.columns.iter().any(|k| k == "state"),
            "the bound state is a key: {a:#?}"
        );
    }
    let on_written = helps(&advice.indexes, "queue = ?");
    assert_eq!(on_written.len(), 1, "{:#?}", advice.indexes);
    assert_eq!(
        on_written[0].predicate.as_deref(),
        Some("state = 'held'"),
        "{:#?}",
        on_written[0]
    );

    // a slow Execute: its plan is captured from the statement as prepared (a generic plan;
    // there are no values to run it with)
    let slow = "select id from tickets where queue = $1 and (select pg_sleep(0.6)) is not null";
    let id = format!("{:016x}", fingerprint(slow, parse(slow).as_deref()).id);
    c.query_typed(slow, &[(&5i32, Type::INT4)])
        .await
        .expect("slow run");
    let plan = eventually(|| ins.plan(&id)).await;
    assert!(
        !plan.analyzed && plan.seq_scans.iter().any(|s| s.relation == "tickets"),
        "{plan:#?}"
    );
    pake.drain(std::time::Duration::from_secs(2)).await;
}
