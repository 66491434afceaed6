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

/// Why a request failed: before any answer (worth one more try on a new connection when the
/// connection was a kept-alive one), or with one.
enum Failure {
    Unanswered(String),
    Answered(String),
}

impl Failure {
    fn into_message(self) -> String {
        match self {
            Failure::Unanswered(e) | Failure::Answered(e) => e,
        }
    }
}

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

    /// POST one request; `Ok(rejected)` with the spans the collector says it refused. A
    /// kept-alive connection the collector closed while idle fails before any answer: the
    /// request is then sent once more on a new connection.
    async fn post(&mut self, body: Bytes) -> Result<u64, String> {
        if let Some(sender) = self.conn.take().filter(|s| !s.is_closed()) {
            match self.send(sender, body.clone()).await {
                Err(Failure::Unanswered(e)) => {
                    tracing::debug!(error = %e, "kept-alive collector connection failed; reconnecting");
                }
                other => return other.map_err(Failure::into_message),
            }
        }
        let sender = self.connect().await?;
        self.send(sender, body).await.map_err(Failure::into_message)
    }

    async fn send(
        &mut self,
        mut sender: SendRequest<Full<Bytes>>,
        body: Bytes,
    ) -> Result<u64, Failure> {
        let unanswered = |e: hyper::Error| Failure::Unanswered(e.to_string());
        sender.ready().await.map_err(unanswered)?;
        let path = self
            .url
            .path_and_query()
            .map_or("/v1/traces", |p| p.as_str());
        let authority = self.url.authority().map_or("", |a| a.as_str());
        let request = Request::post(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| Failure::Answered(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(unanswered)?;
        let status = response.status();
        let answer = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| Failure::Answered(e.to_string()))?
            .to_bytes();
        self.conn = Some(sender);
        if !status.is_success() {
            let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
            return Err(Failure::Answered(format!(
                "collector answered {status}: {text}"
            )));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::otlp::span::{SpanTags, SHAPES};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Read one HTTP/1.1 request (headers, then `content-length` bytes of body).
    async fn read_request(s: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return buf[end + 4..end + 4 + len].to_vec();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed mid-request");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn span() -> TxSpan {
        TxSpan {
            tags: Arc::new(SpanTags {
                database: "d".into(),
                user: "u".into(),
                client_addr: [127, 0, 0, 1].into(),
                backends: vec![("127.0.0.1".into(), 5432)],
                pool_mode: "transaction",
            }),
            backend: 0,
            parent: None,
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            statements: 1,
            shapes: [0; SHAPES],
            rows: 0,
            wait: Duration::ZERO,
            error: None,
            abandoned: false,
        }
    }

    #[tokio::test]
    async fn a_kept_alive_connection_closed_by_the_collector_is_retried_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // first connection: answer one request, then take the next and close unanswered;
        // second connection: answer everything
        let server = tokio::spawn(async move {
            let mut bodies = Vec::new();
            let (mut first, _) = listener.accept().await.unwrap();
            bodies.push(read_request(&mut first).await);
            first
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            read_request(&mut first).await;
            drop(first);
            let (mut second, _) = listener.accept().await.unwrap();
            bodies.push(read_request(&mut second).await);
            second
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            bodies
        });
        let config = OtlpConfig {
            enabled: true,
            endpoint: format!("http://{addr}"),
            ..OtlpConfig::default()
        };
        let counters = Counters {
            exported: IntCounter::new("exported", "x").unwrap(),
            export_failed: IntCounter::new("failed", "x").unwrap(),
            rejected: IntCounter::new("rejected", "x").unwrap(),
        };
        let url = config.traces_url().unwrap();
        let mut ex = Exporter::new(&config, url, Arc::new(Analyzer::new()), counters);
        ex.export(&[span()]).await;
        ex.export(&[span(), span()]).await;
        assert_eq!(ex.counters.exported.get(), 3);
        assert_eq!(ex.counters.export_failed.get(), 0);
        let bodies = server.await.unwrap();
        let second = ExportTraceServiceRequest::decode(bodies[1].as_slice()).unwrap();
        assert_eq!(second.resource_spans[0].scope_spans[0].spans.len(), 2);
    }
}
