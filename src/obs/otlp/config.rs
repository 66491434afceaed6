//! The `[otlp]` section: where transaction spans go, how many are kept, and how long the
//! exporter may take. Every bound exists so that a slow or absent collector costs spans,
//! never client latency.

use crate::config::{ConfigError, Dur};
use axum::http::Uri;
use serde::{Deserialize, Serialize};

/// OTLP/HTTP trace export settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Export one span per client transaction. Off, the request path skips tracing entirely.
    pub enabled: bool,
    /// The collector's OTLP/HTTP base URL (`http://` only); `/v1/traces` is appended unless the
    /// path already ends with it, as for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    /// `service.name` of the exported resource: how Pake shows up in the tracing backend.
    pub service_name: String,
    /// Share of transactions exported when none of their statements carries a sqlcommenter
    /// `traceparent` (0 to 1). A transaction with one follows the caller's sampled flag.
    pub sample_ratio: f64,
    /// Most spans in one export request.
    pub batch_size: usize,
    /// A partial batch is sent once its oldest span has waited this long.
    pub export_interval: Dur,
    /// Spans waiting for the exporter; beyond it new spans are dropped and counted
    /// (`pake_otlp_spans_dropped_total{reason="queue_full"}`) rather than slowing clients.
    pub queue_size: usize,
    /// One export request (connect, send, answer) may take this long; after that its spans
    /// are dropped and counted.
    pub export_timeout: Dur,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            enabled: false,
            endpoint: "http://127.0.0.1:4318".into(),
            service_name: "pake".into(),
            sample_ratio: 1.0,
            batch_size: 512,
            export_interval: Dur::secs(1),
            queue_size: 4096,
            export_timeout: Dur::secs(5),
        }
    }
}

impl OtlpConfig {
    /// Cross-field rules, keys named as `otlp.<field>`.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut err = |key: &str, reason: String| {
            errs.push(ConfigError {
                key: format!("otlp.{key}"),
                reason,
            })
        };
        if let Err(reason) = self.traces_url() {
            err("endpoint", reason);
        }
        if self.service_name.trim().is_empty() {
            err("service_name", "must not be empty".into());
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            err(
                "sample_ratio",
                "must be a fraction in [0, 1], e.g. 0.1 for 10%".into(),
            );
        }
        if self.batch_size == 0 {
            err("batch_size", "must be at least 1".into());
        }
        if self.queue_size == 0 {
            err("queue_size", "must be at least 1".into());
        }
        if self.export_interval.enabled().is_none() {
            err(
                "export_interval",
                "must be more than 0: partial batches would never be sent".into(),
            );
        }
        if self.export_timeout.enabled().is_none() {
            err(
                "export_timeout",
                "must be more than 0: a hung collector would stall export forever".into(),
            );
        }
        errs
    }

    /// The URL spans are posted to: `endpoint` + `/v1/traces`.
    pub fn traces_url(&self) -> Result<Uri, String> {
        let base: Uri = self
            .endpoint
            .trim()
            .parse()
            .map_err(|e| format!("not a URL ({e}): give e.g. http://127.0.0.1:4318"))?;
        match base.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err("https is not supported: export to a local collector over http".into())
            }
            _ => return Err("must start with http://, e.g. http://127.0.0.1:4318".into()),
        }
        let Some(authority) = base.authority() else {
            return Err("has no host, e.g. http://127.0.0.1:4318".into());
        };
        if base.query().is_some() {
            return Err("must not have a query string".into());
        }
        let path = base.path().trim_end_matches('/');
        let path = if path.ends_with("/v1/traces") {
            path.to_string()
        } else {
            format!("{path}/v1/traces")
        };
        Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(endpoint: &str) -> Result<String, String> {
        OtlpConfig {
            endpoint: endpoint.into(),
            ..OtlpConfig::default()
        }
        .traces_url()
        .map(|u| u.to_string())
    }

    #[test]
    fn traces_path_is_appended_once() {
        assert_eq!(
            url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(url("http://gw/otlp").unwrap(), "http://gw/otlp/v1/traces");
        assert_eq!(
            url("http://gw:4318/v1/traces").unwrap(),
            "http://gw:4318/v1/traces"
        );
        assert!(url("https://gw:4318").unwrap_err().contains("https"));
        assert!(url("127.0.0.1:4318").is_err());
        assert!(url("http://gw:4318/?x=1").is_err());
        assert!(url("not a url").is_err());
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(OtlpConfig::default().validate().is_empty());
        let bad = OtlpConfig {
            endpoint: "ftp://x".into(),
            service_name: " ".into(),
            sample_ratio: 1.5,
            batch_size: 0,
            queue_size: 0,
            export_interval: Dur::secs(0),
            export_timeout: Dur::secs(0),
            ..OtlpConfig::default()
        };
        let keys: Vec<String> = bad.validate().into_iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "otlp.endpoint",
                "otlp.service_name",
                "otlp.sample_ratio",
                "otlp.batch_size",
                "otlp.queue_size",
                "otlp.export_interval",
                "otlp.export_timeout"
            ]
        );
        let nan = OtlpConfig {
            sample_ratio: f64::NAN,
            ..OtlpConfig::default()
        };
        assert_eq!(nan.validate()[0].key, "otlp.sample_ratio");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<OtlpConfig>("sampling_ratio = 0.5").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let ok: OtlpConfig = toml::from_str("enabled = true\nexport_interval = \"250ms\"").unwrap();
        assert_eq!((ok.enabled, ok.export_interval), (true, Dur::millis(250)));
    }
}
