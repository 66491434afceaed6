//! Query insight: what every statement through the proxy cost, and what would make it cheaper.
pub mod fingerprint;
