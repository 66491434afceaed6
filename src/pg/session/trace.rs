//! Step "account", tracing half: with OTLP export on, each client transaction becomes one
//! span. Its statements are added up in [`TxTrace`] as they complete (plain fields, no
//! allocation); the ReadyForQuery that returns to idle hands it to the exporter — or drops it
//! when it is not sampled. A statement outside an explicit transaction is its own
//! transaction; in transaction mode a transaction is also one server checkout, and its span
//! starts when its first statement started waiting for that server.

use super::classify::Analysis;
use super::inflight::Inflight;
use super::Session;
use crate::config::PoolMode;
use crate::obs::otlp::span::{SpanTags, TxSpan, SHAPES};
use crate::obs::otlp::Tracer;
use crate::obs::traceparent::TraceParent;
use crate::pg::cluster::Target;
use crate::pg::server::replies::Done;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a session keeps for trace export, only while it is on (boxed: most sessions never
/// export a span, and an idle client should not carry room for one).
pub(super) struct Otlp {
    tracer: Arc<Tracer>,
    /// The open transaction's span-to-be.
    tx: TxTrace,
    /// What this session's spans share, built on first use.
    tags: Option<Arc<SpanTags>>,
}

impl Otlp {
    /// The exporter as configured now (after a RELOAD too), keeping the open transaction.
    pub(super) fn renew(old: Option<Box<Otlp>>, tracer: Option<Arc<Tracer>>) -> Option<Box<Otlp>> {
        let tracer = tracer?;
        let tx = old.map(|o| o.tx).unwrap_or_default();
        Some(Box::new(Otlp {
            tracer,
            tx,
            tags: None,
        }))
    }
}

/// The open client transaction, as far as its span goes.
#[derive(Debug, Default)]
pub(super) struct TxTrace {
    /// When its first statement reached Pake (its pool wait included).
    started: Option<Instant>,
    statements: u32,
    shapes: [u64; SHAPES],
    rows: u64,
    wait: Duration,
    error: Option<[u8; 5]>,
    /// From the first statement with a valid sqlcommenter `traceparent`.
    parent: Option<TraceParent>,
}

impl TxTrace {
    fn note(&mut self, started: Instant, hash: u64, parent: Option<TraceParent>) {
        self.started = Some(self.started.map_or(started, |s| s.min(started)));
        if let Some(slot) = self.shapes.get_mut(self.statements as usize) {
            *slot = hash;
        }
        self.statements = self.statements.saturating_add(1);
        if self.parent.is_none() {
            self.parent = parent;
        }
    }
}

impl Session {
    /// A client statement completed; `wait` is the pool wait it paid (first after a checkout).
    /// Nothing without trace export.
    pub(super) fn trace_statement(&mut self, stmt: &Inflight, done: &Done, wait: Duration) {
        let Some(otlp) = &mut self.otlp else {
            return;
        };
        let t = &mut otlp.tx;
        let arrived = stmt.started.checked_sub(wait).unwrap_or(stmt.started);
        t.note(arrived, stmt.hash, stmt.parent);
        t.rows += done.rows;
        t.wait += wait;
        if t.error.is_none() {
            t.error = done.error;
        }
    }

    /// A plain `BEGIN` Pake answered itself (replayed later on the server the transaction's
    /// first statement picks): it opens the transaction and is one of its statements.
    pub(super) fn trace_local_begin(&mut self, begin: &Analysis) {
        if let Some(otlp) = &mut self.otlp {
            otlp.tx.note(Instant::now(), begin.shape, begin.parent);
        }
    }

    /// A deferred transaction ended without reaching a server: there is nothing to show.
    pub(super) fn trace_discard(&mut self) {
        if let Some(otlp) = &mut self.otlp {
            otlp.tx = TxTrace::default();
        }
    }

    /// The server said ReadyForQuery to a client request: idle ends the transaction.
    pub(super) fn trace_ready(&mut self, status: u8) {
        if status == b'I' {
            self.trace_end(false);
        }
    }

    /// Hand the transaction's span to the exporter when it is sampled, and start afresh.
    /// `abandoned`: the session is ending inside the transaction.
    pub(super) fn trace_end(&mut self, abandoned: bool) {
        let Some(otlp) = &mut self.otlp else {
            return;
        };
        let t = std::mem::take(&mut otlp.tx);
        let Some(started) = t.started else {
            return;
        };
        if t.statements == 0 || !otlp.tracer.sampled(t.parent.as_ref()) {
            return;
        }
        let end = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let took = started.elapsed().as_nanos() as u64;
        let span = TxSpan {
            tags: self.span_tags(),
            backend: match self.server_target {
                Target::Primary => 0,
                Target::Replica(i) => i + 1,
            },
            parent: t.parent,
            start_unix_nanos: end.saturating_sub(took),
            end_unix_nanos: end,
            statements: t.statements,
            shapes: t.shapes,
            rows: t.rows,
            wait: t.wait,
            error: t.error,
            abandoned,
        };
        if let Some(otlp) = &self.otlp {
            otlp.tracer.submit(span);
        }
    }

    /// What every span of this session shares, built on its first sampled transaction.
    fn span_tags(&mut self) -> Arc<SpanTags> {
        if let Some(tags) = self.otlp.as_ref().and_then(|o| o.tags.clone()) {
            return tags;
        }
        let tags = Arc::new(SpanTags {
            database: self.cluster.primary.target().database.clone(),
            user: self.user().to_owned(),
            client_addr: self.cancel.info.addr.ip(),
            backends: self
                .cluster
                .pools()
                .map(|p| (p.target().host.clone(), p.target().port))
                .collect(),
            pool_mode: match self.mode {
                PoolMode::Transaction => "transaction",
                PoolMode::Session => "session",
            },
        });
        if let Some(otlp) = &mut self.otlp {
            otlp.tags = Some(tags.clone());
        }
        tags
    }
}
