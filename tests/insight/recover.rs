//! Drop-and-recover: two application schemas (shop: orders and shipping; content: posts and
//! comments) with realistic row counts and the right indexes, then eight of them dropped.
//! Fifteen statement shapes run through a real Pake with varied constants and mixed protocols
//! (simple Query literals, named prepared statements, unnamed extended statements); nothing is
//! slow, so the advisor must work from cost alone. `pake report` right after the workload
//! shows the advice; it is scored (recall of the dropped set, useless proposals) and compared
//! with Dexter's rules on the same samples.

use crate::dexter;
use pake::config::{Config, Dur, PoolMode, QuickStart};
use pake::insight::explain::RawText;
use pake::insight::model::{IndexAdvice, ReportData};
use pake::lab::{PgLab, PgOptions};
use std::process::Command;
use std::time::Instant;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

const SCHEMA: &str = "
CREATE EXTENSION hypopg;
CREATE SCHEMA shop; CREATE SCHEMA content;
CREATE TABLE shop.customers (id int PRIMARY KEY, email text NOT NULL UNIQUE, country text NOT NULL,
  created_at timestamptz NOT NULL);
INSERT INTO shop.customers SELECT g, 'c' || g || '@example.com', (ARRAY['fr','de','us','jp'])[g % 4 + 1],
  now() - g * interval '1 hour' FROM generate_series(1, 20000) g;
CREATE TABLE shop.orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES shop.customers,
  status text NOT NULL, total numeric(10,2) NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO shop.orders SELECT g, g % 2000 + 1, (ARRAY['new','paid','shipped','done'])[g % 4 + 1],
  (g % 500) + 0.99, now() - g * interval '3 minutes' FROM generate_series(1, 200000) g;
CREATE TABLE shop.products (id int PRIMARY KEY, sku text NOT NULL UNIQUE, category_id int NOT NULL,
  price numeric(10,2) NOT NULL);
INSERT INTO shop.products SELECT g, 'sku-' || g, g % 200, (g * 7919 % 1000) + 0.5
  FROM generate_series(1, 50000) g;
CREATE TABLE shop.order_items (id int PRIMARY KEY, order_id int NOT NULL REFERENCES shop.orders,
  product_id int NOT NULL, qty int NOT NULL);
INSERT INTO shop.order_items SELECT g, g % 200000 + 1, g * 31 % 50000 + 1, g % 5 + 1
  FROM generate_series(1, 400000) g;
CREATE TABLE shop.shipments (id int PRIMARY KEY, order_id int NOT NULL, carrier text NOT NULL,
  status text NOT NULL, shipped_at timestamptz NOT NULL, tracking text NOT NULL);
INSERT INTO shop.shipments SELECT g, g, (ARRAY['ups','dhl','fedex'])[g % 3 + 1],
  (ARRAY['packed','in_transit','delivered','lost'])[g % 4 + 1],
  timestamptz '2026-11-30' - (g % 365) * interval '1 day', 'T' || g FROM generate_series(1, 150000) g;
CREATE TABLE content.authors (id int PRIMARY KEY, handle text NOT NULL UNIQUE);
INSERT INTO content.authors SELECT g, 'author' || g FROM generate_series(1, 5000) g;
CREATE TABLE content.posts (id int PRIMARY KEY, author_id int NOT NULL REFERENCES content.authors,
  status text NOT NULL, published_at timestamptz NOT NULL, title text NOT NULL);
INSERT INTO content.posts SELECT g, g % 5000 + 1, CASE WHEN g % 10 = 0 THEN 'draft' ELSE 'published' END,
  now() - g * interval '10 minutes', 'post ' || g FROM generate_series(1, 50000) g;
CREATE TABLE content.comments (id serial PRIMARY KEY, post_id int NOT NULL, author_id int NOT NULL,
  created_at timestamptz NOT NULL, body text NOT NULL);
INSERT INTO content.comments (post_id, author_id, created_at, body) SELECT g % 3000 + 1, g % 5000 + 1,
  now() - g * interval '1 minute', 'comment ' || g FROM generate_series(1, 300000) g;
-- the right indexes
CREATE INDEX orders_customer_created ON shop.orders (customer_id, created_at DESC);
CREATE INDEX order_items_order ON shop.order_items (order_id);
CREATE INDEX order_items_product ON shop.order_items (product_id);
CREATE INDEX shipments_status_shipped ON shop.shipments (status, shipped_at);
CREATE INDEX shipments_order ON shop.shipments (order_id);
CREATE INDEX products_category_price ON shop.products (category_id, price);
CREATE INDEX posts_author ON content.posts (author_id);
CREATE INDEX posts_status_published ON content.posts (status, published_at);
CREATE INDEX posts_status ON content.posts (status);
CREATE INDEX comments_post_created ON content.comments (post_id, created_at DESC);
CREATE INDEX comments_author ON content.comments (author_id);";

/// The dropped set: (index, table, key columns).
const DROPPED: [(&str, &str, &[&str]); 8] = [
    (
        "shop.orders_customer_created",
        "orders",
        &["customer_id", "created_at"],
    ),
    ("shop.order_items_order", "order_items", &["order_id"]),
    (
        "shop.shipments_status_shipped",
        "shipments",
        &["status", "shipped_at"],
    ),
    ("shop.shipments_order", "shipments", &["order_id"]),
    (
        "shop.products_category_price",
        "products",
        &["category_id", "price"],
    ),
    ("content.posts_author", "posts", &["author_id"]),
    (
        "content.comments_post_created",
        "comments",
        &["post_id", "created_at"],
    ),
    ("content.comments_author", "comments", &["author_id"]),
];

/// Fifteen shapes; each call gets its parameters from its number.
type Params = fn(i: usize) -> Vec<String>;
const SHAPES: [(&str, Params); 15] = [
    ("select id, total, created_at from shop.orders where customer_id = $1 order by created_at desc limit 10",
        |i| vec![(i * 37 % 2000 + 1).to_string()]),
    ("select o.id, i.product_id, i.qty from shop.orders o join shop.order_items i on i.order_id = o.id where o.customer_id = $1",
        |i| vec![(i * 53 % 2000 + 1).to_string()]),
    ("select sum(qty) from shop.order_items where product_id = $1", |i| vec![(i * 11 % 50000 + 1).to_string()]),
    ("select id, order_id, carrier from shop.shipments where status = $1 and shipped_at > $2",
        |i| vec![["packed", "in_transit", "delivered"][i % 3].into(), format!("2026-11-{:02}", 20 + i % 8)]),
    ("select o.id, o.status, s.carrier, s.tracking from shop.orders o join shop.shipments s on s.order_id = o.id where o.id in ($1, $2, $3)",
        |i| (0..3).map(|k| (i * 97 + k * 1013) % 150000 + 1).map(|v| v.to_string()).collect()),
    ("select id, sku, price from shop.products where category_id = $1 and price < $2",
        |i| vec![(i % 200).to_string(), (100 + i % 50).to_string()]),
    ("select id, country from shop.customers where email = $1", |i| vec![format!("c{}@example.com", i * 7 % 20000 + 1)]),
    ("select p.id, p.title from content.authors a join content.posts p on p.author_id = a.id where a.handle = $1",
        |i| vec![format!("author{}", i * 13 % 5000 + 1)]),
    ("select id, title, published_at from content.posts where status = 'published' order by published_at desc limit 20",
        |_| vec![]),
    ("select id, author_id, created_at from content.comments where post_id = $1 order by created_at desc limit 20",
        |i| vec![(i * 17 % 3000 + 1).to_string()]),
    ("select post_id, count(*) from content.comments where post_id in ($1, $2, $3, $4) group by post_id",
        |i| (0..4).map(|k| (i * 29 + k * 7) % 3000 + 1).map(|v| v.to_string()).collect()),
    ("select count(*) from content.comments where author_id = $1", |i| vec![(i * 19 % 5000 + 1).to_string()]),
    ("select status, count(*), sum(total) from shop.orders group by status", |_| vec![]),
    ("update shop.orders set status = $1 where id = $2", |i| vec!["paid".into(), (i * 101 % 200000 + 1).to_string()]),
    ("insert into content.comments (post_id, author_id, created_at, body) values ($1, $2, now(), $3)",
        |i| vec![(i % 3000 + 1).to_string(), (i % 5000 + 1).to_string(), format!("new {i}")]),
];

/// Calls per shape.
const CALLS: usize = 24;

/// `sql` with `$n` replaced by quoted literals (the simple-protocol form).
fn literal(sql: &str, params: &[String]) -> String {
    let mut s = sql.to_string();
    for (n, v) in params.iter().enumerate().rev() {
        s = s.replace(
            &format!("${}", n + 1),
            &format!("'{}'", v.replace('\'', "''")),
        );
    }
    s
}

pub(super) async fn start_pake(lab: &PgLab) -> pake::app::Running {
    let quick = QuickStart {
        pg_listen: Some("127.0.0.1:0".parse().expect("addr")),
        admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
        pg_primary: Some(lab.url("postgres")),
        pool_size: Some(4),
        pool_mode: Some(PoolMode::Transaction),
        ..QuickStart::default()
    };
    let mut config = quick.apply(Config::default()).expect("quick start");
    // on demand only; nothing in this workload is slow at the default threshold
    config.insight.advisor_interval = Dur::secs(0);
    config.validate().expect("valid config");
    pake::app::start(config).await.expect("pake start")
}

/// A client of `pake`'s Postgres listener, as the lab's superuser.
pub(super) async fn through(lab: &PgLab, pake: &pake::app::Running) -> Client {
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{}/postgres",
        lab.user,
        lab.password,
        pake.pg_addr.port()
    );
    pake::lab::postgres::connect(&url)
        .await
        .expect("through pake")
}

/// Run every shape `CALLS` times through Pake, rotating simple / prepared / unnamed extended.
async fn workload(c: &Client) {
    for (n, (sql, params)) in SHAPES.iter().enumerate() {
        let prepared = c.prepare(sql).await.expect("prepare");
        for i in 0..CALLS {
            let p = params(i + n);
            let raw: Vec<RawText<'_>> = p.iter().map(|v| RawText(Some(v))).collect();
            let refs: Vec<&(dyn ToSql + Sync)> = raw.iter().map(|v| v as _).collect();
            let r = match (i + n) % 3 {
                0 => c.simple_query(&literal(sql, &p)).await.map(|_| ()),
                1 => c.query(&prepared, &refs).await.map(|_| ()),
                _ => {
                    let typed: Vec<(&(dyn ToSql + Sync), Type)> =
                        refs.iter().map(|r| (*r, Type::UNKNOWN)).collect();
                    c.query_typed(sql, &typed).await.map(|_| ())
                }
            };
            r.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}

/// Does `a` propose the dropped index `(table, keys)` (same key columns in order)?
fn proposes(a: &IndexAdvice, table: &str, keys: &[&str]) -> bool {
    let cols: Vec<&str> = a
        .columns
        .iter()
        .map(|c| c.trim_end_matches(" DESC"))
        .collect();
    a.table.ends_with(&format!(".{table}")) && cols == keys
}

async fn pake_report(admin: &str, extra: &[&str]) -> (ReportData, String) {
    let dir = tempfile::tempdir().expect("out dir");
    let mut args = vec![
        "report".to_string(),
        "--admin".into(),
        admin.to_string(),
        "--out".into(),
        dir.path().display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pake"))
            .args(args)
            .output()
            .expect("run pake report")
    })
    .await
    .expect("report thread");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(dir.path().join("report.json")).expect("report.json");
    let md = std::fs::read_to_string(dir.path().join("report.md")).expect("report.md");
    let html = std::fs::read_to_string(dir.path().join("report.html")).expect("report.html");
    // the HTML page shows the same advice, with the fingerprints each index helps
    if md.contains("CREATE INDEX CONCURRENTLY") {
        assert!(
            html.contains("CREATE INDEX CONCURRENTLY") && html.contains("plan cost"),
            "{html}"
        );
    }
    (serde_json::from_str(&json).expect("report json"), md)
}

#[tokio::test]
async fn drop_and_recover_through_pake() {
    if let Ok(level) = std::env::var("PAKE_TEST_LOG") {
        pake::obs::logging::init(pake::config::LogFormat::Text, &level);
    }
    let lab = tokio::task::spawn_blocking(|| PgLab::start(PgOptions::default()))
        .await
        .expect("lab thread")
        .expect("lab start");
    let direct = lab.client("postgres").await.expect("direct");
    let t = Instant::now();
    direct.batch_execute(SCHEMA).await.expect("schemas");
    for (name, _, _) in DROPPED {
        direct
            .batch_execute(&format!("DROP INDEX {name}"))
            .await
            .expect("drop");
    }
    direct
        .batch_execute("VACUUM ANALYZE")
        .await
        .expect("analyze");
    println!("setup: {:.1} s", t.elapsed().as_secs_f64());

    let pake = start_pake(&lab).await;
    let admin = format!("http://{}", pake.admin_addr.expect("admin"));
    let c = through(&lab, &pake).await;
    workload(&c).await;
    let ins = pake.proxy.insight.clone();
    assert_eq!(
        ins.summary().fingerprints,
        SHAPES.len(),
        "one fingerprint per shape"
    );

    // `pake report` right after the workload runs the advisor and shows its advice
    let (data, md) = pake_report(&admin, &[]).await;
    let advice = &data.advice;
    assert!(advice.fresh, "{advice:#?}");
    assert_eq!(
        advice.examined,
        SHAPES.len() - 1,
        "every shape but the INSERT is planned"
    );
    println!("{md}");
    println!(
        "advisor: {:.0} ms on {} fingerprints ({} planned)",
        advice.run_ms,
        SHAPES.len(),
        advice.examined
    );
    assert!(md.contains("computed for this report"), "{md}");
    // plans were made with real values; the report shows none of them
    assert!(md.contains("(Filter: (customer_id = ?))"), "{md}");
    assert!(!md.contains("@example.com"), "{md}");
    assert!(md.contains("CREATE INDEX CONCURRENTLY"), "{md}");

    let pake_score = score("pake", &advice.indexes);
    evidence(advice);

    // Dexter's rules on the same samples
    let fps = pake::insight::advisor::workload(&ins)
        .remove("postgres")
        .unwrap_or_default();
    let side = lab.client("postgres").await.expect("side");
    let found = dexter::suggest(&side, &fps).await;
    let dexter_score = score("dexter", &found);
    println!(
        "recall of the {} dropped: pake {}/{} ({} useless), dexter {}/{} ({} useless)",
        DROPPED.len(),
        pake_score.0,
        DROPPED.len(),
        pake_score.1,
        dexter_score.0,
        DROPPED.len(),
        dexter_score.1
    );
    assert!(
        pake_score.0 * 10 >= DROPPED.len() * 9,
        "recall {pake_score:?}"
    );
    assert_eq!(pake_score.1, 0, "useless proposals");

    // the advice runs as written; with it in place, nothing more is proposed
    for a in &advice.indexes {
        direct
            .batch_execute(&a.sql)
            .await
            .expect("the advice runs as is");
    }
    direct.batch_execute("ANALYZE").await.expect("analyze");
    let again = ins.advise().await.expect("advisor");
    assert!(again.indexes.is_empty(), "{:#?}", again.indexes);
    let (stale, md) = pake_report(&admin, &["--no-advise"]).await;
    assert!(!stale.advice.fresh);
    assert!(md.contains("from the last advisor run"), "{md}");
    pake.drain(std::time::Duration::from_secs(2)).await;
}

/// Every proposal carries its evidence; the full-table aggregate is named as beyond help and
/// the redundant existing index as a duplicate.
fn evidence(advice: &pake::insight::model::AdviceReport) {
    for a in &advice.indexes {
        assert!(a.validated && a.size_bytes.unwrap_or(0) > 0, "{a:#?}");
        assert!(
            !a.helps.is_empty() && a.reason.contains("replaces"),
            "{a:#?}"
        );
    }
    assert!(
        advice
            .no_index_helps
            .iter()
            .any(|n| n.query.contains("group by status")),
        "{:#?}",
        advice.no_index_helps
    );
    assert!(
        advice
            .existing
            .iter()
            .any(|e| e.index.ends_with("posts_status") && e.kind == "duplicate"),
        "{:#?}",
        advice.existing
    );
}

/// (dropped indexes recovered, useless proposals): a proposal is useless when it repeats
/// another's key, its key leads another proposal's or an index that was kept, or it claims
/// no fingerprint's cost halves.
fn score(who: &str, found: &[IndexAdvice]) -> (usize, usize) {
    let recovered = DROPPED
        .iter()
        .filter(|(_, t, k)| found.iter().any(|a| proposes(a, t, k)))
        .count();
    let kept: [(&str, &[&str]); 9] = [
        ("orders", &["id"]),
        ("customers", &["email"]),
        ("products", &["sku"]),
        ("order_items", &["product_id"]),
        ("posts", &["status", "published_at"]),
        ("authors", &["handle"]),
        ("comments", &["id"]),
        ("shipments", &["id"]),
        ("posts", &["status"]),
    ];
    let keys = |a: &IndexAdvice| -> Vec<String> {
        a.columns
            .iter()
            .map(|c| c.trim_end_matches(" DESC").to_string())
            .collect()
    };
    let leads = |short: &[String], long: &[String]| {
        short.len() <= long.len() && short.iter().zip(long).all(|(a, b)| a == b)
    };
    let mut useless = 0;
    for (i, a) in found.iter().enumerate() {
        let k = keys(a);
        let repeat = found.iter().enumerate().any(|(j, b)| {
            j != i && a.table == b.table && leads(&k, &keys(b)) && (k != keys(b) || j < i)
        });
        let existing = kept.iter().any(|(t, cols)| {
            a.table.ends_with(&format!(".{t}"))
                && leads(&k, &cols.iter().map(|c| c.to_string()).collect::<Vec<_>>())
        });
        let halves = |before: f64, after: f64| after <= before * 0.5;
        let measured = if a.helps.is_empty() {
            halves(a.cost_before, a.cost_after)
        } else {
            a.helps.iter().any(|h| halves(h.cost_before, h.cost_after))
        };
        let no_saving = !measured;
        if repeat || existing || no_saving {
            println!(
                "{who}: useless {} (repeat {repeat}, existing {existing}, no saving {no_saving})",
                a.sql
            );
            useless += 1;
        } else if !DROPPED.iter().any(|(_, t, c)| proposes(a, t, c)) {
            println!("{who}: extra {}", a.sql);
        }
    }
    (recovered, useless)
}
