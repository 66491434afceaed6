//! The `[insight]` section: how much the query-insight engine keeps, when a statement counts
//! as slow, how often plans are captured, and how sure the index advisor must be.
//!
//! Every bound here exists so that insight costs the proxy bounded memory and bounded load on
//! the database, whatever the workload does (many distinct statements, many slow ones).

use crate::config::{ConfigError, Dur};
use serde::{Deserialize, Serialize};

/// Query-insight settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InsightConfig {
    /// Record per-statement statistics at all. Off, the proxy skips `record` entirely.
    pub enabled: bool,
    /// A statement that ran at least this long is slow: a sample is kept and its plan captured.
    pub slow_query_threshold: Dur,
    /// Most fingerprints kept; beyond it the one with the least total time is evicted.
    pub max_fingerprints: usize,
    /// Most (database, user, application, route) splits kept per fingerprint; further
    /// combinations are counted under `(other)`.
    pub max_splits: usize,
    /// Replace bound parameters and literals in slow samples by `$n`/`?`, so no client value
    /// is kept or shown. Plans are still captured with the real values, then forgotten.
    pub redact_parameters: bool,
    /// How often per-thread counters are merged into the shared statistics (and Prometheus
    /// gauges refreshed). Reads through the API merge first, so this only bounds staleness
    /// and per-thread memory.
    pub merge_interval: Dur,
    /// Slow samples kept per fingerprint (the most recent).
    pub samples_per_fingerprint: usize,
    /// Slow statements queued for the background task; beyond it they are counted and dropped
    /// rather than slowing the client.
    pub slow_queue: usize,
    /// Capture plans of slow statements with `EXPLAIN (FORMAT JSON)` on a side connection.
    pub explain: bool,
    /// Most EXPLAINs per minute, all databases together.
    pub explain_per_minute: u32,
    /// A fingerprint's plan is captured again only after this long.
    pub explain_cooldown: Dur,
    /// Use `EXPLAIN (ANALYZE, BUFFERS)` for statements that do not write, inside a
    /// `READ ONLY` transaction that is rolled back. It runs the statement again, so it is off
    /// by default; statements that may write are never ANALYZEd.
    pub explain_analyze: bool,
    /// `statement_timeout` of the side connection (EXPLAIN and the advisor).
    pub explain_timeout: Dur,
    /// Fingerprints exported as Prometheus series (top by total time); bounds label cardinality.
    pub metrics_top_n: usize,
    /// Executions of one fingerprint within one transaction that flag an N+1 pattern.
    pub n_plus_one_per_transaction: u32,
    /// Executions of one fingerprint by one client within one merge interval that flag an
    /// N+1 burst (a loop outside a transaction).
    pub n_plus_one_burst: u32,
    /// Run the index advisor this often in the background; 0 runs it only on demand
    /// (`POST /api/advice`).
    pub advisor_interval: Dur,
    /// Tables with fewer estimated rows are never given index advice.
    pub advisor_min_rows: u64,
    /// Plans cheaper than this (planner cost units) are not worth an index.
    pub advisor_min_cost: f64,
    /// A hypothetical index must cut the plan cost by at least this fraction (0.5 = 50%).
    pub advisor_min_saving: f64,
    /// `CREATE EXTENSION hypopg` on the side connection when it is available but not created.
    pub advisor_create_hypopg: bool,
    /// Trace ids whose recent statements are kept (least recently seen evicted).
    pub trace_ids: usize,
    /// Statements kept per trace id.
    pub trace_statements: usize,
}

impl Default for InsightConfig {
    fn default() -> Self {
        InsightConfig {
            enabled: true,
            slow_query_threshold: Dur::millis(500),
            max_fingerprints: 5000,
            max_splits: 64,
            redact_parameters: true,
            merge_interval: Dur::secs(1),
            samples_per_fingerprint: 5,
            slow_queue: 1024,
            explain: true,
            explain_per_minute: 30,
            explain_cooldown: Dur::secs(300),
            explain_analyze: false,
            explain_timeout: Dur::secs(5),
            metrics_top_n: 20,
            n_plus_one_per_transaction: 20,
            n_plus_one_burst: 200,
            advisor_interval: Dur::secs(600),
            advisor_min_rows: 10_000,
            advisor_min_cost: 100.0,
            advisor_min_saving: 0.5,
            advisor_create_hypopg: false,
            trace_ids: 1024,
            trace_statements: 64,
        }
    }
}

impl InsightConfig {
    /// Cross-field rules, keys named as `insight.<field>`.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut at_least_one = |key: &str, v: usize| {
            if v == 0 {
                errs.push(ConfigError {
                    key: format!("insight.{key}"),
                    reason: "must be at least 1".into(),
                });
            }
        };
        at_least_one("max_fingerprints", self.max_fingerprints);
        at_least_one("max_splits", self.max_splits);
        at_least_one("slow_queue", self.slow_queue);
        at_least_one("trace_ids", self.trace_ids);
        at_least_one("trace_statements", self.trace_statements);
        if self.merge_interval.enabled().is_none() {
            errs.push(ConfigError {
                key: "insight.merge_interval".into(),
                reason: "must be more than 0: per-thread counters would never be merged".into(),
            });
        }
        if !(0.0..1.0).contains(&self.advisor_min_saving) {
            errs.push(ConfigError {
                key: "insight.advisor_min_saving".into(),
                reason: "must be a fraction in [0, 1), e.g. 0.5 for 50%".into(),
            });
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(InsightConfig::default().validate().is_empty());
        let bad = InsightConfig {
            max_fingerprints: 0,
            advisor_min_saving: 1.5,
            ..InsightConfig::default()
        };
        let keys: Vec<String> = bad.validate().into_iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            ["insight.max_fingerprints", "insight.advisor_min_saving"]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<InsightConfig>("slow_query_treshold = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let ok: InsightConfig = toml::from_str("slow_query_threshold = \"250ms\"").unwrap();
        assert_eq!(ok.slow_query_threshold, Dur::millis(250));
    }
}
