//! Dexter's rules (ankane/dexter, `lib/dexter/indexer.rb`, as summarised in
//! shared/INSIGHT.md), rebuilt on Pake's own plumbing as the baseline the advisor is compared
//! with: per query, one plan of its first sample; pass 1 adds a hypothetical single-column
//! index on every column the query mentions, pass 2 every two-column permutation per table;
//! a pass counts when it halves the cost (pass 2 only when pass 1's cost is still above 100);
//! when the plan uses several new indexes each is tried alone and the cheapest kept — at
//! most one index per query. Then suggestions equal to the first one or two columns of an
//! existing btree are dropped, and single columns leading a suggested two-column index.

use pake::insight::advisor::candidates::Candidate;
use pake::insight::advisor::catalog::{self, Table};
use pake::insight::advisor::search::{hypo_create, reset, uses_index};
use pake::insight::advisor::workload::{plan, used_tables, Fp};
use pake::insight::explain::total_cost;
use pake::insight::model::IndexAdvice;
use tokio_postgres::Client;

async fn cost_of(c: &Client, fp: &Fp) -> (f64, serde_json::Value) {
    let p = plan(c, &fp.samples[0]).await.expect("plan");
    (total_cost(&p).unwrap_or(0.0), p)
}

/// Create every candidate; the `(oid, candidate)` pairs.
async fn create_all(c: &Client, tables: &[Table], cands: &[Candidate]) -> Vec<(i64, Candidate)> {
    let mut out = Vec::new();
    for k in cands {
        let (oid, _) = hypo_create(c, &tables[k.table], k).await.expect("hypopg");
        out.push((oid, k.clone()));
    }
    out
}

/// The one index Dexter would suggest for `fp`, if any.
async fn one_query(c: &Client, fp: &Fp, tables: &[Table], names: &[String]) -> Option<Candidate> {
    let (base, _) = cost_of(c, fp).await;
    if base < 100.0 {
        return None;
    }
    let mut singles = Vec::new();
    let mut pairs = Vec::new();
    for (t, name) in names.iter().enumerate() {
        let mut cols: Vec<String> = fp
            .uses
            .iter()
            .filter(|u| u.tables.contains(name) && tables[t].columns.contains(&u.column))
            .map(|u| u.column.clone())
            .collect();
        cols.sort();
        cols.dedup();
        for a in &cols {
            singles.push(Candidate {
                table: t,
                keys: vec![(a.clone(), false)],
                include: vec![],
                predicate: None,
                with: vec![],
            });
            for b in cols.iter().filter(|b| *b != a) {
                pairs.push(Candidate {
                    table: t,
                    keys: vec![(a.clone(), false), (b.clone(), false)],
                    include: vec![],
                    predicate: None,
                    with: vec![],
                });
            }
        }
    }
    reset(c).await.expect("reset");
    let mut made = create_all(c, tables, &singles).await;
    let (cost1, plan1) = cost_of(c, fp).await;
    made.extend(create_all(c, tables, &pairs).await);
    let (cost2, plan2) = cost_of(c, fp).await;
    let used = |p: &serde_json::Value| -> Vec<Candidate> {
        made.iter()
            .filter(|(o, _)| uses_index(p, *o))
            .map(|(_, k)| k.clone())
            .collect()
    };
    let mut chosen = Vec::new();
    if cost1 < base * 0.5 {
        chosen = used(&plan1);
        if cost1 > 100.0 && cost2 < cost1 * 0.5 {
            chosen = used(&plan2);
        }
    }
    reset(c).await.expect("reset");
    if chosen.len() <= 1 {
        return chosen.pop();
    }
    let mut best: Option<(f64, Candidate)> = None;
    for k in chosen {
        create_all(c, tables, std::slice::from_ref(&k)).await;
        let (cost, _) = cost_of(c, fp).await;
        reset(c).await.expect("reset");
        if best.as_ref().is_none_or(|(b, _)| cost < *b) {
            best = Some((cost, k));
        }
    }
    best.map(|(_, k)| k)
}

/// Dexter's suggestions for the planned fingerprints, as advice rows (for scoring).
pub async fn suggest(c: &Client, fps: &[Fp]) -> Vec<IndexAdvice> {
    let names = used_tables(fps);
    let mut tables = Vec::new();
    let mut resolved = Vec::new();
    for n in names {
        if let Some(t) = catalog::table(c, &n).await.expect("catalog") {
            tables.push(t);
            resolved.push(n);
        }
    }
    let mut found: Vec<Candidate> = Vec::new();
    for fp in fps.iter().filter(|f| !f.samples.is_empty()) {
        if let Some(k) = one_query(c, fp, &tables, &resolved).await {
            if !found.contains(&k) {
                found.push(k);
            }
        }
    }
    let existing = |k: &Candidate| {
        tables[k.table].indexes.iter().any(|i| {
            let n = k.keys.len();
            i.btree
                && i.keys.len() >= n
                && i.keys[..n]
                    .iter()
                    .zip(&k.keys)
                    .all(|(a, (b, _))| a.as_deref() == Some(b))
        })
    };
    let snapshot = found.clone();
    found.retain(|k| {
        let led = snapshot
            .iter()
            .any(|o| o.keys.len() > 1 && k.is_prefix_of(o));
        !existing(k) && (k.keys.len() != 1 || !led)
    });
    found
        .iter()
        .map(|k| {
            let t = &tables[k.table];
            IndexAdvice {
                database: "postgres".into(),
                table: t.qualified.clone(),
                columns: k.key_names(),
                include: vec![],
                predicate: None,
                sql: format!("CREATE INDEX CONCURRENTLY {};", k.definition(t)),
                validated: true,
                cost_before: 1.0,
                cost_after: 0.0,
                saving: 1.0,
                est_time_saved_ms: 0.0,
                fingerprints: vec![],
                helps: vec![],
                size_bytes: None,
                write_calls: 0,
                write_cost_ms: 0.0,
                reason: "dexter".into(),
            }
        })
        .collect()
}
