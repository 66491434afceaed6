//! From a finished search to what the report says: per index, the fingerprints it helps
//! (plan cost today → with the proposed set, calls, share of total time), its size, the
//! write cost, and why (the plan node it replaces); and the costly fingerprints that no index
//! can help because they read most of a table.

use super::catalog::Table;
use super::search::{uses_index, Search};
use super::workload::cost;
use super::AdvisorError;
use crate::insight::explain::{self, root};
use crate::insight::model::{hex_id, Helped, IndexAdvice, NoIndexHelps};
use serde_json::Value;

/// A fingerprint reading at least this share of a table's rows gets no index advice.
const MOST_OF_TABLE: f64 = 0.3;
/// A candidate cutting an unhelped fingerprint's plan cost by this much is named in the
/// report (see [`nearest`]).
const NOTED_CUT: f64 = 0.05;

/// The proposed indexes of a finished search, most time saved first.
pub async fn proposals(
    s: &mut Search<'_>,
    db: &str,
    base_plans: &[Value],
) -> Result<Vec<IndexAdvice>, AdvisorError> {
    // final plans: which chosen index each fingerprint uses
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); s.chosen.len()];
    let mut finals: Vec<Option<Value>> = vec![None; s.fps.len()];
    let touched: Vec<usize> = (0..s.fps.len())
        .filter(|f| s.chosen.iter().any(|c| s.affected[c.cand].contains(f)))
        .collect();
    for f in touched {
        let (c, plans) = cost(s.client, &s.fps[f]).await?;
        s.current[f] = c;
        for (k, ch) in s.chosen.iter().enumerate() {
            if plans.iter().any(|p| uses_index(p, ch.oid)) {
                users[k].push(f);
            }
        }
        finals[f] = plans.into_iter().next();
    }
    let mut out = Vec::new();
    for (k, ch) in s.chosen.iter().enumerate() {
        let c = &s.cands[ch.cand];
        let table = &s.tables[c.table];
        let mut helps = Vec::new();
        let mut saved = 0.0;
        let mut time = 0.0;
        for &f in &users[k] {
            let fp = &s.fps[f];
            let sharing = users.iter().filter(|u| u.contains(&f)).count().max(1) as f64;
            let cut = 1.0 - s.current[f] / s.base[f].max(f64::MIN_POSITIVE);
            saved += fp.total_ms * cut.max(0.0) / sharing;
            time += fp.total_ms;
            let after = finals[f].as_ref().unwrap_or(&Value::Null);
            helps.push(Helped {
                fingerprint: hex_id(fp.id),
                query: fp.query.clone(),
                calls: fp.calls,
                time_share: fp.share,
                cost_before: s.base[f],
                cost_after: s.current[f],
                replaces: replaced(&base_plans[f], after, table, ch.oid),
            });
        }
        if helps.is_empty() {
            continue;
        }
        let write_calls: u64 = s
            .fps
            .iter()
            .filter(|w| w.writes.iter().any(|t| names(t, table)))
            .map(|w| w.calls)
            .sum();
        let upkeep = s.upkeep(ch.cand, &[]);
        let cost_before: f64 = helps.iter().map(|h| h.cost_before).sum();
        let cost_after: f64 = helps.iter().map(|h| h.cost_after).sum();
        let reason = format!(
            "{}; {}",
            helps[0].replaces,
            if write_calls > 0 {
                format!(
                    "{write_calls} write(s) to {} would maintain it (~{:.1} ms)",
                    table.name, upkeep
                )
            } else {
                format!("no writes to {} seen", table.name)
            }
        );
        out.push(IndexAdvice {
            database: db.to_string(),
            table: table.qualified.clone(),
            columns: c.key_labels(),
            include: c.include.clone(),
            predicate: c.predicate.clone(),
            sql: c.create_sql(table),
            validated: true,
            cost_before,
            cost_after,
            saving: if time > 0.0 { saved / time } else { 0.0 },
            est_time_saved_ms: saved,
            fingerprints: helps.iter().map(|h| h.fingerprint.clone()).collect(),
            helps,
            size_bytes: Some(ch.size),
            write_calls,
            write_cost_ms: upkeep,
            reason: super::candidates::reason_on(table, reason),
        });
    }
    out.sort_by(|a, b| {
        (b.est_time_saved_ms.total_cmp(&a.est_time_saved_ms)).then(a.sql.cmp(&b.sql))
    });
    Ok(out)
}

/// Is `written` (as a statement names it) this table?
pub fn names(written: &str, table: &Table) -> bool {
    written.rsplit('.').next() == Some(table.name.as_str())
}

/// "Seq Scan on t (Filter: …) under Nested Loop → Index Scan on the new index; Sort gone".
fn replaced(before: &Value, after: &Value, table: &Table, oid: i64) -> String {
    let old: Vec<String> = walk(before)
        .into_iter()
        .filter(|(n, _)| n.get("Relation Name").and_then(Value::as_str) == Some(&table.name))
        .map(|(n, parent)| {
            let mut s = format!("{} on {}", kind(n), table.name);
            if let Some(f) = n.get("Filter").and_then(Value::as_str) {
                // the plan was made with a client's values: show the filter's shape only
                let shape = crate::insight::slowlog::redact_literals(f);
                let shape = crate::insight::report::short(&shape, 60);
                s.push_str(&format!(" (Filter: {shape})"));
            }
            if let Some(p) = parent {
                s.push_str(&format!(" under {p}"));
            }
            s
        })
        .collect();
    let new = walk(after)
        .into_iter()
        .find(|(n, _)| {
            n.get("Index Name")
                .and_then(Value::as_str)
                .is_some_and(|i| i.contains(&format!("<{oid}>")))
        })
        .map(|(n, _)| kind(n).to_string())
        .unwrap_or_else(|| "index scan".into());
    let sorts = |p: &Value| walk(p).iter().filter(|(n, _)| kind(n) == "Sort").count();
    let sort_note = if sorts(after) < sorts(before) {
        "; Sort removed"
    } else {
        ""
    };
    let old = if old.is_empty() {
        "a costlier plan".to_string()
    } else {
        old.join(", ")
    };
    format!("replaces {old}: {new} on the new index{sort_note}")
}

fn kind(n: &Value) -> &str {
    n.get("Node Type").and_then(Value::as_str).unwrap_or("?")
}

/// Every node with its parent's node type.
fn walk(plan: &Value) -> Vec<(&Value, Option<&str>)> {
    let mut out = Vec::new();
    let mut stack: Vec<(&Value, Option<&str>)> =
        root(plan).map(|r| (r, None)).into_iter().collect();
    while let Some((n, parent)) = stack.pop() {
        out.push((n, parent));
        if let Some(children) = n.get("Plans").and_then(Value::as_array) {
            stack.extend(children.iter().map(|c| (c, Some(kind(n)))));
        }
    }
    out
}

/// Costly fingerprints (at least `min_share` of the time) no proposal helps: those an index
/// tried made cheaper, but by less than the margin (see [`nearest`]), and those that read
/// most of a table and keep all they read (no `LIMIT`): no index beats a sequential scan there.
pub fn no_index_helps(
    s: &Search<'_>,
    db: &str,
    base_plans: &[Value],
    helped: &[String],
    min_share: f64,
) -> Vec<NoIndexHelps> {
    let mut out = Vec::new();
    for (f, fp) in s.fps.iter().enumerate() {
        if fp.share < min_share || helped.contains(&hex_id(fp.id)) || fp.samples.is_empty() {
            continue;
        }
        if let Some(reason) = nearest(s, f) {
            out.push(NoIndexHelps {
                database: db.to_string(),
                fingerprint: hex_id(fp.id),
                query: fp.query.clone(),
                time_share: fp.share,
                reason,
            });
            continue;
        }
        let nodes = walk(&base_plans[f]);
        // under a LIMIT the scan stops early: an index that yields the rows in order (or
        // finds the few wanted) can beat it, whatever the scan's estimate says
        if nodes.iter().any(|(n, _)| kind(n) == "Limit") {
            continue;
        }
        let most = nodes.into_iter().find_map(|(n, _)| {
            let rel = n.get("Relation Name").and_then(Value::as_str)?;
            let t = s.tables.iter().find(|t| t.name == rel)?;
            let rows = n.get("Plan Rows").and_then(Value::as_f64)?;
            (kind(n) == "Seq Scan" && t.rows > 0.0 && rows / t.rows >= MOST_OF_TABLE)
                .then(|| (rel.to_string(), rows / t.rows))
        });
        if let Some((rel, part)) = most {
            out.push(NoIndexHelps {
                database: db.to_string(),
                fingerprint: hex_id(fp.id),
                query: fp.query.clone(),
                time_share: fp.share,
                reason: format!(
                    "reads ~{:.0}% of {rel}: a sequential scan is already the cheapest way (plan cost {:.0})",
                    part * 100.0,
                    explain::total_cost(&base_plans[f]).unwrap_or(0.0)
                ),
            });
        }
    }
    out
}

/// Why no index helps fingerprint `f` though one was used in its plans: the candidate that
/// cut its plan cost the most, when by [`NOTED_CUT`] or more but less than
/// `advisor_min_saving`, and by how much. Found on a
/// stranger's billing workload: `NOT EXISTS (…) ORDER BY id LIMIT 50` per merchant walked
/// the primary key filtering the merchant, 17 % of the time left after two rounds of advice;
/// `(merchant_id, id)` made it 20× faster, but cut its plan cost 15 %, and the report said
/// nothing. The planner prices each row the index finds, and each anti-join probe, as a
/// random page read, where the walk's pages come in order, and all were cached: with
/// `random_page_cost = seq_page_cost` (what PostgreSQL's documentation advises for a cached
/// database) the same plans differ 2-4×. Naming the index and the cut lets a DBA measure it.
fn nearest(s: &Search<'_>, f: usize) -> Option<String> {
    let (i, cost) = s.nearest.get(f).copied().flatten()?;
    let before = s.base[f];
    let cut = 1.0 - cost / before.max(f64::MIN_POSITIVE);
    if before <= 0.0 || cut < NOTED_CUT || cut >= s.cfg.advisor_min_saving {
        return None;
    }
    let c = s.cands.get(i)?;
    let table = s.tables.get(c.table)?;
    Some(format!(
        "not helped by any index tried: the planner would use `{}`, but it cuts the plan cost \
         only {:.0} % ({before:.0} → {cost:.0}), under the {:.0} % margin (advisor_min_saving); \
         a plan cost can understate an index under a LIMIT or an anti-join: measure it \
         (EXPLAIN ANALYZE with and without the index)",
        c.definition(table),
        cut * 100.0,
        s.cfg.advisor_min_saving * 100.0
    ))
}

pub fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / 1024.0 / 1024.0)
    } else {
        format!("{:.0} KiB", n / 1024.0)
    }
}
