//! Step "account": every completed client statement (a Query, or an Execute) becomes a
//! [`QueryEvent`] for the insight engine, with its execution time, its share of the pool
//! wait, rows, error, route and trace id. Statements are matched to completions in order
//! (the server answers in order); nothing here takes a lock or a shared reference count.

use super::expect::Done;
use super::Session;
use crate::insight::{QueryEvent, Route};
use crate::pg::cluster::Target;
use crate::pg::route::Class;
use std::time::Instant;

/// Most named-statement analyses a session keeps (cleared when full).
const NAMED_CAP: usize = 256;

/// A statement sent to the server, waiting for its completion.
#[derive(Debug)]
pub(super) struct Inflight {
    /// Shape hash (the analysis and fingerprint are looked up at completion).
    pub hash: u64,
    /// Raw text of a simple Query (literals included, redacted by insight when shown);
    /// `None` for an Execute, which is shown by its fingerprint.
    pub text: Option<Box<str>>,
    pub trace_id: Option<Box<str>>,
    pub started: Instant,
    /// The client's transaction number when it was sent.
    pub tx: u64,
}

/// The statement a Bind/Parse names, for the Execute that follows.
#[derive(Debug, Clone)]
pub(super) struct StatementRef {
    pub hash: u64,
    pub trace_id: Option<Box<str>>,
}

impl StatementRef {
    pub(super) fn of(norm: &crate::pg::sql::Normalized) -> StatementRef {
        StatementRef {
            hash: norm.hash,
            trace_id: norm.hints.trace_id().map(Into::into),
        }
    }
}

impl Session {
    /// Analyse `text` for recording: its shape hash and trace id.
    pub(super) fn statement_ref(&self, text: &str) -> StatementRef {
        self.proxy
            .analyzer
            .with(text, |norm, _| StatementRef::of(norm))
    }

    /// Follow the statements of extended-protocol messages; for an Execute, the statement
    /// about to be sent. (A simple Query is noted where it is forwarded, from the analysis
    /// that also gives its session effect.)
    pub(super) fn note_statement(
        &mut self,
        tag: u8,
        frame: &[u8],
    ) -> Result<Option<StatementRef>, crate::pg::error::Error> {
        use crate::pg::wire::{self, fe};
        let malformed = || wire::FrameError::Malformed { what: "statement" };
        match tag {
            fe::PARSE => {
                let (name, rest) = wire::cstr(wire::body(frame)).ok_or_else(malformed)?;
                if name.is_empty() {
                    let (query, _) = wire::cstr(rest).ok_or_else(malformed)?;
                    let query = std::str::from_utf8(query).map_err(|_| malformed())?;
                    self.unnamed = Some(self.statement_ref(query));
                }
                Ok(None)
            }
            fe::BIND => {
                let (_, rest) = wire::cstr(wire::body(frame)).ok_or_else(malformed)?;
                let (name, _) = wire::cstr(rest).ok_or_else(malformed)?;
                self.portal = if name.is_empty() {
                    self.unnamed.clone()
                } else {
                    match self.statements.get(name) {
                        Some(s) => match self.named.get(&s.id) {
                            Some(known) => Some(known.clone()),
                            None => {
                                let (id, r) = (
                                    s.id,
                                    self.proxy
                                        .analyzer
                                        .with(&s.query, |n, _| StatementRef::of(n)),
                                );
                                if self.named.len() >= NAMED_CAP {
                                    self.named.clear();
                                }
                                self.named.insert(id, r.clone());
                                Some(r)
                            }
                        },
                        None => None,
                    }
                };
                Ok(None)
            }
            fe::EXECUTE => Ok(self.portal.clone()),
            _ => Ok(None),
        }
    }

    /// A client statement went to the server.
    pub(super) fn sent(&mut self, stmt: StatementRef, text: Option<Box<str>>) {
        self.inflight.push_back(Inflight {
            hash: stmt.hash,
            text,
            trace_id: stmt.trace_id,
            started: Instant::now(),
            tx: self.tx_seq,
        });
    }

    /// The statement at the head of the in-flight queue completed.
    pub(super) fn completed(&mut self, done: Done) {
        let Some(stmt) = self.inflight.pop_front() else {
            return;
        };
        let duration = stmt.started.elapsed();
        let wait = std::mem::take(&mut self.wait_to_report);
        let error = done
            .error
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok());
        let route = match self.server_target {
            Target::Primary => Route::Primary,
            Target::Replica(_) => Route::Replica,
        };
        let application = self.params.get("application_name").unwrap_or("");
        let insight = &self.proxy.insight;
        let addr = self.cancel.info.addr;
        self.proxy.analyzer.with_hash(stmt.hash, |info| {
            insight.record(&QueryEvent {
                fingerprint: &info.fingerprint,
                text: stmt.text.as_deref().unwrap_or(&info.fingerprint.text),
                params: &[],
                database: &self.database,
                user: &self.user,
                application,
                route,
                client_id: self.id,
                client_addr: addr,
                transaction: stmt.tx,
                duration,
                wait,
                rows: done.rows,
                error,
                trace_id: stmt.trace_id.as_deref(),
                writes: info.route.class != Class::Read,
            })
        });
    }

    /// Executes the server skipped after an error: they never ran.
    pub(super) fn skipped(&mut self, n: u32) {
        for _ in 0..n {
            self.inflight.pop_front();
        }
    }
}
