//! Prometheus series for the top fingerprints only. A label per fingerprint would be unbounded
//! cardinality; instead the merger, off the hot path, resets the families and sets them for the
//! `metrics_top_n` fingerprints by total time. Values are cumulative since the fingerprint was
//! first seen, exported as gauges because a fingerprint can leave the top N (or be evicted) and
//! come back, which a counter cannot express.

use super::model::{QueryStats, Summary};
use prometheus::{GaugeVec, IntGauge, IntGaugeVec, Opts, Registry};

pub struct InsightMetrics {
    calls: IntGaugeVec,
    errors: IntGaugeVec,
    rows: IntGaugeVec,
    time: GaugeVec,
    latency: GaugeVec,
    fingerprints: IntGauge,
    evicted: IntGauge,
    slow: IntGauge,
    dropped: IntGauge,
}

const FP: &[&str] = &["fingerprint", "query"];

/// Longest query text used as a label value.
const LABEL_TEXT: usize = 120;

fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    // a second Insight on one registry (tests) keeps its own, unregistered families
    if let Err(e) = r.register(Box::new(c.clone())) {
        tracing::debug!(error = %e, "insight metric not registered");
    }
    c
}

fn int_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    match IntGaugeVec::new(Opts::new(name, help), labels) {
        Ok(g) => reg(r, g),
        Err(e) => unreachable_metric(name, e),
    }
}

fn float_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    match GaugeVec::new(Opts::new(name, help), labels) {
        Ok(g) => reg(r, g),
        Err(e) => unreachable_metric(name, e),
    }
}

fn int(r: &Registry, name: &str, help: &str) -> IntGauge {
    match IntGauge::new(name, help) {
        Ok(g) => reg(r, g),
        Err(e) => unreachable_metric(name, e),
    }
}

#[allow(
    clippy::panic,
    reason = "metric names and labels are constants; only a programming error fails"
)]
fn unreachable_metric(name: &str, e: prometheus::Error) -> ! {
    panic!("metric {name} definition: {e}")
}

impl InsightMetrics {
    pub fn new(r: &Registry) -> InsightMetrics {
        InsightMetrics {
            calls: int_vec(
                r,
                "pake_query_calls",
                "Executions of a top fingerprint since first seen",
                FP,
            ),
            errors: int_vec(
                r,
                "pake_query_errors",
                "Failed executions of a top fingerprint since first seen",
                FP,
            ),
            rows: int_vec(
                r,
                "pake_query_rows",
                "Rows returned or affected by a top fingerprint since first seen",
                FP,
            ),
            time: float_vec(
                r,
                "pake_query_time_seconds",
                "Execution time of a top fingerprint since first seen (pool wait excluded)",
                FP,
            ),
            latency: float_vec(
                r,
                "pake_query_latency_seconds",
                "Latency quantiles of a top fingerprint since first seen",
                &["fingerprint", "quantile"],
            ),
            fingerprints: int(
                r,
                "pake_insight_fingerprints",
                "Fingerprints held in memory",
            ),
            evicted: int(
                r,
                "pake_insight_evicted_fingerprints",
                "Fingerprints evicted (least total time) since start",
            ),
            slow: int(
                r,
                "pake_insight_slow_queries",
                "Statements over slow_query_threshold since start",
            ),
            dropped: int(
                r,
                "pake_insight_dropped",
                "Executions or slow samples not recorded because a bound was hit",
            ),
        }
    }

    /// Replace the exported series with `top` (already the top N by total time).
    pub fn refresh(&self, top: &[QueryStats], summary: &Summary) {
        for v in [&self.calls, &self.errors, &self.rows] {
            v.reset();
        }
        self.time.reset();
        self.latency.reset();
        for q in top {
            let text: String = q.query.chars().take(LABEL_TEXT).collect();
            let l = [q.id.as_str(), text.as_str()];
            self.calls.with_label_values(&l).set(clamp(q.calls));
            self.errors.with_label_values(&l).set(clamp(q.errors));
            self.rows.with_label_values(&l).set(clamp(q.rows));
            self.time.with_label_values(&l).set(q.total_ms / 1000.0);
            for (quantile, v) in [
                ("0.5", q.p50_ms),
                ("0.95", q.p95_ms),
                ("0.99", q.p99_ms),
                ("0.999", q.p999_ms),
            ] {
                self.latency
                    .with_label_values(&[q.id.as_str(), quantile])
                    .set(v / 1000.0);
            }
        }
        self.fingerprints
            .set(i64::try_from(summary.fingerprints).unwrap_or(i64::MAX));
        self.evicted.set(clamp(summary.evicted));
        self.slow.set(clamp(summary.slow));
        self.dropped
            .set(clamp(summary.dropped.saturating_add(summary.slow_dropped)));
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
