//! Optional OTLP trace export: one span per client transaction, nested under the
//! application's span when a statement carried a sqlcommenter `traceparent`.
//!
//! ```text
//! session (per transaction, no allocation) --try_send--> bounded queue --> exporter task
//!   TxSpan: times, statement count, shape hashes,        (full: drop,      batches, encodes
//!   first error, pool wait, backend, traceparent          count)           OTLP protobuf, POSTs
//! ```
//! Off (the default), sessions hold no [`Tracer`] and the request path pays one branch.
//! On, a transaction costs a few field updates per statement and one `try_send` at its end;
//! fingerprint texts, ids and the protobuf are built on the exporter task. A slow or absent
//! collector fills the queue and further spans are dropped and counted
//! (`pake_otlp_spans_dropped_total`), never waited for.

pub mod config;
mod export;
pub mod span;

pub use config::OtlpConfig;
pub use span::{SpanTags, TxSpan};

use crate::obs::metrics::Metrics;
use crate::obs::traceparent::TraceParent;
use crate::pg::sql::Analyzer;
use prometheus::IntCounter;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The running exporter's entrance, shared by every session.
pub struct Tracer {
    queue: mpsc::Sender<TxSpan>,
    /// Transactions without a caller's decision are sampled when a random `u64` is below
    /// this (`u64::MAX` with `sample_ratio = 1`: always).
    threshold: u64,
    dropped_full: IntCounter,
    /// The exporter task, for [`Tracer::finish`].
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Tracer {
    /// Start the exporter task on the current runtime; `None` when export is off, or when
    /// there is no runtime to run it on.
    pub fn start(
        config: &OtlpConfig,
        metrics: &Metrics,
        analyzer: Arc<Analyzer>,
    ) -> Option<Arc<Tracer>> {
        if !config.enabled {
            return None;
        }
        let url = match config.traces_url() {
            Ok(url) => url,
            Err(e) => {
                tracing::error!(error = %e, "otlp.endpoint: OTLP export stays off");
                return None;
            }
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("OTLP export needs a Tokio runtime: it stays off");
            return None;
        };
        let dropped = |reason: &str| metrics.otlp_dropped.with_label_values(&[reason]);
        let counters = export::Counters {
            exported: metrics.otlp_exported.with_label_values(&[] as &[&str]),
            export_failed: dropped("export_failed"),
            rejected: dropped("rejected"),
        };
        let (queue, rx) = mpsc::channel(config.queue_size.max(1));
        let exporter = export::Exporter::new(config, url.clone(), analyzer, counters);
        let task = runtime.spawn(exporter.run(rx));
        tracing::info!(%url, sample_ratio = config.sample_ratio, "OTLP trace export on");
        Some(Arc::new(Tracer {
            queue,
            threshold: ratio_threshold(config.sample_ratio),
            dropped_full: dropped("queue_full"),
            task: parking_lot::Mutex::new(Some(task)),
        }))
    }

    /// At shutdown, once the sessions are gone: let the exporter send what is queued (its
    /// queue closes with the last `Tracer`), waiting at most `limit`.
    pub async fn finish(this: Arc<Tracer>, limit: std::time::Duration) {
        let task = this.task.lock().take();
        drop(this);
        if let Some(task) = task {
            if tokio::time::timeout(limit, task).await.is_err() {
                tracing::warn!("OTLP exporter did not finish in time: queued spans are lost");
            }
        }
    }

    /// Is a transaction exported? With a caller's `traceparent`, its sampled flag decides
    /// (the caller's backend expects exactly the children of spans it keeps); without one,
    /// `sample_ratio` does.
    pub fn sampled(&self, parent: Option<&TraceParent>) -> bool {
        match parent {
            Some(p) => p.sampled(),
            None => self.threshold == u64::MAX || rand::random::<u64>() < self.threshold,
        }
    }

    /// Queue a finished transaction's span. Never waits: a full queue drops it (counted).
    pub fn submit(&self, span: TxSpan) {
        if self.queue.try_send(span).is_err() {
            self.dropped_full.inc();
        }
    }
}

/// `ratio` of the `u64` range (`u64::MAX` for 1 and above, 0 for 0 and below).
fn ratio_threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio > 0.0 {
        (ratio * u64::MAX as f64) as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_the_caller_then_the_ratio() {
        let tracer = |ratio: f64| Tracer {
            queue: mpsc::channel(1).0,
            threshold: ratio_threshold(ratio),
            dropped_full: IntCounter::new("x", "x").unwrap(),
            task: parking_lot::Mutex::new(None),
        };
        let on = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let off = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
        let never = tracer(0.0);
        assert!(never.sampled(on.as_ref()), "the caller sampled it");
        assert!((0..1000).all(|_| !never.sampled(None)));
        let always = tracer(1.0);
        assert!(
            !always.sampled(off.as_ref()),
            "the caller did not sample it"
        );
        assert!((0..1000).all(|_| always.sampled(None)));
        let half = tracer(0.5);
        let kept = (0..10_000).filter(|_| half.sampled(None)).count();
        assert!((4000..6000).contains(&kept), "{kept} of 10000 at 0.5");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (queue, _rx) = mpsc::channel(1);
        let tracer = Tracer {
            queue,
            threshold: u64::MAX,
            dropped_full: IntCounter::new("dropped", "dropped").unwrap(),
            task: parking_lot::Mutex::new(None),
        };
        let span = TxSpan {
            tags: Arc::new(SpanTags {
                database: "d".into(),
                user: "u".into(),
                client_addr: [127, 0, 0, 1].into(),
                backends: vec![],
                pool_mode: "transaction",
            }),
            backend: 0,
            parent: None,
            start_unix_nanos: 0,
            end_unix_nanos: 0,
            statements: 1,
            shapes: [0; span::SHAPES],
            rows: 0,
            wait: std::time::Duration::ZERO,
            error: None,
            abandoned: false,
        };
        tracer.submit(span.clone());
        tracer.submit(span.clone());
        tracer.submit(span);
        assert_eq!(tracer.dropped_full.get(), 2);
    }
}
