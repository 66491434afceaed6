//! Observability: Prometheus metrics, structured logs, the admin HTTP endpoints.

pub mod api;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod traceparent;
