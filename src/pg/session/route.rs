//! Step "route": where the request at the head of the client buffer runs — the primary, or a
//! replica when Pake is sure the request only reads.
//!
//! The request's statements are classified once per shape (`route::classify`); the session
//! adds what only it knows: an explicit transaction (a plain `BEGIN` is answered here and
//! replayed on the server the transaction's first statement picks, so that
//! `BEGIN; SET TRANSACTION READ ONLY` can go to a replica), `SET pake.route`, comment hints,
//! and read-your-writes (after a write commits, reads stay on the primary until a replica has
//! replayed past the primary's WAL position sampled after the commit). Transaction mode only:
//! in session mode a server keeps session state, so everything stays on the primary.

use super::classify::Analysis;
use super::{frame, Session};
use crate::config::{PoolMode, ReadYourWrites};
use crate::pg::cluster::Target;
use crate::pg::error::Error;
use crate::pg::route::{Class, Route};
use crate::pg::sql::RouteHint;
use crate::pg::wire::{self, backend, fe};
use bytes::Buf;
use std::time::Instant;

/// The session's routing state.
#[derive(Debug, Default)]
pub struct RouteState {
    /// `SET pake.route = 'primary' | 'replica'`; `None` is automatic.
    pub pinned: Option<Route>,
    /// A plain `BEGIN` answered locally, to replay on the transaction's server.
    pub pending_begin: Option<PendingBegin>,
    /// The transaction running on the primary may have written.
    pub tx_wrote: bool,
    /// Causal read-your-writes: the primary sample sequence when the last write committed;
    /// cleared once a later sample gives the position replicas must reach.
    pub ryw_seq: Option<u64>,
    /// Replicas must have replayed at least this far for this session (monotonic reads).
    pub min_lsn: Option<u64>,
    /// Window read-your-writes: reads stay on the primary until then.
    pub primary_until: Option<Instant>,
}

/// A plain `BEGIN` Pake answered itself, waiting for the statement that decides where its
/// transaction runs.
#[derive(Debug)]
pub struct PendingBegin {
    /// As the client wrote it: replayed on the server the transaction's statements choose.
    pub text: Box<str>,
    /// Pake failed one of its requests (no server saw it): like a server's aborted
    /// transaction, it reports `E` and refuses statements until it ends.
    pub failed: bool,
}

impl RouteState {
    /// A deferred transaction Pake aborted: statements are refused until it ends.
    pub fn aborted(&self) -> bool {
        self.pending_begin.as_ref().is_some_and(|b| b.failed)
    }
}

/// What the request at the head of the buffer needs.
pub(super) enum Plan {
    Server(Target),
    /// Pake answered it (deferred BEGIN, COMMIT of an empty deferred transaction,
    /// `SET pake.route`).
    Answered,
}

/// What the statements of one request add up to.
struct Summary {
    /// Every statement only reads, and every function it calls is safe on a replica.
    read: bool,
    hint: Option<RouteHint>,
}

/// May this statement run on a replica? Inside an explicit (read-write) transaction, reads
/// stay on its server; `pending`: a plain `BEGIN` was answered locally; `ro_default`: the
/// client set `default_transaction_read_only` (so its plain transactions are read-only).
fn reads(a: &Analysis, pending: bool, ro_default: bool) -> bool {
    match &a.class {
        Class::Read => (!pending || ro_default) && a.functions_safe,
        Class::Begin { read_only, plain } => *read_only || (*plain && ro_default),
        Class::SetTransaction { read_only } => pending && *read_only,
        _ => false,
    }
}

impl Session {
    /// Decide (and maybe answer) the classified request at the head of the client buffer.
    pub(super) fn plan(&mut self) -> Result<Plan, Error> {
        if self.mode != PoolMode::Transaction {
            return Ok(Plan::Server(Target::Primary));
        }
        if self.request.single_query {
            if let Some(head) = self.request.head().cloned() {
                if let Some(answered) = self.answer_transaction_control(&head)? {
                    return Ok(answered);
                }
            }
        }
        if self.routing.aborted() {
            self.fail_request(&Error::TransactionAborted)?;
            return Ok(Plan::Answered);
        }
        let summary = self.summarize();
        let (target, why) = self.choose(&summary);
        tracing::debug!(?target, why, "route");
        Ok(Plan::Server(target))
    }

    /// The transaction status to report with no server attached: `T` while a BEGIN waits
    /// for the statement that decides where it runs (`E` once Pake failed one of its
    /// requests), else `I`.
    pub(super) fn unattached_status(&self) -> u8 {
        match &self.routing.pending_begin {
            Some(PendingBegin { failed: true, .. }) => b'E',
            Some(_) => b'T',
            None => b'I',
        }
    }

    /// ReadyForQuery for a request answered with no server attached.
    pub(super) fn ready_unattached(&mut self) {
        let status = self.unattached_status();
        backend::ready_for_query(&mut self.cwbuf, status);
    }

    /// Pake is failing the request at the head of the buffer itself: a deferred
    /// transaction is aborted by it, as on a server.
    pub(super) fn abort_deferred_transaction(&mut self) {
        if let Some(begin) = &mut self.routing.pending_begin {
            begin.failed = true;
        }
    }

    /// Local answers: `SET pake.route`, a deferred plain BEGIN, COMMIT/ROLLBACK of it.
    fn answer_transaction_control(&mut self, query: &Analysis) -> Result<Option<Plan>, Error> {
        let replicas = self.pool.settings().read_from_replicas;
        let (tag, status) = match &query.class {
            Class::RouteSetting(_) => {
                let text = self.head_query()?;
                self.routing.pinned = crate::pg::route::classify::route_value(&text);
                ("SET", self.unattached_status())
            }
            Class::Begin { plain: true, .. }
                if replicas && self.routing.pending_begin.is_none() =>
            {
                self.routing.pending_begin = Some(PendingBegin {
                    text: self.head_query()?.into(),
                    failed: false,
                });
                self.trace_local_begin(query);
                ("BEGIN", b'T')
            }
            Class::End if self.routing.pending_begin.is_some() => {
                let text = self.head_query()?;
                let failed = self.routing.aborted();
                self.routing.pending_begin = None;
                self.trace_discard();
                let lower = text.trim_start().to_ascii_lowercase();
                // a server ends an aborted transaction with ROLLBACK whatever it was asked
                let tag = if failed || lower.starts_with("rollback") || lower.starts_with("abort") {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                };
                (tag, b'I')
            }
            _ => return Ok(None),
        };
        let Some((_, len)) = wire::frontend_frame(&self.crbuf, self.max_message)? else {
            return Ok(None);
        };
        self.crbuf.advance(len);
        self.request.clear();
        backend::command_complete(&mut self.cwbuf, tag);
        backend::ready_for_query(&mut self.cwbuf, status);
        self.tally.queries += 1;
        Ok(Some(Plan::Answered))
    }

    /// The text of the Query at the head of the client buffer (for the rare local answers).
    fn head_query(&self) -> Result<String, Error> {
        match wire::frontend_frame(&self.crbuf, self.max_message)? {
            Some((_, len)) => Ok(frame::query(&self.crbuf[..len])?.to_string()),
            None => Ok(String::new()),
        }
    }

    /// Add up the statements of the classified request.
    fn summarize(&self) -> Summary {
        let mut summary = Summary {
            read: true,
            hint: None,
        };
        let pending = self.routing.pending_begin.is_some();
        let ro_default = self.params.read_only_default();
        // the unnamed statement parsed earlier in this request, and whether it reads
        let mut unnamed: Option<bool> = None;
        for part in self.request.parts() {
            let read = match (&part.analysis, part.tag) {
                (_, fe::FUNCTION_CALL) => false,
                (_, fe::BIND) if part.unnamed => unnamed.unwrap_or(false),
                (Some(a), _) => {
                    if summary.hint.is_none() {
                        summary.hint = a.hint;
                    }
                    reads(a, pending, ro_default)
                }
                (None, _) => false,
            };
            if part.tag == fe::PARSE && part.unnamed {
                unnamed = Some(read);
            }
            summary.read &= read;
        }
        summary
    }

    /// Primary or a replica for a request that needs a server, and why.
    fn choose(&mut self, s: &Summary) -> (Target, &'static str) {
        let topology = self.cluster.topology.clone();
        if !self.pool.settings().read_from_replicas || topology.replicas.is_empty() {
            return (Target::Primary, "no replicas for this pool");
        }
        let forced = match (s.hint, self.routing.pinned) {
            (Some(RouteHint::Primary), _) | (None, Some(Route::Primary)) => Some(false),
            (Some(RouteHint::Replica), _) | (None, Some(Route::Replica)) => Some(true),
            (None, None) => None,
        };
        let read = forced.unwrap_or(s.read);
        if !read {
            self.routing.tx_wrote |= !s.read;
            return (
                Target::Primary,
                if forced.is_some() {
                    "pinned"
                } else {
                    "may write"
                },
            );
        }
        if forced.is_none() && !self.replica_has_our_writes() {
            return (Target::Primary, "read-your-writes");
        }
        match topology.choose(self.routing.min_lsn) {
            Some(r) => (Target::Replica(r.index), "read"),
            None => (Target::Primary, "no replica eligible"),
        }
    }

    /// Read-your-writes: may a read go to a replica yet?
    fn replica_has_our_writes(&mut self) -> bool {
        let topology = &self.cluster.topology;
        match topology.settings().read_your_writes {
            ReadYourWrites::Off => true,
            ReadYourWrites::Window => self
                .routing
                .primary_until
                .is_none_or(|until| Instant::now() >= until),
            ReadYourWrites::Causal => match self.routing.ryw_seq {
                None => true,
                Some(seq) => match topology.primary_lsn_after(seq) {
                    None => false,
                    Some(lsn) => {
                        self.routing.ryw_seq = None;
                        self.routing.min_lsn = Some(self.routing.min_lsn.unwrap_or(0).max(lsn));
                        true
                    }
                },
            },
        }
    }

    /// A transaction ended on `target`: remember a write for read-your-writes.
    pub(super) fn on_transaction_end(&mut self, target: Target) {
        if target == Target::Primary && self.routing.tx_wrote {
            let topology = &self.cluster.topology;
            self.routing.ryw_seq = Some(topology.primary_seq());
            self.routing.primary_until =
                Some(Instant::now() + topology.settings().read_your_writes_window.0);
        }
        self.routing.tx_wrote = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::sql::SessionEffect;

    fn analysis(class: Class, functions_safe: bool) -> Analysis {
        Analysis {
            shape: 1,
            hint: None,
            parent: None,
            class,
            functions_safe,
            effect: SessionEffect::None,
            frees_database: None,
            notifies: false,
            reads_prepared_view: false,
            savepoint: None,
        }
    }

    #[test]
    fn what_may_run_on_a_replica() {
        assert!(reads(&analysis(Class::Read, true), false, false));
        assert!(
            !reads(&analysis(Class::Read, false), false, false),
            "volatile function"
        );
        assert!(
            !reads(&analysis(Class::Read, true), true, false),
            "inside BEGIN"
        );
        // SET default_transaction_read_only = on: a plain transaction only reads
        assert!(reads(&analysis(Class::Read, true), true, true));
        let plain = Class::Begin {
            read_only: false,
            plain: true,
        };
        assert!(reads(&analysis(plain, true), false, true));
        assert!(!reads(&analysis(Class::Write, true), false, false));
        let ro_begin = Class::Begin {
            read_only: true,
            plain: false,
        };
        assert!(reads(&analysis(ro_begin, true), false, false));
        let ro_set = Class::SetTransaction { read_only: true };
        assert!(reads(&analysis(ro_set.clone(), true), true, false));
        assert!(
            !reads(&analysis(ro_set, true), false, false),
            "no transaction to set"
        );
        assert!(!reads(&analysis(Class::End, true), false, false));
    }
}
