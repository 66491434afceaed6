//! Observability: Prometheus metrics, structured logs, the admin HTTP endpoints, and the
//! optional OTLP export of one span per client transaction.

pub mod api;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod traceparent;
