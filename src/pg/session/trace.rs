//! Step "account", tracing half: with OTLP export on, each client transaction becomes one
//! span. Its statements are added up in [`TxTrace`] as they complete (plain fields, no
//! allocation); the ReadyForQuery that returns to idle hands it to the exporter — or drops it
//! when it is not sampled. A statement outside an explicit transaction is its own
//! transaction; in transaction mode a transaction is also one server checkout, and its span
//! starts when its first statement started waiting for that server.

use super::classify::Analysis;
use super::record::Inflight;
use super::Session;
use crate::config::PoolMode;
use crate::obs::otlp::span::{SpanTags, TxSpan, SHAPES};
use crate::obs::traceparent::TraceParent;
use crate::pg::cluster::Target;
use crate::pg::server::replies::Done;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    pub(super) fn trace_statement(&mut self, stmt: &Inflight, done: &Done, wait: Duration) {
        let t = &mut self.tx_trace;
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
        if self.otlp.is_none() {
            return;
        }
        self.tx_trace
            .note(Instant::now(), begin.shape, begin.parent);
    }

    /// A deferred transaction ended without reaching a server: there is nothing to show.
    pub(super) fn trace_discard(&mut self) {
        self.tx_trace = TxTrace::default();
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
        let t = std::mem::take(&mut self.tx_trace);
        let Some(started) = t.started else {
            return;
        };
        match &self.otlp {
            Some(tracer) if t.statements > 0 && tracer.sampled(t.parent.as_ref()) => {}
            _ => return,
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
        if let Some(tracer) = &self.otlp {
            tracer.submit(span);
        }
    }

    /// What every span of this session shares, built on its first sampled transaction.
    fn span_tags(&mut self) -> Arc<SpanTags> {
        if let Some(tags) = &self.span_tags {
            return tags.clone();
        }
        let tags = Arc::new(SpanTags {
            database: self.cluster.primary.target().database.clone(),
            user: self.user.clone(),
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
        self.span_tags = Some(tags.clone());
        tags
    }
}
