//! The index advisor: candidate indexes from the plans and ASTs of slow statements, each
//! checked with a hypothetical index (hypopg) on the statement's *real* parameter values, kept
//! only when the planner's cost falls by `advisor_min_saving` (default 50%), and ranked by the
//! execution time it would have saved across the workload.
//!
//! Why 50%: planner costs are estimates, and a new index costs every write and some disk; a
//! small estimated gain is within the noise of the estimate and not worth that price. It is
//! also Dexter's margin, so DBAs who know that tool read our advice the same way.
//!
//! Evidence, per fingerprint (up to 3 real-valued samples): the fresh plan must show a
//! sequential scan of a table with at least `advisor_min_rows` rows and cost at least
//! `advisor_min_cost`; candidates are built from the statement's equality/join columns, then
//! range columns, then ORDER BY columns (at most 3); a candidate whose columns are a prefix of
//! an existing btree index is skipped. Without hypopg the advisor still names the sequential
//! scans it would index, marked `validated: false`, from the plan's own row estimates.

pub mod columns;

use super::aggregate::RawSample;
use super::explain::{self, ConnTarget, ExplainError};
use super::fingerprint::parse;
use super::model::{hex_id, AdviceReport, IndexAdvice};
use super::stats::unix_ms;
use super::{Insight, InsightConfig};
use crate::lab::postgres::describe;
use columns::{column_uses, ColumnUse, How};
use std::collections::HashMap;
use std::sync::Weak;
use std::time::{Duration, SystemTime};
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum AdvisorError {
    #[error(transparent)]
    Side(#[from] ExplainError),
    #[error("catalog query failed: {0}")]
    Catalog(String),
}

fn catalog(e: tokio_postgres::Error) -> AdvisorError {
    AdvisorError::Catalog(describe(&e))
}

/// One fingerprint to advise on.
struct Work {
    id: u64,
    total_ms: f64,
    samples: Vec<RawSample>,
}

/// A table as the catalog knows it.
struct Table {
    /// `"schema"."name"`, quoted for SQL.
    qualified: String,
    name: String,
    rows: f64,
    columns: Vec<String>,
    /// Column lists of valid, non-partial btree indexes (`None` for an expression).
    indexes: Vec<Vec<Option<String>>>,
}

/// Run the advisor over everything sampled so far.
pub async fn advise(ins: &Insight) -> Result<AdviceReport, AdvisorError> {
    let mut by_db: HashMap<String, Vec<Work>> = HashMap::new();
    {
        let agg = ins.agg.lock();
        for (id, e) in &agg.fps {
            if !e.stats.fingerprint.kind.explainable() {
                continue;
            }
            let Some(db) = e.raw.back().map(|r| r.database.clone()) else {
                continue;
            };
            by_db.entry(db.clone()).or_default().push(Work {
                id: *id,
                total_ms: e.stats.moments.total_ns as f64 / 1e6,
                samples: e.raw.iter().filter(|r| r.database == db).cloned().collect(),
            });
        }
    }
    let targets = ins.databases.read().clone();
    let mut report = AdviceReport {
        at_ms: unix_ms(SystemTime::now()),
        ..AdviceReport::default()
    };
    let mut dbs: Vec<_> = by_db.into_iter().collect();
    dbs.sort_by(|a, b| a.0.cmp(&b.0));
    for (db, work) in dbs {
        let Some(target) = targets.get(&db) else {
            report
                .notes
                .push(format!("{db}: no side connection registered"));
            continue;
        };
        match advise_database(&ins.config, &db, target, work).await {
            Ok((found, note)) => {
                report.indexes.extend(found);
                report.notes.push(note);
            }
            Err(e) => report.notes.push(format!("{db}: {e}")),
        }
    }
    report.indexes = merge_same(std::mem::take(&mut report.indexes));
    report.n_plus_one = ins.agg.lock().n_plus_one();
    Ok(report)
}

/// Run [`advise`] every `every` while the engine lives.
pub async fn run_periodically(insight: Weak<Insight>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(ins) = insight.upgrade() else { break };
        match ins.advise().await {
            Ok(r) => tracing::info!(indexes = r.indexes.len(), "index advisor ran"),
            Err(e) => tracing::warn!(error = %e, "index advisor failed"),
        }
    }
}

async fn advise_database(
    cfg: &InsightConfig,
    db: &str,
    target: &ConnTarget,
    work: Vec<Work>,
) -> Result<(Vec<IndexAdvice>, String), AdvisorError> {
    let timeout = cfg.explain_timeout.0.max(Duration::from_millis(100));
    let client = explain::connect(target, timeout).await?;
    let (hypopg, note) = hypopg_ready(&client, cfg.advisor_create_hypopg).await?;
    let mut found = Vec::new();
    for w in &work {
        match advise_one(&client, cfg, hypopg, db, w).await {
            Ok(Some(a)) => found.push(a),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, fingerprint = %hex_id(w.id), "advisor skipped"),
        }
    }
    Ok((
        found,
        format!("{db}: {note}; {} statement(s) examined", work.len()),
    ))
}

/// Is hypopg usable on this connection (creating it when allowed)? And a note saying so.
async fn hypopg_ready(client: &Client, create: bool) -> Result<(bool, String), AdvisorError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'hypopg'), \
                    EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'hypopg')",
            &[],
        )
        .await
        .map_err(catalog)?;
    let (created, available): (bool, bool) = (row.get(0), row.get(1));
    if created {
        return Ok((true, "validated with hypopg".into()));
    }
    if available && create {
        match client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS hypopg")
            .await
        {
            Ok(()) => return Ok((true, "validated with hypopg (extension created)".into())),
            Err(e) => {
                return Ok((
                    false,
                    format!(
                        "hypopg could not be created ({}): advice not validated",
                        describe(&e)
                    ),
                ))
            }
        }
    }
    let why = if available {
        "hypopg is installed but not created in this database (CREATE EXTENSION hypopg, or set advisor_create_hypopg)"
    } else {
        "hypopg is not installed"
    };
    Ok((
        false,
        format!("{why}: advice inferred from plans, not validated"),
    ))
}

async fn plan_costs(
    client: &Client,
    samples: &[RawSample],
) -> Result<(f64, Vec<serde_json::Value>), AdvisorError> {
    let mut cost = 0.0;
    let mut plans = Vec::new();
    for s in samples {
        let p = explain::explain(client, &s.text, &s.params, false).await?;
        cost += explain::total_cost(&p).unwrap_or(0.0);
        plans.push(p);
    }
    Ok((cost, plans))
}

async fn advise_one(
    client: &Client,
    cfg: &InsightConfig,
    hypopg: bool,
    db: &str,
    w: &Work,
) -> Result<Option<IndexAdvice>, AdvisorError> {
    let Some(first) = w.samples.first() else {
        return Ok(None);
    };
    let Some(statements) = parse(&first.text) else {
        return Ok(None);
    };
    let uses = column_uses(&statements);
    let (before, plans) = plan_costs(client, &w.samples).await?;
    if before / (w.samples.len() as f64) < cfg.advisor_min_cost {
        return Ok(None);
    }
    let mut scans: Vec<_> = plans
        .into_iter()
        .flat_map(|p| explain::summarize("", db, false, p).seq_scans)
        .collect();
    scans.dedup_by(|a, b| a.relation == b.relation);
    let mut best: Option<(Vec<String>, Table, f64, f64)> = None;
    for scan in &scans {
        let written = written_name(&uses, &scan.relation);
        let Some(table) = table_info(client, &written).await? else {
            continue;
        };
        if table.rows < cfg.advisor_min_rows as f64 {
            continue;
        }
        for cand in candidates(&uses, &written, &table) {
            if !hypopg {
                // unvalidated: the first (equality-led) candidate of a selective filter
                let selectivity = (scan.plan_rows / table.rows.max(1.0)).min(1.0);
                if scan.filter.is_some() && selectivity <= 0.1 && best.is_none() {
                    best = Some((cand, table_clone(&table), before, 1.0 - selectivity));
                }
                break;
            }
            let Some(after) = hypothetical_cost(client, &table, &cand, &w.samples).await? else {
                continue;
            };
            let better = best.as_ref().is_none_or(|(c, _, a, _)| {
                after < *a * 0.99 || (after <= *a && cand.len() < c.len())
            });
            if after <= before * (1.0 - cfg.advisor_min_saving) && better {
                best = Some((cand, table_clone(&table), after, 1.0 - after / before));
            }
        }
    }
    Ok(best.map(|(cols, table, after, saving)| IndexAdvice {
        database: db.to_string(),
        sql: format!(
            "CREATE INDEX CONCURRENTLY ON {} ({});",
            table.qualified,
            cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ")
        ),
        table: table.qualified.clone(),
        columns: cols,
        validated: hypopg,
        cost_before: before,
        cost_after: if hypopg { after } else { 0.0 },
        saving,
        est_time_saved_ms: w.total_ms * saving,
        fingerprints: vec![hex_id(w.id)],
        reason: if hypopg {
            format!(
                "sequential scan of {} ({:.0} rows); hypothetical index cuts plan cost {:.0} -> {:.0} over {} real-valued sample(s)",
                table.name, table.rows, before, after, w.samples.len()
            )
        } else {
            format!(
                "sequential scan of {} ({:.0} rows) keeps ~{:.1}% of rows; not validated (no hypopg)",
                table.name,
                table.rows,
                (1.0 - saving) * 100.0
            )
        },
    }))
}

fn table_clone(t: &Table) -> Table {
    Table {
        qualified: t.qualified.clone(),
        name: t.name.clone(),
        rows: t.rows,
        columns: t.columns.clone(),
        indexes: t.indexes.clone(),
    }
}

/// The table name as the statement wrote it (schema-qualified or not) for a plan relation.
fn written_name(uses: &[ColumnUse], relation: &str) -> String {
    uses.iter()
        .flat_map(|u| u.tables.iter())
        .find(|t| t.rsplit('.').next() == Some(relation))
        .cloned()
        .unwrap_or_else(|| relation.to_string())
}

async fn table_info(client: &Client, written: &str) -> Result<Option<Table>, AdvisorError> {
    let regclass: String = written
        .split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".");
    let Some(row) = client
        .query_opt(
            "SELECT n.nspname::text, c.relname::text, \
                    greatest(c.reltuples, coalesce(s.n_live_tup, 0))::float8, \
                    ARRAY(SELECT attname::text FROM pg_attribute \
                          WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
             WHERE c.oid = to_regclass($1::text)",
            &[&regclass],
        )
        .await
        .map_err(catalog)?
    else {
        return Ok(None);
    };
    let (schema, name): (String, String) = (row.get(0), row.get(1));
    let indexes = client
        .query(
            "SELECT ARRAY(SELECT a.attname::text \
                          FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
                          LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                          ORDER BY k.n) \
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
             JOIN pg_am am ON am.oid = ic.relam \
             WHERE i.indrelid = to_regclass($1::text) AND i.indisvalid \
               AND i.indpred IS NULL AND am.amname = 'btree'",
            &[&regclass],
        )
        .await
        .map_err(catalog)?
        .iter()
        .map(|r| r.get::<_, Vec<Option<String>>>(0))
        .collect();
    Ok(Some(Table {
        qualified: format!("{}.{}", quote_ident(&schema), quote_ident(&name)),
        name,
        rows: row.get(2),
        columns: row.get(3),
        indexes,
    }))
}

/// Candidate column lists for `table`: equality/join columns lead, then one range column, or
/// the ORDER BY columns; at most three columns; none already a prefix of an existing index.
fn candidates(uses: &[ColumnUse], written: &str, table: &Table) -> Vec<Vec<String>> {
    let mine = |how: &[How]| -> Vec<String> {
        let mut v: Vec<String> = uses
            .iter()
            .filter(|u| how.contains(&u.how))
            .filter(|u| u.tables.iter().any(|t| t == written))
            .filter(|u| table.columns.contains(&u.column))
            .map(|u| u.column.clone())
            .collect();
        v.dedup();
        v
    };
    let eq = mine(&[How::Eq, How::Join]);
    let range = mine(&[How::Range]);
    let order = mine(&[How::Order]);
    let lead: Vec<String> = eq.iter().take(2).cloned().collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    out.extend(eq.iter().map(|c| vec![c.clone()]));
    out.extend(range.iter().map(|c| vec![c.clone()]));
    if lead.len() == 2 {
        out.push(lead.clone());
    }
    if !lead.is_empty() {
        for r in &range {
            out.push(lead.iter().chain(std::iter::once(r)).cloned().collect());
        }
        if !order.is_empty() {
            out.push(lead.iter().chain(order.iter()).take(3).cloned().collect());
        }
    }
    if !order.is_empty() {
        out.push(order.iter().take(3).cloned().collect());
    }
    let mut seen = Vec::new();
    out.retain(|c| {
        let fresh = !c.is_empty() && c.len() <= 3 && !seen.contains(c);
        seen.push(c.clone());
        fresh && !covered(c, &table.indexes)
    });
    out
}

/// Is `cols` a prefix of an existing index (so that index already serves it)?
fn covered(cols: &[String], indexes: &[Vec<Option<String>>]) -> bool {
    indexes.iter().any(|idx| {
        idx.len() >= cols.len()
            && idx
                .iter()
                .zip(cols)
                .all(|(i, c)| i.as_deref() == Some(c.as_str()))
    })
}

/// Summed plan cost of `samples` with a hypothetical index on `cols`, or `None` when the
/// planner does not use it.
async fn hypothetical_cost(
    client: &Client,
    table: &Table,
    cols: &[String],
    samples: &[RawSample],
) -> Result<Option<f64>, AdvisorError> {
    let def = format!(
        "CREATE INDEX ON {} ({})",
        table.qualified,
        cols.iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let row = client
        .query_one(
            "SELECT indexrelid::int8 FROM hypopg_create_index($1::text)",
            &[&def],
        )
        .await
        .map_err(catalog)?;
    let oid: i64 = row.get(0);
    let result = plan_costs(client, samples).await;
    client
        .batch_execute("SELECT hypopg_reset()")
        .await
        .map_err(catalog)?;
    let (after, plans) = result?;
    let tag = format!("<{oid}>");
    let used = plans
        .iter()
        .any(|p| explain::index_names(p).iter().any(|n| n.contains(&tag)));
    Ok(used.then_some(after))
}

/// Fold advice for the same index from several fingerprints into one, ranked by time saved.
fn merge_same(found: Vec<IndexAdvice>) -> Vec<IndexAdvice> {
    let mut out: Vec<IndexAdvice> = Vec::new();
    for a in found {
        match out
            .iter_mut()
            .find(|o| o.database == a.database && o.table == a.table && o.columns == a.columns)
        {
            Some(o) => {
                o.cost_before += a.cost_before;
                o.cost_after += a.cost_after;
                o.est_time_saved_ms += a.est_time_saved_ms;
                o.saving = o.saving.max(a.saving);
                o.fingerprints.extend(a.fingerprints);
            }
            None => out.push(a),
        }
    }
    out.sort_by(|a, b| b.est_time_saved_ms.total_cmp(&a.est_time_saved_ms));
    out
}

/// An identifier for SQL: bare when PostgreSQL would fold it to itself, else double-quoted.
pub fn quote_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(indexes: Vec<Vec<Option<String>>>) -> Table {
        Table {
            qualified: "public.orders".into(),
            name: "orders".into(),
            rows: 1e6,
            columns: ["id", "customer_id", "status", "created"]
                .map(String::from)
                .to_vec(),
            indexes,
        }
    }

    #[test]
    fn candidates_lead_with_equality_and_skip_covered_prefixes() {
        let st = parse(
            "select * from orders where customer_id = $1 and status = $2 and created > $3 order by created",
        )
        .unwrap_or_default();
        let uses = column_uses(&st);
        let c = candidates(&uses, "orders", &table(vec![]));
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(c.contains(&s(&["customer_id"])), "{c:?}");
        assert!(
            c.contains(&s(&["customer_id", "status", "created"])),
            "{c:?}"
        );
        assert!(c.iter().all(|x| x.len() <= 3));
        let idx = vec![vec![
            Some("customer_id".to_string()),
            Some("id".to_string()),
        ]];
        let c = candidates(&uses, "orders", &table(idx));
        assert!(!c.contains(&s(&["customer_id"])), "{c:?}");
        assert!(c.contains(&s(&["status"])));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("orders"), "orders");
        assert_eq!(quote_ident("Orders"), "\"Orders\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
