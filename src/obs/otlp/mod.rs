//! Optional OTLP trace export: one span per client transaction, nested under the
//! application's span when a statement carried a sqlcommenter `traceparent`.

pub mod config;

pub use config::OtlpConfig;
