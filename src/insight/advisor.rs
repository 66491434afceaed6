//! The index advisor: from the fingerprints that cost the most execution time, candidate
//! indexes (from the parsed statement and its tables), each tried as a hypothetical index
//! (hypopg) against every fingerprint it could serve, with their *real* parameter values,
//! weighted by the time each took; a greedy set is chosen workload-wide, redundant members
//! dropped, and each index reported with what it replaces, its size and its write cost.
//!
//! Why a 50% margin (`advisor_min_saving`): planner costs are estimates, and an index costs
//! every write and some disk; a small estimated gain is within the estimate's noise. It is
//! Dexter's margin too, so DBAs who know that tool read our advice the same way.
//!
//! Modules: [`workload`] (which fingerprints, which samples, generic plans), [`columns`]
//! (column uses from the AST), [`candidates`], [`catalog`] (tables, unused/duplicate
//! indexes), [`search`] (hypopg trials, greedy choice, pruning), [`advice`] (what is said).
//! Without hypopg the advisor says so once, with the command to add it, and still names the
//! selective sequential scans it would index, marked `validated: false`.

pub mod advice;
pub mod candidates;
pub mod catalog;
pub mod columns;
pub mod partial;
pub mod search;
pub mod workload;

use super::explain::{self, ConnTarget, ExplainError};
use super::fingerprint::parse;
use super::model::{hex_id, AdviceReport, IndexAdvice};
use super::stats::unix_ms;
use super::{Insight, InsightConfig};
use crate::lab::postgres::describe;
use catalog::Table;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime};
use tokio_postgres::Client;
use workload::Fp;

#[derive(Debug, thiserror::Error)]
pub enum AdvisorError {
    #[error(transparent)]
    Side(#[from] ExplainError),
    #[error("catalog query failed: {0}")]
    Catalog(String),
}

fn catalog_err(e: tokio_postgres::Error) -> AdvisorError {
    AdvisorError::Catalog(describe(&e))
}

/// Fingerprints under this share of total time are not named as "no index can help".
const NO_HELP_SHARE: f64 = 0.01;

/// The fingerprints the advisor would examine now, per database, with their samples (for
/// comparisons such as the Dexter baseline of the tests).
pub fn workload(ins: &Insight) -> HashMap<String, Vec<Fp>> {
    ins.flush();
    workload::pick(&ins.agg.lock())
}

/// Run the advisor over the current statistics.
pub async fn advise(ins: &Insight) -> Result<AdviceReport, AdvisorError> {
    let started = Instant::now();
    let picked = workload::pick(&ins.agg.lock());
    let targets = ins.databases.read().clone();
    let mut report = AdviceReport {
        at_ms: unix_ms(SystemTime::now()),
        ..AdviceReport::default()
    };
    let mut dbs: Vec<_> = picked.into_iter().collect();
    dbs.sort_by(|a, b| a.0.cmp(&b.0));
    for (db, fps) in dbs {
        let planned: Vec<&Fp> = fps.iter().filter(|f| !f.samples.is_empty()).collect();
        report.examined += planned.len();
        report.examined_time_share += planned.iter().map(|f| f.share).sum::<f64>();
        let Some(target) = targets.get(&db) else {
            report
                .notes
                .push(format!("{db}: no side connection registered"));
            continue;
        };
        if let Err(e) = advise_database(&ins.config, &db, target, fps, &mut report).await {
            report.notes.push(format!("{db}: {e}"));
        }
    }
    report.indexes.sort_by(|a, b| {
        (b.est_time_saved_ms.total_cmp(&a.est_time_saved_ms)).then(a.sql.cmp(&b.sql))
    });
    report.n_plus_one = ins.agg.lock().n_plus_one();
    report.run_ms = started.elapsed().as_secs_f64() * 1000.0;
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

/// The tables the fingerprints name, resolved once: (written name → table number, tables).
async fn tables(
    client: &Client,
    fps: &[Fp],
) -> Result<(HashMap<String, usize>, Vec<Table>), AdvisorError> {
    let mut names: Vec<&String> = fps
        .iter()
        .flat_map(|f| f.uses.iter().flat_map(|u| u.tables.iter()).chain(&f.writes))
        .collect();
    names.sort();
    names.dedup();
    let mut index = HashMap::new();
    let mut out: Vec<Table> = Vec::new();
    for n in names {
        if let Some(t) = catalog::table(client, n).await? {
            let i = match out.iter().position(|o| o.qualified == t.qualified) {
                Some(i) => i,
                None => {
                    out.push(t);
                    out.len() - 1
                }
            };
            index.insert(n.clone(), i);
        }
    }
    Ok((index, out))
}

/// Column uses of simple views, read as uses of the table each shows (see
/// [`columns::view_columns`]): the planner expands a view, so a filter on the view's
/// `view_id` is one on the table's `id`, which an index there serves.
async fn through_views(client: &Client, fps: &mut [Fp]) -> Result<(), AdvisorError> {
    let names = workload::used_tables(fps);
    for name in names {
        let Some(def) = catalog::view_definition(client, &name).await? else {
            continue;
        };
        let Some(view) = parse(&def).and_then(|d| columns::view_columns(&d)) else {
            continue;
        };
        for f in fps.iter_mut() {
            let mut shown = Vec::new();
            for u in &mut f.uses {
                let Some(at) = u.tables.iter().position(|t| *t == name) else {
                    continue;
                };
                // (an unqualified column may be another table's of its scope: that stays)
                u.tables.remove(at);
                if let Some(base) = view.base(&u.column) {
                    shown.push(columns::ColumnUse {
                        column: base,
                        tables: vec![view.table.clone()],
                        ..u.clone()
                    });
                }
            }
            f.uses.retain(|u| !u.tables.is_empty());
            f.uses.extend(shown);
        }
    }
    Ok(())
}

async fn advise_database(
    cfg: &InsightConfig,
    db: &str,
    target: &ConnTarget,
    mut fps: Vec<Fp>,
    report: &mut AdviceReport,
) -> Result<(), AdvisorError> {
    let timeout = cfg.explain_timeout.0.max(Duration::from_millis(100));
    let client = explain::connect(target, timeout).await?;
    let (hypopg, note) = hypopg_ready(&client, db, cfg.advisor_create_hypopg).await?;
    report.notes.push(note);
    through_views(&client, &mut fps).await?;
    let (index, tables) = tables(&client, &fps).await?;
    let mut known = Vec::with_capacity(fps.len());
    for fp in &mut fps {
        known.push(workload::plan_extremes(&client, fp).await);
    }
    // today's plans (those made choosing the samples, else made now); a fingerprint that
    // cannot be planned is left out
    let mut base = Vec::new();
    let mut plans = Vec::new();
    for (fp, known) in fps.iter().zip(known) {
        let (c, p) = if fp.samples.is_empty() {
            (0.0, Vec::new())
        } else if let Some(p) = known {
            (workload::mean_cost(&p), p)
        } else {
            workload::cost(&client, fp).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, fingerprint = %hex_id(fp.id), "advisor cannot plan it");
                (0.0, Vec::new())
            })
        };
        base.push(c);
        plans.push(p.into_iter().next().unwrap_or(Value::Null));
    }
    let (cands, affected) = candidate_set(cfg, &fps, &base, &index, &tables);
    tracing::debug!(
        database = db,
        fingerprints = fps.len(),
        tables = tables.len(),
        candidates = cands.len(),
        ?base,
        "advisor candidates"
    );
    let writers = writers(&fps, &index, tables.len());
    let mut s = search::Search {
        client: &client,
        cfg,
        fps: &fps,
        tables: &tables,
        cands,
        affected,
        current: base.clone(),
        base,
        writers,
        chosen: Vec::new(),
        trials: 0,
        truncated: false,
        capped: 0,
        nearest: vec![None; fps.len()],
    };
    if hypopg {
        search::reset(&client).await?;
        let found = match s.run().await {
            Ok(()) => advice::proposals(&mut s, db, &plans).await,
            Err(e) => Err(e),
        };
        let _ = search::reset(&client).await;
        report.indexes.extend(found?);
        let mut note = format!(
            "{db}: {} candidate index(es) tried in {} plan(s)",
            s.cands.len(),
            s.trials
        );
        if s.truncated {
            let limit = search::MAX_PLANS;
            note += &format!("; stopped at the limit of {limit} plans, some candidates untried");
        }
        if s.capped > 0 {
            note += &format!(
                "; stopped at the limit of {} indexes chosen in one run ({} kept after \
                 pruning) with {} more candidate(s) still worth one: apply these, then run \
                 the advisor again",
                search::MAX_CHOSEN,
                s.chosen.len(),
                s.capped
            );
        }
        report.notes.push(note);
    } else {
        report.indexes.extend(inferred(&s, db, &plans));
    }
    let helped: Vec<String> = report
        .indexes
        .iter()
        .flat_map(|a| a.fingerprints.iter().cloned())
        .collect();
    report.no_index_helps.extend(advice::no_index_helps(
        &s,
        db,
        &plans,
        &helped,
        NO_HELP_SHARE,
    ));
    report.existing.extend(catalog::audit(&client, db).await?);
    Ok(())
}

/// Every distinct candidate for the planned fingerprints, with the fingerprints each is
/// tried against: those on its table that use its leading column.
fn candidate_set(
    cfg: &InsightConfig,
    fps: &[Fp],
    base: &[f64],
    index: &HashMap<String, usize>,
    tables: &[Table],
) -> (Vec<candidates::Candidate>, Vec<Vec<usize>>) {
    let mut cands: Vec<candidates::Candidate> = Vec::new();
    // A covering variant carrying a column some UPDATE sets would end that UPDATE's HOT
    // updates (every index written for each row, not only the heap page), a cost the search
    // does not weigh: on a stranger's logistics workload it proposed `stops (shipment_id,
    // route_id, seq) INCLUDE (kind, status)`, 86 MB against 30 MB plain, including
    // a column that workload updates. Such variants are not tried; the plain one still is.
    let mut updated: Vec<Vec<&str>> = vec![Vec::new(); tables.len()];
    for (w, column) in fps.iter().flat_map(|fp| fp.sets.iter()) {
        if let Some(&t) = index.get(w) {
            updated[t].push(column);
        }
    }
    for (f, fp) in fps.iter().enumerate() {
        if base[f] < cfg.advisor_min_cost {
            continue;
        }
        let mut written: Vec<&String> = fp.uses.iter().flat_map(|u| u.tables.iter()).collect();
        written.sort();
        written.dedup();
        for w in written {
            let Some(&t) = index.get(w) else { continue };
            if tables[t].rows < cfg.advisor_min_rows as f64 {
                continue;
            }
            for c in candidates::for_table(&fp.uses, &fp.constants, w, t, &tables[t]) {
                let unhot = c.include.iter().any(|i| updated[t].contains(&i.as_str()));
                if !unhot && !cands.contains(&c) {
                    cands.push(c);
                }
            }
            for keys in candidates::arms(&fp.uses, w, &tables[t]) {
                candidates::with_arms(&mut cands, t, &keys);
            }
        }
    }
    let affected = cands
        .iter()
        .map(|c| {
            // a candidate standing for an OR's arms is tried where any of them could serve
            let leads: Vec<&String> = std::iter::once(c)
                .chain(c.with.iter().map(|&j| &cands[j]))
                .map(|m| &m.keys[0].0)
                .collect();
            (0..fps.len())
                .filter(|&f| base[f] >= cfg.advisor_min_cost)
                .filter(|&f| {
                    fps[f].uses.iter().any(|u| {
                        leads.contains(&&u.key())
                            && u.tables.iter().any(|w| index.get(w) == Some(&c.table))
                    })
                })
                .collect()
        })
        .collect();
    (cands, affected)
}

/// Per table: the fingerprints that write to it (once each, however they name it).
fn writers(fps: &[Fp], index: &HashMap<String, usize>, tables: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); tables];
    for (f, fp) in fps.iter().enumerate() {
        for w in &fp.writes {
            if let Some(&t) = index.get(w) {
                if !out[t].contains(&f) {
                    out[t].push(f);
                }
            }
        }
    }
    out
}

/// Without hypopg: the equality-led candidate of each selective sequential scan, unvalidated.
fn inferred(s: &search::Search<'_>, db: &str, plans: &[Value]) -> Vec<IndexAdvice> {
    let mut out: Vec<IndexAdvice> = Vec::new();
    for (i, c) in s.cands.iter().enumerate() {
        let table = &s.tables[c.table];
        if !c.include.is_empty()
            || !c.with.is_empty()
            || out.iter().any(|o| o.table == table.qualified)
        {
            continue;
        }
        let selective: Vec<usize> = s.affected[i]
            .iter()
            .copied()
            .filter(|&f| {
                explain::summarize("", db, false, plans[f].clone())
                    .seq_scans
                    .iter()
                    .any(|sc| {
                        sc.relation == table.name
                            && sc.filter.is_some()
                            && sc.plan_rows <= table.rows * 0.1
                    })
            })
            .collect();
        if selective.is_empty() {
            continue;
        }
        let time: f64 = selective.iter().map(|&f| s.fps[f].total_ms).sum();
        out.push(IndexAdvice {
            database: db.to_string(),
            table: table.qualified.clone(),
            columns: c.key_labels(),
            include: Vec::new(),
            predicate: c.predicate.clone(),
            sql: c.create_sql(table),
            validated: false,
            cost_before: selective.iter().map(|&f| s.base[f]).sum(),
            cost_after: 0.0,
            saving: 0.0,
            est_time_saved_ms: time,
            fingerprints: selective.iter().map(|&f| hex_id(s.fps[f].id)).collect(),
            helps: Vec::new(),
            size_bytes: None,
            write_calls: 0,
            write_cost_ms: s.upkeep(i, &[]),
            reason: candidates::reason_on(
                table,
                format!(
                    "selective sequential scan of {} ({:.0} rows); not validated (no hypopg)",
                    table.name, table.rows
                ),
            ),
        });
    }
    out
}

/// Is hypopg usable on this connection (creating it when allowed)? And a note saying so,
/// with the command that adds it when it is missing.
async fn hypopg_ready(
    client: &Client,
    db: &str,
    create: bool,
) -> Result<(bool, String), AdvisorError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'hypopg'), \
                    EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'hypopg'), \
                    current_setting('server_version_num')::int / 10000",
            &[],
        )
        .await
        .map_err(catalog_err)?;
    let (created, available, major): (bool, bool, i32) = (row.get(0), row.get(1), row.get(2));
    if created {
        return Ok((true, format!("{db}: validated with hypopg")));
    }
    if available && create {
        match client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS hypopg")
            .await
        {
            Ok(()) => {
                return Ok((
                    true,
                    format!("{db}: validated with hypopg (extension created)"),
                ))
            }
            Err(e) => {
                return Ok((
                    false,
                    format!(
                        "{db}: hypopg could not be created ({}): advice not validated",
                        describe(&e)
                    ),
                ))
            }
        }
    }
    let fix = if available {
        format!("hypopg is installed but not created in this database: run `CREATE EXTENSION hypopg;` in {db} (or set advisor_create_hypopg)")
    } else {
        format!("hypopg is not installed: install it on the server (e.g. `apt-get install postgresql-{major}-hypopg`), then run `CREATE EXTENSION hypopg;` in {db}")
    };
    Ok((
        false,
        format!("{db}: {fix}; advice inferred from plans, not validated"),
    ))
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

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("orders"), "orders");
        assert_eq!(quote_ident("Orders"), "\"Orders\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
