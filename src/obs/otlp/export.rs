//! The exporter task: take spans off the bounded queue in batches, encode each batch as an
//! OTLP `ExportTraceServiceRequest` (the official generated protobuf types), and POST it to
//! the collector over one reused HTTP/1.1 connection. A batch that cannot be delivered within
//! `export_timeout` is dropped and counted; nothing here ever waits on a client.

use super::span::{Ids, TxSpan};
use super::OtlpConfig;
use crate::pg::sql::Analyzer;
use axum::http::{header, Request, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prometheus::IntCounter;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest collector answer read (it is a small protobuf, or an error text).
const MAX_ANSWER: usize = 1 << 20;

/// Counters of what became of the spans that left the queue.
pub(super) struct Counters {
    pub exported: IntCounter,
    pub export_failed: IntCounter,
    pub rejected: IntCounter,
}

pub(super) struct Exporter {
    url: Uri,
    host: String,
    port: u16,
    resource: Resource,
    batch_size: usize,
    interval: Duration,
    timeout: Duration,
    analyzer: Arc<Analyzer>,
    counters: Counters,
    conn: Option<SendRequest<Full<Bytes>>>,
    /// The last export failed (log state changes, not every failure).
    failing: bool,
}

impl Exporter {
    pub fn new(
        config: &OtlpConfig,
        url: Uri,
        analyzer: Arc<Analyzer>,
        counters: Counters,
    ) -> Exporter {
        let host = url.host().unwrap_or("127.0.0.1").to_string();
        let port = url.port_u16().unwrap_or(80);
        let attr = super::span::s;
        Exporter {
            url,
            host,
            port,
            resource: Resource {
                attributes: vec![
                    attr("service.name", config.service_name.as_str()),
                    attr("service.version", env!("CARGO_PKG_VERSION")),
                    attr("telemetry.sdk.language", "rust"),
                ],
                ..Resource::default()
            },
            batch_size: config.batch_size.max(1),
            interval: config.export_interval.0,
            timeout: config.export_timeout.0,
            analyzer,
            counters,
            conn: None,
            failing: false,
        }
    }

    /// Export until every sender is gone and the queue is empty.
    pub async fn run(mut self, mut rx: mpsc::Receiver<TxSpan>) {
        let mut batch = Vec::with_capacity(self.batch_size);
        loop {
            if rx.recv_many(&mut batch, self.batch_size).await == 0 {
                return; // closed and drained
            }
            // fill the batch until it is full or its first span has waited `interval`
            let deadline = tokio::time::Instant::now() + self.interval;
            while batch.len() < self.batch_size {
                let room = self.batch_size - batch.len();
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            self.export(&batch).await;
            batch.clear();
        }
    }

    /// Encode and send one batch, and count the outcome.
    async fn export(&mut self, batch: &[TxSpan]) {
        let n = batch.len() as u64;
        let body = self.encode(batch);
        match tokio::time::timeout(self.timeout, self.post(body)).await {
            Ok(Ok(rejected)) => {
                let rejected = rejected.min(n);
                self.counters.exported.inc_by(n - rejected);
                self.counters.rejected.inc_by(rejected);
                if self.failing {
                    tracing::info!(url = %self.url, "OTLP export works again");
                    self.failing = false;
                }
            }
            Ok(Err(e)) => self.failed(n, &e),
            Err(_) => self.failed(n, "timed out (export_timeout)"),
        }
    }

    fn failed(&mut self, n: u64, why: &str) {
        self.conn = None;
        self.counters.export_failed.inc_by(n);
        if !self.failing {
            tracing::warn!(url = %self.url, error = why, spans = n,
                "OTLP export failed; spans are dropped until the collector answers");
            self.failing = true;
        }
    }

    fn encode(&self, batch: &[TxSpan]) -> Bytes {
        let analyzer = &self.analyzer;
        let mut text =
            |hash: u64| analyzer.with_hash(hash, |info| info.fingerprint.text.to_string());
        let spans = batch
            .iter()
            .map(|s| s.to_proto(Ids::new(s.parent.as_ref()), &mut text))
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "pake".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        Bytes::from(request.encode_to_vec())
    }

    /// POST one request; `Ok(rejected)` with the spans the collector says it refused.
    async fn post(&mut self, body: Bytes) -> Result<u64, String> {
        let mut sender = match self.conn.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let path = self
            .url
            .path_and_query()
            .map_or("/v1/traces", |p| p.as_str());
        let authority = self.url.authority().map_or("", |a| a.as_str());
        let request = Request::post(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let answer = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        self.conn = Some(sender);
        if !status.is_success() {
            let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
            return Err(format!("collector answered {status}: {text}"));
        }
        // an empty or undecodable answer is a full success
        let rejected = ExportTraceServiceResponse::decode(answer)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_spans.max(0) as u64);
        Ok(rejected)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", self.host, self.port))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "OTLP collector connection closed");
            }
        });
        Ok(sender)
    }
}
