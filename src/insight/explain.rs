//! Plan capture on a side connection (tokio-postgres, never the proxied traffic).
//!
//! Plans are taken with the statement's *real* bound values (sent in text format, exactly as
//! the client sent them), so the planner sees the selectivity the client saw — a generic plan
//! of `$1` text often differs. `EXPLAIN ANALYZE` is used only when asked, only for statements
//! that do not write, and then inside `BEGIN READ ONLY … ROLLBACK`, so even a function with side
//! effects hidden in a SELECT cannot change data.

use super::model::{CapturedPlan, SeqScan};
use super::stats::unix_ms;
use crate::lab::postgres::describe;
use crate::pg::sql::lexer::{Kind as Tok, Lexer};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::error::Error as StdError;
use std::time::{Duration, SystemTime};
use tokio_postgres::types::{to_sql_checked, Format, FromSql, IsNull, ToSql, Type};
use tokio_postgres::Client;

/// Where side-channel connections for one database go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("side connection to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("EXPLAIN failed: {0}")]
    Explain(String),
    #[error("EXPLAIN returned no JSON plan: {0}")]
    BadPlan(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Open a side connection with a `statement_timeout`, driven by its own task.
pub async fn connect(target: &ConnTarget, timeout: Duration) -> Result<Client, ExplainError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&target.host)
        .port(target.port)
        .user(&target.user)
        .dbname(&target.dbname)
        .application_name("pake-insight")
        .connect_timeout(timeout.max(Duration::from_secs(1)))
        .options(format!("-c statement_timeout={}", timeout.as_millis()));
    if let Some(p) = &target.password {
        cfg.password(p);
    }
    let (client, conn) =
        cfg.connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| ExplainError::Connect {
                target: format!("{}:{}/{}", target.host, target.port, target.dbname),
                reason: describe(&e),
            })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A parameter value in text format, passed through untouched (NULL when `None`): the
/// server parses it for whatever type it inferred, as it did for the client.
#[derive(Debug)]
pub struct RawText<'a>(pub Option<&'a str>);

impl ToSql for RawText<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// A `json` (or `text`) column as text: EXPLAIN (FORMAT JSON) returns type `json`, whose
/// binary form is the text itself.
struct JsonText(String);

impl<'a> FromSql<'a> for JsonText {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        // jsonb's binary form starts with a version byte
        let raw = if *ty == Type::JSONB {
            raw.get(1..).unwrap_or(&[])
        } else {
            raw
        };
        Ok(JsonText(std::str::from_utf8(raw)?.to_string()))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB | Type::TEXT)
    }
}

/// `EXPLAIN (FORMAT JSON)` of `sql` with `params`; with `analyze` (callers guarantee the
/// statement does not write) inside a read-only transaction that is rolled back.
pub async fn explain(
    client: &Client,
    sql: &str,
    params: &[Option<String>],
    analyze: bool,
) -> Result<Value, ExplainError> {
    let options = if analyze {
        "ANALYZE, BUFFERS, FORMAT JSON"
    } else {
        "FORMAT JSON"
    };
    let stmt = format!("EXPLAIN ({options}) {sql}");
    let values: Vec<RawText<'_>> = params.iter().map(|p| RawText(p.as_deref())).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    if analyze {
        client
            .batch_execute("BEGIN READ ONLY")
            .await
            .map_err(|e| ExplainError::Explain(describe(&e)))?;
    }
    let result = client.query_one(&stmt, &refs).await;
    if analyze {
        // always end the read-only transaction, whatever EXPLAIN did
        let _ = client.batch_execute("ROLLBACK").await;
    }
    let row = result.map_err(|e| ExplainError::Explain(describe(&e)))?;
    let text: JsonText = row
        .try_get(0)
        .map_err(|e| ExplainError::BadPlan(e.to_string()))?;
    serde_json::from_str(&text.0).map_err(|e| ExplainError::BadPlan(e.to_string()))
}

/// The generic plan of `sql`, whose values are `$n` placeholders (a statement as prepared):
/// planned as PostgreSQL plans a prepared statement after five executions
/// (`plan_cache_mode = force_generic_plan`), literals written in it included.
pub async fn explain_generic(client: &Client, sql: &str) -> Result<Value, ExplainError> {
    let n = placeholders(sql);
    let args = match n {
        0 => String::new(),
        n => format!("({})", vec!["NULL"; n].join(", ")),
    };
    // PREPARE outlives a failed batch: start from none
    let batch = format!(
        "SET plan_cache_mode = force_generic_plan; DEALLOCATE ALL; \
         PREPARE pake_advisor AS {sql}; \
         EXPLAIN (FORMAT JSON) EXECUTE pake_advisor{args}; \
         DEALLOCATE pake_advisor; RESET plan_cache_mode"
    );
    let msgs = client
        .simple_query(&batch)
        .await
        .map_err(|e| ExplainError::Explain(describe(&e)))?;
    let json = msgs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| ExplainError::BadPlan("no row".into()))?;
    serde_json::from_str(&json).map_err(|e| ExplainError::BadPlan(e.to_string()))
}

/// The highest `$n` in `sql` (the parameters a PREPARE of it takes).
pub fn placeholders(sql: &str) -> usize {
    Lexer::new(sql)
        .filter(|t| t.kind == Tok::Param)
        .filter_map(|t| t.text(sql).get(1..)?.parse::<usize>().ok())
        .max()
        .unwrap_or(0)
}

/// The root plan node of `EXPLAIN (FORMAT JSON)` output.
pub fn root(plan: &Value) -> Option<&Value> {
    plan.get(0)?.get("Plan")
}

/// The estimated total cost of a plan.
pub fn total_cost(plan: &Value) -> Option<f64> {
    root(plan)?.get("Total Cost")?.as_f64()
}

/// Every node of a plan, depth first.
pub fn nodes(plan: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = root(plan).into_iter().collect();
    while let Some(n) = stack.pop() {
        out.push(n);
        if let Some(children) = n.get("Plans").and_then(Value::as_array) {
            stack.extend(children.iter());
        }
    }
    out
}

/// Index names the plan uses (hypothetical ones look like `<13543>btree_t_a`).
pub fn index_names(plan: &Value) -> Vec<String> {
    nodes(plan)
        .into_iter()
        .filter_map(|n| n.get("Index Name").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// What the advisor reads from a captured plan.
pub fn summarize(fingerprint: &str, database: &str, analyzed: bool, plan: Value) -> CapturedPlan {
    let mut seq_scans = Vec::new();
    let mut sorts = Vec::new();
    for n in nodes(&plan) {
        let kind = n.get("Node Type").and_then(Value::as_str).unwrap_or("");
        if kind == "Seq Scan" {
            let filter = n.get("Filter").and_then(Value::as_str).map(str::to_string);
            if let Some(relation) = n.get("Relation Name").and_then(Value::as_str) {
                seq_scans.push(SeqScan {
                    relation: relation.to_string(),
                    schema: n.get("Schema").and_then(Value::as_str).map(str::to_string),
                    filter,
                    plan_rows: n.get("Plan Rows").and_then(Value::as_f64).unwrap_or(0.0),
                    rows_removed_by_filter: n.get("Rows Removed by Filter").and_then(Value::as_f64),
                });
            }
        } else if kind == "Sort" {
            if let Some(keys) = n.get("Sort Key").and_then(Value::as_array) {
                sorts.push(
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                );
            }
        }
    }
    CapturedPlan {
        fingerprint: fingerprint.to_string(),
        database: database.to_string(),
        analyzed,
        total_cost: total_cost(&plan).unwrap_or(0.0),
        plan,
        seq_scans,
        sorts,
        at_ms: unix_ms(SystemTime::now()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarize_finds_filtered_seq_scans_and_sorts() {
        let plan: Value = serde_json::from_str(
            r#"[{"Plan": {"Node Type": "Sort", "Total Cost": 1234.5, "Sort Key": ["o.created"],
                "Plans": [{"Node Type": "Seq Scan", "Relation Name": "orders", "Alias": "o",
                           "Filter": "(customer_id = 42)", "Plan Rows": 10, "Total Cost": 1200.0}]}}]"#,
        )
        .unwrap_or_default();
        let c = summarize("ab", "app", false, plan);
        assert_eq!(c.total_cost, 1234.5);
        assert_eq!(c.seq_scans.len(), 1);
        assert_eq!(c.seq_scans[0].relation, "orders");
        assert_eq!(c.seq_scans[0].filter.as_deref(), Some("(customer_id = 42)"));
        assert_eq!(c.sorts, vec![vec!["o.created".to_string()]]);
        assert!(index_names(&c.plan).is_empty());
    }
}
