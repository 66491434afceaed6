//! Prometheus families of the Redis side, registered once on the shared registry; the
//! request path only bumps handles resolved up front (one latency histogram per command
//! table entry, so no label lookup per command). L1 size, entry count and hit ratio are read
//! from the cache when Prometheus scrapes, by a small collector, not maintained per request.

use super::commands::Table;
use super::l1::L1;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};
use std::sync::{Arc, OnceLock, Weak};

/// Handles for everything the Redis side counts.
pub struct RedisMetrics {
    pub l1_hits: IntCounter,
    pub l1_misses: IntCounter,
    pub l1_forwarded: IntCounter,
    pub l1_fills: IntCounter,
    /// Keys named by invalidation messages from Redis, plus keys Pake's own writes invalidated.
    pub l1_invalidations: IntCounter,
    pub l1_evictions: IntCounter,
    flushes: IntCounterVec,
    backend_errors: IntCounterVec,
    /// Indexed by [`crate::redis::commands::Spec::id`].
    command_latency: Vec<Histogram>,
    pub client_connections: IntGauge,
    pub tracking_connections: IntGauge,
    /// Round trip of a PING on a tracking connection: how late invalidations can be.
    pub tracking_lag: Histogram,
    /// Primary switches followed (Sentinel failovers).
    pub failovers: IntCounter,
    /// Requests and replies refused by the memory budget, by the limit that refused them.
    budget_refusals: IntCounterVec,
    /// Commands refused by `rate_limit_per_address`.
    pub rate_limited: IntCounter,
    /// The Redis breaker's state (0 closed, 1 open, 2 half-open).
    pub circuit_state: IntGauge,
    pub circuit_opened: IntCounter,
    /// Commands sent on Pake's multiplexed links ([`crate::redis::backend::mux`]), not fred.
    pub link_commands: IntCounter,
    /// Link replies that were a redirection or cluster error (MOVED, ASK, TRYAGAIN,
    /// CLUSTERDOWN): the command went again through fred, the client never saw them.
    pub link_redirects: IntCounter,
    /// Connections of their own that commands Redis holds during a `CLIENT PAUSE` Pake knew
    /// of went on ([`crate::redis::pause`]), so as not to hold a shared link.
    pub held_by_pause: IntCounter,
    /// `CLIENT TRACKING` of Pake's clients ([`crate::redis::client_tracking`]).
    pub client_tracking: ClientTrackingMetrics,
    l1_source: Arc<OnceLock<Weak<L1>>>,
}

/// What Pake's own tracking table holds and sends.
#[derive(Clone)]
pub struct ClientTrackingMetrics {
    /// Clients with tracking on.
    pub clients: IntGauge,
    /// Bytes of tracked keys the table holds (bounded).
    pub bytes: IntGauge,
    /// Invalidated keys queued for clients (a flush counts one).
    pub sent: IntCounter,
}

impl Default for ClientTrackingMetrics {
    /// Handles on no registry (unit tests).
    fn default() -> Self {
        let gauge = |n: &str| IntGauge::new(n, n).unwrap_or_else(|e| panic!("metric {n}: {e}"));
        ClientTrackingMetrics {
            clients: gauge("clients"),
            bytes: gauge("bytes"),
            sent: IntCounter::new("sent", "sent").unwrap_or_else(|e| panic!("metric sent: {e}")),
        }
    }
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(reg, Box::new(c.clone()), name);
    c
}

fn counter_vec(reg: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(reg, Box::new(c.clone()), name);
    c
}

fn gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(reg, Box::new(g.clone()), name);
    g
}

fn register(reg: &Registry, c: Box<dyn Collector>, name: &str) {
    // names are static and distinct; this fails only on a programming error
    reg.register(c)
        .unwrap_or_else(|e| panic!("metric {name} registration: {e}"));
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.05, 0.25, 1.0, 5.0,
];

impl RedisMetrics {
    pub fn new(reg: &Registry) -> Arc<RedisMetrics> {
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "pake_redis_command_duration_seconds",
                "Time from a command's arrival to its reply being ready, by command",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["command"],
        )
        .unwrap_or_else(|e| panic!("latency histogram: {e}"));
        register(reg, Box::new(latency.clone()), "command_duration");
        let command_latency = Table::get()
            .specs()
            .iter()
            .map(|s| latency.with_label_values(&[s.name]))
            .collect();
        let tracking_lag = Histogram::with_opts(
            HistogramOpts::new(
                "pake_redis_tracking_lag_seconds",
                "PING round trip on tracking connections (upper bound of invalidation delay)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|e| panic!("lag histogram: {e}"));
        register(reg, Box::new(tracking_lag.clone()), "tracking_lag");
        let l1_source = Arc::new(OnceLock::new());
        let collector = L1Collector::new(l1_source.clone());
        register(reg, Box::new(collector), "l1 gauges");
        Arc::new(RedisMetrics {
            l1_hits: counter(reg, "pake_redis_l1_hits_total", "Reads served from the L1"),
            l1_misses: counter(
                reg,
                "pake_redis_l1_misses_total",
                "Cacheable reads not in the L1 (sent to Redis)",
            ),
            l1_forwarded: counter(
                reg,
                "pake_redis_l1_forwarded_total",
                "Cacheable reads forwarded without an L1 lookup: behind an earlier command of \
                 the same client still in flight (redis.l1_behind_inflight off)",
            ),
            l1_fills: counter(reg, "pake_redis_l1_fills_total", "Replies stored in the L1"),
            l1_invalidations: counter(
                reg,
                "pake_redis_l1_invalidations_total",
                "Keys invalidated (tracking messages and Pake's own writes)",
            ),
            l1_evictions: counter(
                reg,
                "pake_redis_l1_evictions_total",
                "Entries evicted by the size bound",
            ),
            flushes: counter_vec(
                reg,
                "pake_redis_l1_flushes_total",
                "Whole-node or whole-cache flushes of the L1, by reason",
                "reason",
            ),
            backend_errors: counter_vec(
                reg,
                "pake_redis_backend_errors_total",
                "Commands that failed because Redis was unreachable or too slow, by kind",
                "kind",
            ),
            command_latency,
            client_connections: gauge(
                reg,
                "pake_redis_client_connections",
                "Client connections open on the Redis listener",
            ),
            tracking_connections: gauge(
                reg,
                "pake_redis_tracking_connections",
                "Primaries whose invalidation stream is armed",
            ),
            tracking_lag,
            client_tracking: ClientTrackingMetrics {
                clients: gauge(
                    reg,
                    "pake_redis_client_tracking_clients",
                    "Client connections with CLIENT TRACKING on",
                ),
                bytes: gauge(
                    reg,
                    "pake_redis_client_tracking_bytes",
                    "Bytes of keys Pake tracks for its clients (bounded)",
                ),
                sent: counter(
                    reg,
                    "pake_redis_client_invalidations_total",
                    "Invalidated keys queued for tracking clients (a flush counts one)",
                ),
            },
            failovers: counter(
                reg,
                "pake_redis_failovers_total",
                "Primary switches followed under Sentinel (L1 flushed, pools and tracking moved)",
            ),
            rate_limited: counter(
                reg,
                "pake_redis_rate_limited_total",
                "Commands refused by redis.rate_limit_per_address",
            ),
            circuit_state: gauge(
                reg,
                "pake_redis_circuit_state",
                "The Redis circuit breaker: 0 closed, 1 open (failing fast), 2 half-open (probing)",
            ),
            circuit_opened: counter(
                reg,
                "pake_redis_circuit_opened_total",
                "Times the Redis circuit breaker opened",
            ),
            budget_refusals: counter_vec(
                reg,
                "pake_redis_budget_refusals_total",
                "Requests and replies refused by the memory budget, by limit (client_max_request_bytes, client_max_reply_bytes, clients_max_memory)",
                "limit",
            ),
            link_commands: counter(
                reg,
                "pake_redis_link_commands_total",
                "Commands sent on Pake's own multiplexed Redis links (the rest go through fred)",
            ),
            link_redirects: counter(
                reg,
                "pake_redis_link_redirects_total",
                "Link replies that were MOVED, ASK, TRYAGAIN or CLUSTERDOWN: sent again through fred, the slot map resynced",
            ),
            held_by_pause: counter(
                reg,
                "pake_redis_held_by_pause_total",
                "Connections of their own that writes went on during a CLIENT PAUSE Pake knew of, not to hold a shared link",
            ),
            l1_source,
        })
    }

    /// Let the scrape-time collector read sizes from `l1`.
    pub fn attach_l1(&self, l1: &Arc<L1>) {
        let _ = self.l1_source.set(Arc::downgrade(l1));
    }

    pub fn flush(&self, reason: &str) {
        self.flushes.with_label_values(&[reason]).inc();
    }

    pub fn backend_error(&self, kind: &str) {
        self.backend_errors.with_label_values(&[kind]).inc();
    }

    /// The refusal counters of a meter: by the client's own `limit_key`, by the process.
    pub fn budget_counters(&self, limit_key: &str) -> [IntCounter; 2] {
        [
            self.budget_refusals.with_label_values(&[limit_key]),
            self.budget_refusals
                .with_label_values(&["clients_max_memory"]),
        ]
    }

    pub fn latency(&self, id: usize) -> Option<&Histogram> {
        self.command_latency.get(id)
    }
}

/// Reads the L1's size, entry count and hit ratio at scrape time.
struct L1Collector {
    source: Arc<OnceLock<Weak<L1>>>,
    bytes: IntGauge,
    entries: IntGauge,
    ratio: Gauge,
    descs: Vec<Desc>,
}

impl L1Collector {
    fn new(source: Arc<OnceLock<Weak<L1>>>) -> L1Collector {
        let make = |name: &str, help: &str| {
            IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"))
        };
        let bytes = make("pake_redis_l1_bytes", "Weighted size of the L1 in bytes");
        let entries = make("pake_redis_l1_entries", "Entries in the L1");
        let ratio = Gauge::new(
            "pake_redis_l1_hit_ratio",
            "Hits / (hits + misses) since start",
        )
        .unwrap_or_else(|e| panic!("hit ratio: {e}"));
        let descs = [bytes.desc(), entries.desc(), ratio.desc()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        L1Collector {
            source,
            bytes,
            entries,
            ratio,
            descs,
        }
    }
}

impl Collector for L1Collector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(l1) = self.source.get().and_then(Weak::upgrade) {
            let stats = l1.stats();
            self.bytes.set(stats.bytes as i64);
            self.entries.set(stats.entries as i64);
            let total = stats.hits + stats.misses;
            self.ratio.set(if total == 0 {
                0.0
            } else {
                stats.hits as f64 / total as f64
            });
        }
        let mut out = self.bytes.collect();
        out.extend(self.entries.collect());
        out.extend(self.ratio.collect());
        out
    }
}
