//! `tracing` set-up: human-readable lines by default, one JSON object per line with
//! `--log-format json`. Lines about a Postgres client carry its `client` span (id, peer; see
//! `pg::login::Peer::span`).

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber; `RUST_LOG` overrides `level` when set.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // A second init (tests, `pake demo`) keeps the first subscriber.
    let _ = result;
}
