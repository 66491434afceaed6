//! Step "classify": the request at the head of the client buffer — one Query, or the
//! extended-protocol messages up to its Sync — analysed once into a [`Request`].
//!
//! Each statement text is normalised and looked up in the per-shape cache
//! ([`crate::pg::sql::Analyzer`]) once per request; the later steps (route, forward,
//! account) read its [`Analysis`] instead of lexing the text again. A Bind of a named
//! statement costs no lexing at all: the analysis of each interned statement is kept per
//! session. Messages that arrive while a server is already attached (a pipelined request, a
//! long batch forwarded before its Sync) are analysed as they are forwarded, still once.

use super::{frame, PoolMode, Session};
use crate::obs::traceparent::TraceParent;
use crate::pg::error::Error;
use crate::pg::route::{Class, Topology};
use crate::pg::sql::{Normalized, RouteHint, SessionEffect, StatementInfo};
use crate::pg::wire::{self, fe};
use std::collections::VecDeque;

/// Most analyses of interned statements a session keeps (cleared when full).
const MAX_ANALYZED: usize = 256;
/// A statement-bearing message this long is analysed off the worker's other clients' way
/// (`block_in_place`): its lexing takes milliseconds per megabyte.
const HUGE_MESSAGE: usize = 1 << 20;

/// What Pake knows about one statement of a request.
#[derive(Debug, Clone)]
pub(super) struct Analysis {
    /// Shape id: the hash of the normalised text. Insight and traces find the fingerprint
    /// under it.
    pub shape: u64,
    /// `/* pake:primary */` or `/* pake:replica */`.
    pub hint: Option<RouteHint>,
    /// A valid sqlcommenter `traceparent`.
    pub parent: Option<TraceParent>,
    pub class: Class,
    /// Every function it calls may run on a replica (always true when it calls none).
    pub functions_safe: bool,
    /// What running it leaves on the server session.
    pub effect: SessionEffect,
    /// A database it needs free of other sessions (`DROP DATABASE x`…).
    pub frees_database: Option<std::sync::Arc<str>>,
    /// It may send a notification (`NOTIFY`, `pg_notify`).
    pub notifies: bool,
    /// It reads `pg_prepared_statements`.
    pub reads_prepared_view: bool,
    /// A savepoint statement.
    pub savepoint: Option<crate::pg::sql::Savepoint>,
}

impl Analysis {
    fn of(norm: &Normalized, info: &StatementInfo, topology: &Topology) -> Analysis {
        let class = info.route.class.clone();
        Analysis {
            shape: norm.hash,
            hint: norm.hints.route,
            parent: norm.hints.traceparent(),
            functions_safe: class != Class::Read || topology.functions_safe(&info.route.functions),
            class,
            effect: info.session.clone(),
            frees_database: info.frees_database.clone(),
            notifies: info.notifies,
            reads_prepared_view: info.reads_prepared_view,
            savepoint: info.savepoint.clone(),
        }
    }
}

/// One statement-bearing message of a request: a Query, Parse, Bind or FunctionCall.
#[derive(Debug)]
pub(super) struct Part {
    pub tag: u8,
    /// A Parse or Bind of the unnamed statement.
    pub unnamed: bool,
    /// The statement: a Query's or Parse's text; for a Bind, the named statement it runs
    /// when this session knows it already (`None` for a FunctionCall).
    pub analysis: Option<Analysis>,
}

/// The request at the head of the client buffer, analysed.
#[derive(Debug, Default)]
pub(super) struct Request {
    /// Its statement-bearing messages, in order; forwarding takes each from the front.
    parts: VecDeque<Part>,
    /// The request is one simple Query (it may be answered without a server).
    pub single_query: bool,
}

impl Request {
    pub fn clear(&mut self) {
        self.parts.clear();
        self.single_query = false;
    }

    /// Give the parts' room back (an idle client keeps none).
    pub fn release(&mut self) {
        if self.parts.is_empty() {
            self.parts = VecDeque::new();
        }
    }

    pub fn parts(&self) -> impl Iterator<Item = &Part> {
        self.parts.iter()
    }

    /// The first statement, when the request starts with a Query, Parse or Bind.
    pub fn head(&self) -> Option<&Analysis> {
        self.parts.front().and_then(|p| p.analysis.as_ref())
    }

    /// The analysis of the message `tag` about to be forwarded, if classify made it. A
    /// mismatch (never expected) drops the rest, which are then analysed as they come.
    fn take(&mut self, tag: u8) -> Option<Part> {
        match self.parts.pop_front() {
            Some(p) if p.tag == tag => Some(p),
            Some(_) => {
                self.parts.clear();
                None
            }
            None => None,
        }
    }
}

/// Does this message carry a statement (or a function call) of its own?
fn bears_statement(tag: u8) -> bool {
    matches!(tag, fe::QUERY | fe::PARSE | fe::BIND | fe::FUNCTION_CALL)
}

impl Session {
    /// Analyse the request at the head of the client buffer, up to its terminator (or as
    /// much of a long batch as is here).
    pub(super) fn classify(&mut self) -> Result<(), Error> {
        self.request.clear();
        let buf = std::mem::take(&mut self.crbuf);
        let result = self.classify_in(&buf);
        self.crbuf = buf;
        result
    }

    fn classify_in(&mut self, buf: &[u8]) -> Result<(), Error> {
        let mut pos = 0;
        while let Some((tag, len)) = wire::frontend_frame(&buf[pos..], self.max_message)? {
            if pos == 0 {
                self.request.single_query = tag == fe::QUERY;
            }
            if bears_statement(tag) {
                let part = self.analyse_part(tag, &buf[pos..pos + len])?;
                self.request.parts.push_back(part);
            }
            pos += len;
            if matches!(tag, fe::QUERY | fe::SYNC | fe::FLUSH | fe::FUNCTION_CALL) {
                break;
            }
        }
        Ok(())
    }

    /// Transaction mode, a statement that may notify is about to go to the attached server:
    /// its notifications must name this client (the pid Pake handed it), not the server,
    /// wherever they arrive — at a client whose LISTEN pinned a server of its own (renamed
    /// by who holds the sender's server) or through the listening connection. Noted at the
    /// statement, not at checkout: a server checked out before anyone listened, or by a
    /// pinned client, was never noted (psycopg2's test_notify, 6 tests; session mode holds
    /// its server from the attach).
    fn note_notifier(&self) {
        let Some(server) = self.server.as_deref() else {
            return;
        };
        if self.mode != PoolMode::Transaction {
            return;
        }
        self.proxy
            .cancel
            .hold(&server.cancel_target(), self.cancel.pid);
        if let Some(l) = &self.notify {
            l.note_server(server.key.pid, self.cancel.pid);
        }
    }

    /// The analysis of a statement-bearing message about to be forwarded: made by classify,
    /// or now when it arrived after the request was classified.
    pub(super) fn part_for(&mut self, tag: u8, frame: &[u8]) -> Result<Part, Error> {
        let part = match self.request.take(tag) {
            Some(part) => part,
            None => self.analyse_part(tag, frame)?,
        };
        self.pending_settings.unstage();
        if let Some(a) = &part.analysis {
            self.may_notify |= a.notifies;
            if a.notifies {
                self.note_notifier();
            }
            // a statement runs at its Query, its unnamed Parse (bound next), or the Bind of a
            // named one: savepoints are followed in that order
            let runs = part.tag != fe::PARSE || part.unnamed;
            if let Some(op) = a.savepoint.as_ref().filter(|_| runs) {
                self.pending_settings.stage_savepoint(op);
                self.pins.savepoint(op);
            }
        }
        Ok(part)
    }

    fn analyse_part(&mut self, tag: u8, frame: &[u8]) -> Result<Part, Error> {
        if frame.len() > HUGE_MESSAGE {
            // tens of milliseconds of lexing: this worker's other clients move to another
            // thread meanwhile instead of waiting behind it
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                    return tokio::task::block_in_place(|| self.analyse_part_now(tag, frame));
                }
            }
        }
        self.analyse_part_now(tag, frame)
    }

    fn analyse_part_now(&mut self, tag: u8, frame: &[u8]) -> Result<Part, Error> {
        let (unnamed, analysis) = match tag {
            fe::QUERY => (false, Some(self.analyse(&frame::query(frame)?))),
            fe::PARSE => {
                let p = frame::parse(frame)?;
                (p.name.is_empty(), Some(self.analyse(&p.query)))
            }
            fe::BIND => {
                let b = frame::bind(frame)?;
                (b.statement.is_empty(), self.analyse_interned(b.statement))
            }
            _ => (false, None),
        };
        Ok(Part {
            tag,
            unnamed,
            analysis,
        })
    }

    /// Normalise `text` and look its shape up (analysing the shape on its first sight).
    pub(super) fn analyse(&self, text: &str) -> Analysis {
        let topology = &self.cluster.topology;
        self.proxy
            .analyzer
            .with(text, |norm, info| Analysis::of(norm, info, topology))
    }

    /// Transaction mode: the analysis of the interned statement a client name stands for,
    /// made once per session.
    pub(super) fn analyse_interned(&mut self, name: &[u8]) -> Option<Analysis> {
        if name.is_empty() {
            return None;
        }
        let (id, analysis) = {
            let stmt = self.statements.get(name)?;
            if let Some(known) = self.analyzed.get(&stmt.id) {
                return Some(known.clone());
            }
            (stmt.id, self.analyse(&stmt.query))
        };
        self.remember_interned(id, &analysis);
        Some(analysis)
    }

    /// Keep the analysis of an interned statement for the Binds that run it.
    pub(super) fn remember_interned(
        &mut self,
        id: crate::pg::prepared::StatementId,
        analysis: &Analysis,
    ) {
        if self.analyzed.len() >= MAX_ANALYZED && !self.analyzed.contains_key(&id) {
            self.analyzed.clear();
        }
        self.analyzed.insert(id, analysis.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(tag: u8) -> Part {
        Part {
            tag,
            unnamed: false,
            analysis: None,
        }
    }

    #[test]
    fn forwarding_takes_parts_in_order_and_drops_them_on_a_mismatch() {
        let mut r = Request::default();
        r.parts
            .extend([part(fe::PARSE), part(fe::BIND), part(fe::PARSE)]);
        assert_eq!(r.take(fe::PARSE).map(|p| p.tag), Some(fe::PARSE));
        assert_eq!(r.take(fe::BIND).map(|p| p.tag), Some(fe::BIND));
        // a message the request did not list: nothing of it can be trusted any more
        assert!(r.take(fe::QUERY).is_none());
        assert_eq!(r.parts().count(), 0);
        assert!(
            r.take(fe::PARSE).is_none(),
            "analysed when forwarded instead"
        );
    }

    #[test]
    fn only_statement_messages_are_parts() {
        for tag in [fe::QUERY, fe::PARSE, fe::BIND, fe::FUNCTION_CALL] {
            assert!(bears_statement(tag));
        }
        for tag in [fe::SYNC, fe::EXECUTE, fe::DESCRIBE, fe::CLOSE, fe::FLUSH] {
            assert!(!bears_statement(tag));
        }
    }
}
