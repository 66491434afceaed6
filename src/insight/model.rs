//! The data the insight engine hands out: JSON of the admin API, input of `pake report`.
//! Plain serde structs, so the API and the report (which may run on another machine, from
//! another build) agree by construction. Ids are hex strings: JSON numbers lose u64 precision.

use super::stats::Bucket;
use super::Route;
use serde::{Deserialize, Serialize};

/// Totals over everything recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Summary {
    pub fingerprints: usize,
    pub calls: u64,
    pub errors: u64,
    pub total_ms: f64,
    pub evicted: u64,
    /// Executions not recorded (a thread's shard overflowed between merges).
    pub dropped: u64,
    pub slow: u64,
    /// Slow statements not sampled because the queue was full.
    pub slow_dropped: u64,
    pub explains: u64,
    pub explain_errors: u64,
    /// When this was computed (ms since the Unix epoch).
    pub at_ms: u64,
}

/// One fingerprint's statistics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueryStats {
    /// Fingerprint id, 16 hex digits.
    pub id: String,
    pub query: String,
    pub kind: String,
    pub calls: u64,
    pub errors: u64,
    pub errors_by_sqlstate: Vec<ErrorCount>,
    pub rows: u64,
    pub total_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub stddev_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Pool checkout wait, kept apart from execution time.
    pub wait_total_ms: f64,
    pub wait_max_ms: f64,
    /// Share of the total execution time of all fingerprints (0..=1).
    pub time_share: f64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub splits: Vec<SplitStats>,
    /// Latency distribution, powers of two of microseconds.
    pub histogram: Vec<Bucket>,
    pub has_plan: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ErrorCount {
    pub sqlstate: String,
    pub count: u64,
}

/// One fingerprint's share run by one (database, user, application, route).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SplitStats {
    pub database: String,
    pub user: String,
    pub application: String,
    pub route: Route,
    pub calls: u64,
    pub errors: u64,
    pub rows: u64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub wait_total_ms: f64,
}

/// A slow execution.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SlowSample {
    pub fingerprint: String,
    /// The text as sent, literals replaced by `?` when parameters are redacted.
    pub text: String,
    /// Bound parameter values, absent when redacted.
    pub params: Option<Vec<Option<String>>>,
    pub duration_ms: f64,
    pub database: String,
    pub user: String,
    pub application: String,
    pub client_addr: String,
    pub client_id: u64,
    pub trace_id: Option<String>,
    pub error: Option<String>,
    pub at_ms: u64,
}

/// A captured plan and what the advisor reads from it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CapturedPlan {
    pub fingerprint: String,
    pub database: String,
    /// `EXPLAIN` or `EXPLAIN ANALYZE`.
    pub analyzed: bool,
    pub total_cost: f64,
    /// `EXPLAIN (FORMAT JSON)` output, as the server returned it: an array of one
    /// object with a `Plan` key.
    #[schema(value_type = Vec<Object>)]
    pub plan: serde_json::Value,
    /// Sequential scans that filter rows: the advisor's first evidence.
    pub seq_scans: Vec<SeqScan>,
    pub sorts: Vec<Vec<String>>,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SeqScan {
    pub relation: String,
    pub schema: Option<String>,
    pub filter: Option<String>,
    pub plan_rows: f64,
    /// Only known from EXPLAIN ANALYZE.
    pub rows_removed_by_filter: Option<f64>,
}

/// A fingerprint run many times by one client: in one transaction, or in a burst.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NPlusOne {
    pub fingerprint: String,
    pub query: String,
    /// Most runs seen in a single transaction.
    pub max_per_transaction: u32,
    /// Most runs by one client within one merge interval.
    pub max_burst: u32,
    /// Times the pattern was seen (client × interval).
    pub occurrences: u64,
    pub last_client_id: u64,
    pub last_seen_ms: u64,
}

/// A statement seen under one trace id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TraceStatement {
    pub trace_id: String,
    pub fingerprint: String,
    pub query: String,
    pub at_ms: u64,
    pub duration_ms: f64,
    pub rows: u64,
    pub error: Option<String>,
    pub database: String,
    pub client_id: u64,
}

/// One proposed index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct IndexAdvice {
    pub database: String,
    pub table: String,
    /// Key columns, in order (`col DESC` where the order is descending).
    pub columns: Vec<String>,
    /// Columns carried in `INCLUDE` for an index-only scan.
    #[serde(default)]
    pub include: Vec<String>,
    /// A partial index's `WHERE` clause (a predicate every helped statement has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
    /// `CREATE INDEX CONCURRENTLY …`, ready to run.
    pub sql: String,
    /// Confirmed with a hypothetical index (hypopg), or only inferred from the plan.
    pub validated: bool,
    /// Summed plan cost of the fingerprints it helps, today and with the proposed set.
    pub cost_before: f64,
    pub cost_after: f64,
    /// Estimated share of execution time saved for the fingerprints it helps (0..1).
    pub saving: f64,
    /// Estimated execution time saved so far, had the index existed (ms): the ranking key.
    pub est_time_saved_ms: f64,
    pub fingerprints: Vec<String>,
    /// Per fingerprint: what it costs today and with the proposed indexes.
    #[serde(default)]
    pub helps: Vec<Helped>,
    /// Estimated size (`hypopg_relation_size`), bytes.
    #[serde(default)]
    pub size_bytes: Option<i64>,
    /// Writes to the table seen in the workload (INSERT/UPDATE/DELETE calls), each of which
    /// would also maintain this index.
    #[serde(default)]
    pub write_calls: u64,
    /// Estimated execution time the extra index maintenance would have cost those writes (ms).
    #[serde(default)]
    pub write_cost_ms: f64,
    pub reason: String,
}

/// One fingerprint an index helps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Helped {
    pub fingerprint: String,
    pub query: String,
    pub calls: u64,
    /// Share of the total execution time of all fingerprints (0..=1).
    pub time_share: f64,
    /// Mean plan cost over its real-valued samples, today and with the proposed indexes.
    pub cost_before: f64,
    pub cost_after: f64,
    /// The plan node the index replaces, and what replaces it.
    pub replaces: String,
}

/// An existing index that is unused or duplicated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ExistingIndex {
    pub database: String,
    pub table: String,
    pub index: String,
    /// `unused` or `duplicate`.
    pub kind: String,
    pub detail: String,
    pub size_bytes: i64,
    /// `DROP INDEX CONCURRENTLY …`.
    pub sql: String,
}

/// A costly fingerprint no index can help, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NoIndexHelps {
    pub database: String,
    pub fingerprint: String,
    pub query: String,
    pub time_share: f64,
    pub reason: String,
}

/// What the advisor concluded, and why it said nothing where it said nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AdviceReport {
    pub indexes: Vec<IndexAdvice>,
    pub n_plus_one: Vec<NPlusOne>,
    /// Per database: whether hypopg was used, or why not (said once, with the fix).
    pub notes: Vec<String>,
    /// When the advisor ran (ms since the Unix epoch); 0 when it never ran.
    pub at_ms: u64,
    /// Existing indexes that are unused or duplicated (pg_stat_user_indexes).
    #[serde(default)]
    pub existing: Vec<ExistingIndex>,
    /// Costly fingerprints that no index can help.
    #[serde(default)]
    pub no_index_helps: Vec<NoIndexHelps>,
    /// Fingerprints examined, and their share of the total execution time then.
    #[serde(default)]
    pub examined: usize,
    #[serde(default)]
    pub examined_time_share: f64,
    /// How long the run took (ms).
    #[serde(default)]
    pub run_ms: f64,
    /// Run for this report (true) or the last background/on-demand run (false).
    #[serde(default)]
    pub fresh: bool,
}

/// Everything `pake report` renders.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ReportData {
    pub summary: Summary,
    pub queries: Vec<QueryStats>,
    pub slow: Vec<SlowSample>,
    pub advice: AdviceReport,
}

/// Sort orders of `/api/queries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    #[default]
    TotalTime,
    Calls,
    P99,
    Mean,
    Errors,
}

impl std::str::FromStr for SortBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "total_time" => Ok(SortBy::TotalTime),
            "calls" => Ok(SortBy::Calls),
            "p99" => Ok(SortBy::P99),
            "mean" => Ok(SortBy::Mean),
            "errors" => Ok(SortBy::Errors),
            _ => Err(format!(
                "sort must be total_time, calls, p99, mean or errors, not {s:?}"
            )),
        }
    }
}

impl SortBy {
    pub fn key(self, q: &QueryStats) -> f64 {
        match self {
            SortBy::TotalTime => q.total_ms,
            SortBy::Calls => q.calls as f64,
            SortBy::P99 => q.p99_ms,
            SortBy::Mean => q.mean_ms,
            SortBy::Errors => q.errors as f64,
        }
    }
}

pub fn hex_id(id: u64) -> String {
    format!("{id:016x}")
}
