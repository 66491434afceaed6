//! The workload the advisor works on: the fingerprints that dominate execution time (and any
//! with slow samples), each with up to [`SAMPLES`] real-valued executions to plan. A
//! fingerprint the proxy saw only as an Execute (no values) is planned generically instead:
//! the text it was prepared with (or the fingerprint with its `?` numbered `$n`) is prepared
//! with `plan_cache_mode = force_generic_plan`, as PostgreSQL would plan it after five
//! executions.
//!
//! Which literals are part of the shape (partial-index predicates) is read from the prepared
//! text when the shape was ever seen prepared: there, a value written into the statement is
//! constant and a placeholder is not — even if every literal-text sample happened to carry
//! the same value where the prepared form binds one.

use super::columns::{column_uses, set_columns, written_tables, ColumnUse};
use super::partial::{self, ConstantPredicate};
use super::AdvisorError;
use crate::insight::aggregate::{slowest, Aggregate};
use crate::insight::explain;
use crate::insight::fingerprint::{parse, Kind};
use crate::pg::sql::lexer::{Kind as Tok, Lexer};
use serde_json::Value;
use std::collections::HashMap;
use tokio_postgres::Client;

/// Fingerprints examined per run, most total time first.
pub const MAX_EXAMINED: usize = 40;
/// Real-valued samples planned per fingerprint.
pub const SAMPLES: usize = 2;

/// How one execution is planned.
#[derive(Debug, Clone)]
pub enum Sample {
    /// The text as sent (literals) and its bound values, if any.
    Values {
        text: String,
        params: Vec<Option<String>>,
    },
    /// A text with `$n` placeholders (as prepared, or the fingerprint's `?` numbered),
    /// planned generically.
    Generic { text: String },
}

/// One fingerprint to advise on.
#[derive(Debug, Clone)]
pub struct Fp {
    pub id: u64,
    pub query: String,
    pub kind: Kind,
    pub calls: u64,
    pub total_ms: f64,
    pub share: f64,
    pub samples: Vec<Sample>,
    pub uses: Vec<ColumnUse>,
    /// Predicates every execution of the shape has (partial index candidates).
    pub constants: Vec<ConstantPredicate>,
    /// Tables an INSERT/UPDATE/DELETE writes (as written in the statement).
    pub writes: Vec<String>,
    /// The columns an UPDATE sets, each with its table as written.
    pub sets: Vec<(String, String)>,
    /// Kept samples not planned: [`plan_extremes`] may plan one of them instead.
    pub spare: Vec<Sample>,
}

/// Every table the fingerprints' column uses name, as written, once each.
pub fn used_tables(fps: &[Fp]) -> Vec<String> {
    let mut names: Vec<String> = fps
        .iter()
        .flat_map(|f| f.uses.iter().flat_map(|u| u.tables.iter().cloned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Per database: the fingerprints to plan (explainable, by total time) and the writes.
pub fn pick(agg: &Aggregate) -> HashMap<String, Vec<Fp>> {
    let all = agg.total_ns().max(1) as f64;
    let mut entries: Vec<_> = agg
        .fps
        .iter()
        .filter(|(_, e)| e.stats.moments.calls > 0)
        .collect();
    // equal times by id, not in the map's order (which differs from one process to the next)
    entries.sort_by_key(|(id, e)| (std::cmp::Reverse(e.stats.moments.total_ns), **id));
    let mut out: HashMap<String, Vec<Fp>> = HashMap::new();
    let mut planned = 0;
    for (id, e) in entries {
        let fp = &e.stats.fingerprint;
        let slow = !e.samples.is_empty();
        let Some(db) = e
            .stats
            .splits
            .iter()
            .max_by_key(|(_, m)| m.calls)
            .map(|(k, _)| k.database.to_string())
        else {
            continue;
        };
        let explainable = fp.kind.explainable() && fp.kind != Kind::Insert;
        let writing = matches!(fp.kind, Kind::Insert | Kind::Update | Kind::Delete);
        if explainable && planned >= MAX_EXAMINED && !slow && !writing {
            continue;
        }
        // the slowest kept first, then the newest
        let first = slowest(&e.raw);
        let mut samples: Vec<Sample> = (first.iter().copied())
            .chain((0..e.raw.len()).rev().filter(|&i| Some(i) != first))
            .map(|i| &e.raw[i])
            .filter(|r| r.database == db && (!r.params.is_empty() || r.text != *fp.text))
            .map(|r| Sample::Values {
                text: r.text.clone(),
                params: r.params.clone(),
            })
            .collect();
        // every kept sample tells which literals are constant; the first few are planned
        let seen = samples.split_off(samples.len().min(SAMPLES));
        let template = (e.template.as_ref()).filter(|t| t.database == db);
        if samples.is_empty() {
            samples.extend(match template {
                Some(t) => Some(Sample::Generic {
                    text: t.text.clone(),
                }),
                None => generic(&fp.text),
            });
        }
        // the fingerprint's `?` do not parse everywhere; a sample's text does
        let statements = samples.first().and_then(statements_of).unwrap_or_default();
        let constants = match template.and_then(|t| parse(&t.text)) {
            Some(prepared) => partial::constant_predicates(&prepared, true),
            None => constants(&samples, &seen, &statements),
        };
        let writes = written_tables(&statements);
        if explainable {
            planned += 1;
        }
        out.entry(db).or_default().push(Fp {
            id: *id,
            query: fp.text.to_string(),
            kind: fp.kind,
            calls: e.stats.moments.calls,
            total_ms: e.stats.moments.total_ns as f64 / 1e6,
            share: e.stats.moments.total_ns as f64 / all,
            samples: if explainable { samples } else { Vec::new() },
            uses: column_uses(&statements),
            constants,
            writes,
            sets: set_columns(&statements),
            spare: if explainable { seen } else { Vec::new() },
        });
    }
    out
}

fn statements_of(s: &Sample) -> Option<Vec<sqlparser::ast::Statement>> {
    match s {
        Sample::Values { text, .. } | Sample::Generic { text, .. } => parse(text),
    }
}

/// The constant predicates of a shape: a literal is part of it when written beside bound
/// parameters, or when every kept sample of literal-only text (`samples`, planned, then
/// `more`; at least two) carries the same one. Two samples alone agree by chance too often
/// on a column of few values (`user_id = 5` twice in ten values: one run in ten).
fn constants(
    samples: &[Sample],
    more: &[Sample],
    first: &[sqlparser::ast::Statement],
) -> Vec<ConstantPredicate> {
    match samples {
        [Sample::Values { params, .. }, ..] if !params.is_empty() => {
            partial::constant_predicates(first, true)
        }
        [Sample::Values { .. }, rest @ ..] if !rest.is_empty() => {
            let mut common = partial::constant_predicates(first, true);
            for other in rest.iter().chain(more) {
                let again = statements_of(other).unwrap_or_default();
                common = partial::common(common, &partial::constant_predicates(&again, true));
            }
            common
        }
        _ => partial::constant_predicates(first, false),
    }
}

/// The fingerprint text with each `?` constant numbered `$1`, `$2`…
pub fn generic(text: &str) -> Option<Sample> {
    let mut out = String::with_capacity(text.len() + 8);
    let mut last = 0;
    let mut n = 0;
    for t in Lexer::new(text) {
        if t.kind == Tok::Op && t.text(text) == "?" {
            n += 1;
            out.push_str(text.get(last..t.start)?);
            out.push_str(&format!("${n}"));
            last = t.end;
        }
    }
    out.push_str(text.get(last..)?);
    Some(Sample::Generic { text: out })
}

/// The plan of one sample.
pub async fn plan(client: &Client, s: &Sample) -> Result<Value, AdvisorError> {
    Ok(match s {
        Sample::Values { text, params } => explain::explain(client, text, params, false).await?,
        Sample::Generic { text } => explain::explain_generic(client, text).await?,
    })
}

/// The rows a plan expects its scans to read. Before any index exists every sample of a
/// shape is the same sequential scan, as fast as the next, so its time does not tell a big
/// tenant's values from a small one's; the planner's row estimates do.
fn scanned_rows(plan: &Value) -> f64 {
    explain::nodes(plan)
        .iter()
        .filter(|n| {
            (n.get("Node Type").and_then(Value::as_str)).is_some_and(|t| t.ends_with("Scan"))
        })
        .filter_map(|n| n.get("Plan Rows").and_then(Value::as_f64))
        .sum()
}

/// Plan `fp` with the extremes of its kept values: of its samples (the slowest, the newest)
/// and its spares, the one whose plan reads the most rows and the one that reads the
/// fewest. On a stranger's billing workload the first advice was judged on a small
/// merchant's login (cost 14) where the big merchant's costs 5,202, and proposed an umbrella
/// index; and two heavy samples alike (a helpdesk's lists of closed tickets) lose the index
/// the light ones need (its open tickets: `(tenant_id, status, created_at)`). A sample that
/// cannot be planned counts as reading nothing.
///
/// The plans of the samples kept, when every one of them could be planned: today's cost
/// ([`cost`]) is read from them rather than planned a second time. `None` when `fp` has no
/// spare (nothing to choose, nothing planned) or a kept sample failed.
pub async fn plan_extremes(client: &Client, fp: &mut Fp) -> Option<Vec<Value>> {
    if fp.spare.is_empty() || fp.samples.is_empty() {
        return None;
    }
    let mut all = std::mem::take(&mut fp.samples);
    all.append(&mut fp.spare);
    let mut rows = Vec::with_capacity(all.len());
    let mut plans = Vec::with_capacity(all.len());
    for s in &all {
        let p = plan(client, s).await.ok();
        rows.push(p.as_ref().map(scanned_rows).unwrap_or(0.0));
        plans.push(p);
    }
    // the first of equals: the slowest, then the newest
    let by_rows = |a: &usize, b: &usize| rows[*a].total_cmp(&rows[*b]);
    let heaviest = (0..all.len()).rev().max_by(by_rows).unwrap_or(0);
    let lightest = (0..all.len()).min_by(by_rows).unwrap_or(0);
    let mut order: Vec<usize> = vec![heaviest];
    let others = (0..all.len()).filter(|&i| i != heaviest && i != lightest);
    order.extend(
        std::iter::once(lightest)
            .filter(|&i| i != heaviest)
            .chain(others),
    );
    let kept: Option<Vec<Value>> = (order.iter().take(SAMPLES))
        .map(|&i| plans[i].take())
        .collect();
    let mut all: Vec<Option<Sample>> = all.into_iter().map(Some).collect();
    let mut ordered = order.into_iter().filter_map(|i| all[i].take());
    fp.samples = ordered.by_ref().take(SAMPLES).collect();
    fp.spare = ordered.collect();
    kept.filter(|k| k.len() == fp.samples.len())
}

/// Mean plan cost of `plans`, one per sample.
pub fn mean_cost(plans: &[Value]) -> f64 {
    let sum: f64 = plans.iter().filter_map(explain::total_cost).sum();
    sum / plans.len().max(1) as f64
}

/// Mean plan cost over `fp`'s samples, and their plans.
pub async fn cost(client: &Client, fp: &Fp) -> Result<(f64, Vec<Value>), AdvisorError> {
    let mut plans = Vec::with_capacity(fp.samples.len());
    for s in &fp.samples {
        plans.push(plan(client, s).await?);
    }
    Ok((mean_cost(&plans), plans))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_numbers_constants_but_not_strings() {
        let Some(Sample::Generic { text }) =
            generic("select a from t where b = ? and c in (?) and d = '?' limit ?")
        else {
            panic!("a generic sample");
        };
        assert_eq!(
            text,
            "select a from t where b = $1 and c in ($2) and d = '?' limit $3"
        );
        assert_eq!(explain::placeholders(&text), 3);
    }

    #[test]
    fn a_literal_is_constant_only_when_every_kept_sample_has_it() {
        let text = |t: &str| Sample::Values {
            text: t.into(),
            params: Vec::new(),
        };
        let columns = |samples: &[Sample], more: &[Sample]| -> Vec<String> {
            let first = statements_of(&samples[0]).unwrap_or_default();
            constants(samples, more, &first)
                .into_iter()
                .map(|p| p.column)
                .collect()
        };
        let a = text("select * from posts where user_id = 5 and state = 'new' and b < 3");
        let b = text("select * from posts where user_id = 5 and state = 'new' and b < 9");
        let c = text("select * from posts where user_id = 2 and state = 'new' and b < 4");
        // two samples agree on user_id by chance; the third says it varies
        assert_eq!(columns(&[a.clone(), b.clone()], &[c]), ["state"]);
        assert_eq!(columns(&[a.clone(), b], &[]), ["user_id", "state"]);
        // one sample alone proves nothing about its literals
        assert!(columns(&[a], &[]).is_empty());
    }
}
