//! Prometheus metrics: families registered once at start-up, handed out as per-pool handles
//! so the request path only bumps atomics. Gauges that describe state (clients waiting,
//! servers idle…) are computed from the pools at scrape time, not maintained on the hot path.
//!
//! Names follow Prometheus conventions: `pake_` prefix, base units (`_seconds`, `_bytes`),
//! `_total` for counters.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric family Pake exports.
pub struct Metrics {
    pub registry: Registry,
    checkout_wait: HistogramVec,
    wait_timeouts: IntCounterVec,
    server_connects: IntCounterVec,
    server_connect_errors: IntCounterVec,
    queries: IntCounterVec,
    transactions: IntCounterVec,
    client_received: IntCounterVec,
    client_sent: IntCounterVec,
    pub client_logins: IntCounterVec,
    /// CancelRequests by outcome (`crate::pg::cancel::Canceled`).
    pub cancel_requests: IntCounterVec,
    pub client_errors: IntCounterVec,
    pub clients: IntGaugeVec,
    pub servers: IntGaugeVec,
    pub pool_size: IntGaugeVec,
    pub client_connections: IntGaugeVec,
    pub pinned_clients: IntGaugeVec,
    pub routed: IntCounterVec,
    transaction_seconds: prometheus::CounterVec,
    reserve_used: IntCounterVec,
    startup_checks: IntCounterVec,
    pub replica_lag_bytes: IntGaugeVec,
    pub replica_lag_seconds: prometheus::GaugeVec,
    pub replica_banned: IntGaugeVec,
    pub replica_checks: IntCounterVec,
    pub primary_failovers: IntCounterVec,
    /// LISTEN/NOTIFY through transaction pooling (`crate::pg::notify`).
    pub pg_listen_channels: IntGaugeVec,
    pub pg_notifications: IntCounterVec,
    pub pg_listen_dropped: IntCounterVec,
    pub circuit_state: IntGaugeVec,
    pub circuit_open: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub otlp_exported: IntCounterVec,
    pub otlp_dropped: IntCounterVec,
}

/// The handles of one (database, user) pool.
#[derive(Clone)]
pub struct PoolMetrics {
    pub checkout_wait: prometheus::Histogram,
    pub wait_timeouts: IntCounter,
    pub server_connects: IntCounter,
    pub server_connect_errors: IntCounter,
    pub queries: IntCounter,
    pub transactions: IntCounter,
    pub client_received_bytes: IntCounter,
    pub client_sent_bytes: IntCounter,
    pub routed: IntCounter,
    pub transaction_seconds: prometheus::Counter,
    pub reserve_used: IntCounter,
    /// Logins whose startup settings were tried on a server (`crate::pg::login_params`).
    pub startup_checks: IntCounter,
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} definition: {e}"));
    register(reg, Box::new(c.clone()), name);
    c
}

fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} definition: {e}"));
    register(reg, Box::new(g.clone()), name);
    g
}

fn register(reg: &Registry, c: Box<dyn prometheus::core::Collector>, name: &str) {
    // Names are static and distinct; registration fails only on a programming error.
    reg.register(c)
        .unwrap_or_else(|e| panic!("metric {name} registration: {e}"));
}

/// A pool is one (database, user) towards one target: `primary` or a replica `host:port`.
const POOL: &[&str] = &["database", "user", "target"];
const REPLICA: &[&str] = &["database", "replica"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let checkout_wait = HistogramVec::new(
            HistogramOpts::new(
                "pake_pg_checkout_wait_seconds",
                "Time clients waited for a server connection",
            )
            .buckets(vec![
                0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
                30.0,
            ]),
            POOL,
        )
        .unwrap_or_else(|e| panic!("checkout histogram definition: {e}"));
        register(&registry, Box::new(checkout_wait.clone()), "checkout_wait");
        Metrics {
            checkout_wait,
            wait_timeouts: counter(
                &registry,
                "pake_pg_checkout_timeouts_total",
                "Clients that gave up waiting for a server (query_wait_timeout)",
                POOL,
            ),
            server_connects: counter(
                &registry,
                "pake_pg_server_connects_total",
                "Server connections opened",
                POOL,
            ),
            server_connect_errors: counter(
                &registry,
                "pake_pg_server_connect_errors_total",
                "Server connections that failed to open or log in",
                POOL,
            ),
            queries: counter(
                &registry,
                "pake_pg_queries_total",
                "Queries served (simple Query and extended Execute messages)",
                POOL,
            ),
            transactions: counter(
                &registry,
                "pake_pg_transactions_total",
                "Transactions served (ReadyForQuery back to idle)",
                POOL,
            ),
            client_received: counter(
                &registry,
                "pake_pg_client_received_bytes_total",
                "Bytes received from clients",
                POOL,
            ),
            client_sent: counter(
                &registry,
                "pake_pg_client_sent_bytes_total",
                "Bytes sent to clients",
                POOL,
            ),
            client_logins: counter(
                &registry,
                "pake_pg_client_logins_total",
                "Client login attempts by result",
                &["result"],
            ),
            cancel_requests: counter(
                &registry,
                "pake_pg_cancel_requests_total",
                "CancelRequests received, by outcome (sent, ended_wait, forwarded, finished: the request ended before the cancel went out, ignored)",
                &["outcome"],
            ),
            client_errors: counter(
                &registry,
                "pake_pg_client_errors_total",
                "Errors Pake itself reported to clients, by SQLSTATE",
                &["sqlstate"],
            ),
            clients: gauge(
                &registry,
                "pake_pg_clients",
                "Client connections by state (active: holding a server; waiting: queued for one)",
                &["database", "user", "target", "state"],
            ),
            servers: gauge(
                &registry,
                "pake_pg_servers",
                "Server connections by state",
                &["database", "user", "target", "state"],
            ),
            pool_size: gauge(&registry, "pake_pg_pool_size", "Configured pool size", POOL),
            client_connections: gauge(
                &registry,
                "pake_pg_client_connections",
                "Client connections open on the Postgres listener",
                &[],
            ),
            pinned_clients: gauge(
                &registry,
                "pake_pg_pinned_clients",
                "Transaction-mode clients pinned to their server by session state (temp tables, advisory locks, cursors WITH HOLD, SQL PREPARE, LISTEN)",
                &["database", "user"],
            ),
            transaction_seconds: {
                let c = prometheus::CounterVec::new(
                    Opts::new(
                        "pake_pg_transaction_seconds_total",
                        "Time server connections spent serving transactions",
                    ),
                    POOL,
                )
                .unwrap_or_else(|e| panic!("transaction seconds definition: {e}"));
                register(&registry, Box::new(c.clone()), "transaction_seconds");
                c
            },
            reserve_used: counter(
                &registry,
                "pake_pg_reserve_connections_total",
                "Connections opened from the reserve pool for clients that waited reserve_pool_timeout",
                POOL,
            ),
            startup_checks: counter(
                &registry,
                "pake_pg_startup_checks_total",
                "Logins whose startup settings a server had to check (not yet known to the pool)",
                POOL,
            ),
            routed: counter(
                &registry,
                "pake_pg_routed_total",
                "Requests (transactions or autocommit statements) routed, by target",
                POOL,
            ),
            replica_lag_bytes: gauge(
                &registry,
                "pake_pg_replica_lag_bytes",
                "WAL bytes the replica has not replayed yet (at the last check)",
                REPLICA,
            ),
            replica_lag_seconds: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "pake_pg_replica_lag_seconds",
                        "Replay delay behind the primary (0 when caught up)",
                    ),
                    REPLICA,
                )
                .unwrap_or_else(|e| panic!("replica lag gauge definition: {e}"));
                register(&registry, Box::new(g.clone()), "replica_lag_seconds");
                g
            },
            replica_banned: gauge(
                &registry,
                "pake_pg_replica_banned",
                "1 while the replica gets no reads (lag or failed health checks)",
                REPLICA,
            ),
            replica_checks: counter(
                &registry,
                "pake_pg_replica_checks_total",
                "Replica health checks by result",
                &["database", "replica", "result"],
            ),
            primary_failovers: counter(
                &registry,
                "pake_pg_primary_failovers_total",
                "Writes moved to a promoted replica (the new primary)",
                &["database", "new_primary"],
            ),
            pg_listen_channels: gauge(
                &registry,
                "pake_pg_listen_channels",
                "Channels Pake's listening connection LISTENs on for transaction-mode clients",
                &["database"],
            ),
            pg_notifications: counter(
                &registry,
                "pake_pg_notifications_total",
                "Notifications handed to transaction-mode clients (one per listening client)",
                &["database"],
            ),
            pg_listen_dropped: counter(
                &registry,
                "pake_pg_listen_clients_dropped_total",
                "Clients disconnected for not reading their notifications (listen_queue_size)",
                &["database"],
            ),
            circuit_state: gauge(
                &registry,
                "pake_circuit_state",
                "Circuit breaker per backend: 0 closed, 1 open (failing fast), 2 half-open (probing)",
                &["backend"],
            ),
            circuit_open: counter(
                &registry,
                "pake_circuit_open_total",
                "Times a backend's circuit breaker opened",
                &["backend"],
            ),
            rate_limited: counter(
                &registry,
                "pake_rate_limited_total",
                "Requests refused by a rate limit (53400), by scope",
                &["scope"],
            ),
            otlp_exported: counter(
                &registry,
                "pake_otlp_spans_exported_total",
                "Transaction spans the OTLP collector accepted",
                &[],
            ),
            otlp_dropped: counter(
                &registry,
                "pake_otlp_spans_dropped_total",
                "Transaction spans not exported, by reason: queue_full (the exporter fell behind), export_failed (collector unreachable, slow or erroring), rejected (the collector refused them)",
                &["reason"],
            ),
            registry,
        }
    }

    pub fn pool(&self, database: &str, user: &str, target: &str) -> PoolMetrics {
        let l = [database, user, target];
        PoolMetrics {
            checkout_wait: self.checkout_wait.with_label_values(&l),
            wait_timeouts: self.wait_timeouts.with_label_values(&l),
            server_connects: self.server_connects.with_label_values(&l),
            server_connect_errors: self.server_connect_errors.with_label_values(&l),
            queries: self.queries.with_label_values(&l),
            transactions: self.transactions.with_label_values(&l),
            client_received_bytes: self.client_received.with_label_values(&l),
            client_sent_bytes: self.client_sent.with_label_values(&l),
            routed: self.routed.with_label_values(&l),
            transaction_seconds: self.transaction_seconds.with_label_values(&l),
            reserve_used: self.reserve_used.with_label_values(&l),
            startup_checks: self.startup_checks.with_label_values(&l),
        }
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
