//! Step "account": every completed client statement (a Query, or an Execute) becomes a
//! [`QueryEvent`] for the insight engine, with its execution time, its share of the pool
//! wait, rows, error, route and trace id, and adds to its transaction's span when OTLP export
//! is on ([`super::trace`]). Statements are matched to completions in order (the server
//! answers in order); nothing here takes a lock or a shared reference count.

use super::classify::Analysis;
use super::inflight::{Inflight, Text};
use super::Session;
use crate::config::PoolMode;
use crate::insight::collector::{split_base, MAX_SAMPLE_TEXT};
use crate::insight::{QueryEvent, Route};
use crate::obs::traceparent::TraceParent;
use crate::pg::cluster::Target;
use crate::pg::route::Class;
use crate::pg::server::replies::Done;
use std::sync::Arc;
use std::time::Instant;

/// Named statements remembered per session-mode client (beyond it the map starts afresh:
/// statements prepared before are then recorded as unknown).
const MAX_NAMED: usize = 1024;

/// The statement a Bind/Parse names, for the Execute that follows.
#[derive(Debug, Clone)]
pub(super) struct StatementRef {
    pub hash: u64,
    pub parent: Option<TraceParent>,
    /// The text it was prepared with (the advisor learns from it which values are bound).
    pub text: Option<Arc<str>>,
}

impl StatementRef {
    pub(super) fn of(analysis: &Analysis, text: Option<Arc<str>>) -> StatementRef {
        StatementRef {
            hash: analysis.shape,
            parent: analysis.parent,
            text,
        }
    }
}

/// What reading the server finished, in the order it happened.
#[derive(Debug)]
pub(super) enum Finished {
    /// The client statement at the head of the in-flight queue completed.
    Statement(Done),
    /// Executes the server skipped after an error in their batch (they never ran).
    Skipped(u32),
    /// A ReadyForQuery answered a client request, with this transaction status (noted only
    /// while OTLP export is on).
    Ready(u8),
}

impl Session {
    /// Act on what reading the server finished, in order.
    pub(super) fn account(&mut self, finished: &mut Vec<Finished>) {
        for f in finished.drain(..) {
            match f {
                Finished::Statement(done) => self.completed(done),
                Finished::Skipped(n) => self.skipped(n),
                Finished::Ready(status) => self.trace_ready(status),
            }
        }
    }

    /// A Parse is forwarded: remember what the unnamed statement (or, in session mode, a
    /// named one) runs, for the Executes of its portals.
    pub(super) fn note_parse(&mut self, name: &[u8], analysis: &Analysis, query: &str) {
        let query = (self.insight_on && query.len() <= MAX_SAMPLE_TEXT).then_some(query);
        if name.is_empty() {
            // a driver re-parses the same unnamed text: keep the copy it already has
            let text = match (self.unnamed.take().and_then(|u| u.text), query) {
                (Some(t), Some(q)) if *t == *q => Some(t),
                (_, q) => q.map(Arc::from),
            };
            self.unnamed = Some(StatementRef::of(analysis, text));
        } else if self.mode == PoolMode::Session {
            // transaction mode keeps named statements in `statements`; session mode
            // forwards them untouched, so remember what each name runs here
            let named = &mut self.rare().named;
            if named.len() >= MAX_NAMED && !named.contains_key(name) {
                named.clear();
            }
            named.insert(
                name.into(),
                StatementRef::of(analysis, query.map(Arc::from)),
            );
        }
    }

    /// A Bind is forwarded: its portal runs the statement it names. `interned` is the
    /// analysis of the named statement when classify found it.
    pub(super) fn note_bind(&mut self, statement: &[u8], interned: Option<Analysis>) {
        self.portal = if statement.is_empty() {
            self.unnamed.clone()
        } else if let Some(stmt) = self.rare.as_ref().and_then(|r| r.named.get(statement)) {
            Some(stmt.clone())
        } else {
            // transaction mode: the interned statement (parsed in this very request, it was
            // not known when the request was classified)
            let text = self.statements.get(statement).map(|s| s.query.clone());
            interned
                .or_else(|| self.analyse_interned(statement))
                .map(|a| StatementRef::of(&a, text))
        };
    }

    /// A Close of a named statement is forwarded (session mode) or answered.
    pub(super) fn note_close(&mut self, name: &[u8]) {
        if let Some(r) = &mut self.rare {
            r.named.remove(name);
        }
    }

    /// The statement an Execute runs (its portal's).
    pub(super) fn portal_statement(&self) -> Option<StatementRef> {
        self.portal.clone()
    }

    /// A client statement went to the server.
    /// `query` is a simple Query's text (when kept); an Execute (`prepared`) has its
    /// statement's.
    pub(super) fn sent(&mut self, stmt: StatementRef, query: Text, prepared: bool) {
        let text = match (prepared, stmt.text) {
            (true, Some(t)) => Text::Prepared(t),
            (true, None) => Text::None,
            (false, _) => query,
        };
        self.inflight.push(Inflight {
            hash: stmt.hash,
            text,
            prepared,
            parent: stmt.parent,
            started: Instant::now(),
            tx: self.tx_seq,
        });
    }

    /// The statement at the head of the in-flight queue completed.
    pub(super) fn completed(&mut self, done: Done) {
        let Some(stmt) = self.inflight.pop() else {
            return;
        };
        let wait = std::mem::take(&mut self.wait_to_report);
        self.trace_statement(&stmt, &done, wait);
        if !self.insight_on {
            return;
        }
        let duration = stmt.started.elapsed();
        let error = done
            .error
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok());
        let route = match self.server_target {
            Target::Primary => Route::Primary,
            Target::Replica(_) => Route::Replica,
        };
        let application = self.params.get("application_name").unwrap_or("");
        if self.split.0 != self.params.sig() {
            let base = split_base(self.database(), self.user(), application);
            self.split = (self.params.sig(), base);
        }
        let split = self.split.1 ^ route as u64;
        let insight = &self.proxy.insight;
        let inflight = &self.inflight;
        let addr = self.cancel.info.addr;
        let mut hex = [0u8; 32];
        let trace_id = stmt.parent.as_ref().map(|p| p.trace_id_hex(&mut hex));
        self.proxy.analyzer.with_hash(stmt.hash, |info| {
            insight.record(&QueryEvent {
                fingerprint: &info.fingerprint,
                text: inflight.text(&stmt).unwrap_or(&info.fingerprint.text),
                params: &[],
                prepared: stmt.prepared,
                database: self.database(),
                user: self.user(),
                application,
                route,
                split,
                client_id: self.id,
                client_addr: addr,
                transaction: stmt.tx,
                duration,
                wait,
                rows: done.rows,
                error,
                trace_id,
                writes: info.route.class != Class::Read,
            })
        });
    }

    /// Executes the server skipped after an error: they never ran.
    fn skipped(&mut self, n: u32) {
        self.inflight.skip(n);
    }
}
