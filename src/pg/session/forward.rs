//! Step "forward": each client message to the attached server, one handler per message
//! type. Prepared-statement names are rewritten in transaction mode (a client's `s1` is the
//! process-wide `pake_7` on every server), statements a server lacks are parsed on it first,
//! and every message pushes the replies it is owed ([`crate::pg::server::replies`]).
//! Statements are accounted as they are sent (insight, traces) from the request's analysis.

use super::classify::Part;
use super::inflight::Text;
use super::record::StatementRef;
use super::state::{self, Fate};
use super::{frame, Session};
use crate::config::PoolMode;
use crate::insight::collector::MAX_SAMPLE_TEXT;
use crate::pg::error::Error;
use crate::pg::prepared::{Ddl, Statement, StatementId};
use crate::pg::server::replies::{Expect, Synth};
use crate::pg::server::Server;
use crate::pg::wire::{self, backend, fe};
use bytes::{BufMut, BytesMut};
use std::sync::Arc;

impl Session {
    /// Forward one client message to the attached server.
    pub(super) fn forward(&mut self, tag: u8, frame: &[u8]) -> Result<(), Error> {
        if self.server.is_none() {
            return Ok(());
        }
        match tag {
            fe::QUERY | fe::PARSE | fe::BIND => {
                let part = self.part_for(tag, frame)?;
                // a statement that needs its database free of other sessions (DROP DATABASE…),
                // sent or bound again from its prepared statement (psycopg prepares one on its
                // fifth run): Pake's idle servers there are closed before it runs
                let frees = part
                    .analysis
                    .as_ref()
                    .and_then(|a| a.frees_database.as_ref());
                if let Some(db) = frees {
                    self.proxy.close_idle_servers(db);
                }
                match tag {
                    fe::QUERY => self.forward_query(frame, part)?,
                    fe::PARSE => self.forward_parse(frame, part)?,
                    _ => self.forward_bind(frame, part)?,
                }
            }
            fe::DESCRIBE => self.forward_describe(frame)?,
            fe::CLOSE => self.forward_close(frame)?,
            fe::EXECUTE => self.forward_execute(frame),
            fe::SYNC => self.forward_sync(frame),
            fe::FUNCTION_CALL => {
                self.part_for(tag, frame)?;
                self.forward_function_call(frame);
            }
            fe::COPY_DONE | fe::COPY_FAIL => self.with_server(|s| {
                s.replies.on_copy_end_sent();
                s.wbuf.put_slice(frame);
            }),
            fe::FLUSH | fe::COPY_DATA => self.with_server(|s| s.wbuf.put_slice(frame)),
            other => return Err(Error::Unexpected(wire::Tag(other))),
        }
        if let Some(server) = self.server.as_deref_mut() {
            if let Some(stamp) = server.replies.drain_synthetic(&mut self.cwbuf) {
                self.statements.closed(stamp);
            }
        }
        Ok(())
    }

    /// Transaction mode, before a Bind or statement Describe of a client statement the
    /// client has described: the server's copy must be known to take and return what the
    /// client was told (after DDL Pake did not see, a copy parsed afresh returns the new type
    /// and infers its parameters again, where the server itself would refuse its old plan
    /// with 0A000, or keep its parameter types). A copy whose description is unknown
    /// — parsed here just now, or by a client that never described it — is described first
    /// and the message waits in the client's buffer for the answer (`true`): one round trip,
    /// when a described statement first reaches a server. Any Bind or Describe of a client
    /// statement waits while the server's copy of it is in doubt ([`Server::copy_in_doubt`]).
    pub(super) fn hold_for_result(&mut self, tag: u8, frame: &[u8]) -> Result<bool, Error> {
        if self.mode != PoolMode::Transaction {
            return Ok(false);
        }
        let name = match tag {
            fe::PARSE => return self.parse_waits(frame),
            fe::BIND => frame::bind(frame)?.statement,
            fe::DESCRIBE => match frame::subject(frame)? {
                s if s.kind == b'S' => s.name,
                _ => return Ok(false),
            },
            _ => return Ok(false),
        };
        let Some(server) = self.server.as_deref() else {
            return Ok(false);
        };
        if name.is_empty() {
            // the unnamed statement: whether the client's Parse of it is skipped decides
            return Ok(server.replies.own_unnamed_in_doubt() && !server.replies.is_skipping());
        }
        let closing = self.statements.awaits_close(name);
        if let Some(ask) = closing.or_else(|| self.statements.awaits_earlier_batch(name)) {
            return Ok(self.wait_for_answers(ask));
        }
        let Some((stmt, told)) = self.statements.told(name) else {
            return Ok(false);
        };
        let (id, reads_view) = (stmt.id, stmt.reads_view);
        let stmt = told.is_some().then(|| stmt.clone());
        if self.waits_for_copy(id, reads_view) {
            return Ok(true);
        }
        let Some(stmt) = stmt else {
            return Ok(false);
        };
        let cap = self.pool.settings().defaults.max_prepared_statements;
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(false);
        };
        if stmt.reads_view || server.replies.is_skipping() {
            return Ok(false); // parsed afresh each time; a server skipping fails it anyway
        }
        if server.replies.describing() {
            return Ok(true);
        }
        if server.statements.description(stmt.id).is_some() {
            return Ok(false);
        }
        server.in_extended = true;
        ensure_prepared(server, &stmt, cap);
        describe_statement(&mut server.wbuf, stmt.name.as_bytes());
        let at = wire::begin_frame(&mut server.wbuf, fe::FLUSH);
        wire::finish_frame(&mut server.wbuf, at);
        server.replies.push(Expect::DescribeStatement {
            stmt: Some(stmt.id),
            injected: true,
        });
        Ok(true)
    }

    /// Statements are followed for insight or trace export.
    pub(super) fn noting(&self) -> bool {
        self.insight_on || self.otlp.is_some()
    }

    /// Transaction mode, a Query or Parse with `text`: DDL that may change what prepared
    /// statements return makes every one be prepared afresh from now on; any DDL makes it so
    /// again when its transaction ends (see `Server::ddl`).
    fn note_ddl(&mut self, text: &[u8]) {
        let ddl = crate::pg::prepared::ddl(text);
        if ddl == Ddl::ChangesResultTypes {
            self.proxy.statements.forget_all();
        }
        if ddl != Ddl::None {
            self.with_server(|s| s.ddl = true);
        }
    }

    fn with_server(&mut self, f: impl FnOnce(&mut Server)) {
        if let Some(server) = self.server.as_deref_mut() {
            f(server);
        }
    }

    fn forward_query(&mut self, frame: &[u8], part: Part) -> Result<(), Error> {
        let Some(analysis) = part.analysis else {
            return Ok(());
        };
        let rename = self.mode == PoolMode::Transaction;
        if rename {
            self.note_ddl(wire::body(frame));
        }
        // a simple Query destroys the unnamed statement
        self.unnamed_parse.clear();
        self.forget_terminate_statement(b"");
        if !rename {
            self.forget_deallocated(&analysis.effect);
        }
        self.forget_unnamed_setting();
        // nothing is pending, so an answer can be written straight away: a lone DEALLOCATE
        // or DISCARD ALL between transactions; inside one (not failed), a DEALLOCATE, which
        // is not transactional (psycopg evicts its statements so): the server has none of
        // the client's names, and would fail it with 26000
        let status = self
            .server
            .as_deref()
            .filter(|s| s.between_requests())
            .map(|s| s.tx_status);
        let local = match status {
            Some(b'I') => Some(b'I'),
            Some(b'T')
                if matches!(
                    analysis.effect,
                    crate::pg::sql::SessionEffect::Deallocate(_)
                ) =>
            {
                Some(b'T')
            }
            _ => None,
        };
        if let (true, Some(status)) = (rename, local) {
            if self.answer_locally(&analysis.effect) {
                backend::ready_for_query(&mut self.cwbuf, status);
                self.tally.queries += 1;
                return Ok(());
            }
        }
        let sent = self.noting().then(|| {
            // the raw text is kept for insight's slow samples only
            // (a text too long to be kept as a sample is not copied at all)
            let sample = self.insight_on && frame.len() <= MAX_SAMPLE_TEXT + 6;
            let raw = match sample.then(|| frame::query(frame)) {
                Some(Ok(q)) => self.inflight.query_text(&q),
                _ => Text::None,
            };
            (StatementRef::of(&analysis, None), raw)
        });
        self.tally.queries += 1;
        if self.listen.is_some() {
            self.unlisten_within(frame);
        }
        let fate = self.statement_sent(&analysis.effect, || frame::query(frame).ok());
        let refusal = match fate {
            Fate::Refuse(kind) => Some(state::refused_query(kind)),
            _ if rename && analysis.reads_prepared_view => self.with_prepared_view(frame),
            _ => None,
        };
        let mut seq = None;
        self.with_server(|server| {
            if let Some(reason) = fate.dirty() {
                server.dirty = Some(reason);
            }
            server.wbuf.put_slice(refusal.as_deref().unwrap_or(frame));
            server.unnamed_owner = None;
            server.replies.own_unnamed.query_sent();
            seq = state::push_statement(server, CLIENT_QUERY);
        });
        self.pending_settings.query_sent(seq);
        if let Some((stmt, text)) = sent {
            self.sent(stmt, text, false);
        }
        Ok(())
    }

    /// What goes to the server in place of the client's Parse, if anything: a refusal of a
    /// statement that would leave session state behind, or, in transaction mode, an unnamed
    /// statement reading `pg_prepared_statements` made to show the client's names (a named
    /// one is rewritten each time it is bound: see `reach`).
    fn parse_replacement(&self, frame: &[u8], part: &Part) -> Option<BytesMut> {
        let analysis = part.analysis.as_ref()?;
        if let Some(refusal) = self.parse_refusal(frame, &analysis.effect) {
            return Some(refusal);
        }
        let view = self.mode == PoolMode::Transaction
            && analysis.reads_prepared_view
            && frame::parse(frame).is_ok_and(|p| p.name.is_empty());
        view.then(|| self.with_prepared_view(frame)).flatten()
    }

    /// A Parse of a name whose earlier Parse (pipelined) the server has not answered yet
    /// waits for that answer: directly the name then exists (42P05) or not (a failed Parse
    /// leaves none), and Pake can refuse or forward it only once it knows which. A named
    /// Parse also waits while the server's copy of its statement is in doubt
    /// ([`Server::copy_in_doubt`]).
    fn parse_waits(&mut self, frame: &[u8]) -> Result<bool, Error> {
        let p = frame::parse(frame)?;
        if self.server.is_none() {
            return Ok(false);
        }
        let ask = self.statements.awaits_answer(p.name);
        if let Some(ask) = ask.or_else(|| self.statements.awaits_close(p.name)) {
            return Ok(self.wait_for_answers(ask));
        }
        // a named Parse is parsed afresh on the server, its copy there closed first (with
        // nothing owed, no copy is in doubt: the registry is not asked)
        let owed = self
            .server
            .as_deref()
            .is_some_and(|s| !s.replies.is_empty());
        let stmt = match owed && !p.name.is_empty() {
            true => self.proxy.statements.get(p.definition),
            false => None,
        };
        Ok(stmt.is_some_and(|stmt| self.waits_for_copy(stmt.id, stmt.reads_view)))
    }

    /// A message needing the server's copy of statement `id` waits (`true`) while that copy
    /// comes from a Parse in an earlier batch, still unanswered
    /// ([`Server::copy_in_doubt`]): an error before it there makes the server skip it, and
    /// the copy is not there after all. (That batch's Sync was sent: its answers come
    /// without a Flush.)
    fn waits_for_copy(&mut self, id: StatementId, reads_view: bool) -> bool {
        let Some(server) = self.server.as_deref_mut() else {
            return false;
        };
        if reads_view || server.replies.is_skipping() {
            return false; // parsed afresh each time; a server skipping fails it anyway
        }
        server.copy_in_doubt(id)
    }

    /// A message waits in the client's buffer for the server's answers to earlier ones
    /// (`true`); `ask`: ask the server to flush them.
    fn wait_for_answers(&mut self, ask: bool) -> bool {
        let Some(server) = self.server.as_deref_mut() else {
            return false;
        };
        if ask {
            let at = wire::begin_frame(&mut server.wbuf, fe::FLUSH);
            wire::finish_frame(&mut server.wbuf, at);
        }
        true
    }

    fn forward_parse(&mut self, frame: &[u8], part: Part) -> Result<(), Error> {
        let replaced = self.parse_replacement(frame, &part);
        let frame = replaced.as_deref().unwrap_or(frame);
        let p = frame::parse(frame)?;
        let Some(analysis) = part.analysis else {
            return Ok(());
        };
        let rename = self.mode == PoolMode::Transaction;
        if rename && self.statements.exists(p.name) {
            self.refuse_parse(p.name, p.definition);
            return Ok(());
        }
        if self.noting() {
            self.note_parse(p.name, &analysis, &p.query);
        }
        if rename {
            self.note_ddl(p.query.as_bytes());
        }
        if !rename {
            self.note_terminate_statement(p.name, p.definition);
        }
        let named = rename && !p.name.is_empty();
        let interned = named.then(|| self.proxy.statements.intern(p.definition));
        // after an error the server discards the Parse until Sync: nothing is created
        let skipping = self
            .server
            .as_ref()
            .is_some_and(|s| s.replies.is_skipping());
        let mut stamp = None;
        if let Some(stmt) = &interned {
            if !skipping {
                stamp = Some(self.statements.insert_pending(p.name, stmt.clone()));
            }
            self.remember_interned(stmt.id, &analysis);
        }
        let cap = self.pool.settings().defaults.max_prepared_statements;
        // an unnamed statement runs now; a named one when it is bound
        let dirty = match &interned {
            None if rename && self.defer_unnamed_setting(&analysis.effect, &p.query) => self
                .pin_effect(&analysis.effect, || Some(p.query.clone()), false)
                .dirty(),
            None => self
                .statement_sent(&analysis.effect, || Some(p.query.clone()))
                .dirty(),
            Some(stmt) => {
                let pin = self.pin_effect(&analysis.effect, || Some(p.query.clone()), false);
                self.note_named_effect(stmt.id, &analysis.effect)
                    .or(pin.dirty())
            }
        };
        if p.name.is_empty() && !skipping {
            self.pending_settings.unnamed_parsed();
        }
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(());
        };
        if let Some(reason) = dirty {
            server.dirty = Some(reason);
        }
        server.in_extended = true;
        match interned {
            Some(_) if skipping => server.wbuf.put_slice(frame),
            Some(stmt) => parse_afresh(server, &stmt, cap, stamp),
            None if rename && p.name.is_empty() => {
                super::unnamed::parse(server, self.id, &mut self.unnamed_parse, frame);
            }
            None => {
                server.wbuf.put_slice(frame);
                server.replies.push(Expect::Parse {
                    swallow: false,
                    registers: None,
                    client: None,
                });
                if p.name.is_empty() {
                    server.unnamed_owner = Some(self.id);
                }
            }
        }
        Ok(())
    }

    /// Transaction mode, a Parse of a statement name the client has: directly it fails with
    /// 42P05 and the server skips to Sync; the client's names are Pake's, so Pake sends a
    /// message that fails there in its place and answers with PostgreSQL's error. (A Parse
    /// of a name whose Parse is not answered yet waits for it: `parse_waits`.)
    ///
    /// PostgreSQL parses and analyses the text before it looks at the name: a syntax error,
    /// a Parse in an aborted transaction (25P02) or a missing relation is reported instead
    /// of 42P05. So the text is first parsed on the server under a name of Pake's own,
    /// closed at once; if that fails, the client gets the server's error.
    fn refuse_parse(&mut self, name: &[u8], definition: &[u8]) {
        let Some(server) = self.server.as_deref_mut() else {
            return;
        };
        server.in_extended = true;
        if server.replies.is_skipping() {
            return; // the server would discard it
        }
        let at = wire::begin_frame(&mut server.wbuf, fe::PARSE);
        wire::put_cstr(&mut server.wbuf, PROBE.as_bytes());
        server.wbuf.put_slice(definition);
        wire::finish_frame(&mut server.wbuf, at);
        server.replies.push(Expect::Parse {
            swallow: true,
            registers: None,
            client: None,
        });
        close_statement(server, PROBE, None);
        let name = String::from_utf8_lossy(name);
        let message = format!("prepared statement \"{name}\" already exists");
        super::refusal::refuse(server, "42P05", &message);
    }

    /// A Query, or an unnamed Parse, whose text reads `pg_prepared_statements`: the frame
    /// with the view shadowed by this client's statements ([`crate::pg::prepared_view`]),
    /// `None` to send it as it is.
    fn with_prepared_view(&self, frame: &[u8]) -> Option<BytesMut> {
        use crate::pg::prepared_view::{rewrite, Refused};
        let tag = *frame.first()?;
        let body = wire::body(frame);
        let (text, rest) = match tag {
            fe::PARSE => wire::cstr(wire::cstr(body)?.1)?,
            _ => wire::cstr(body)?,
        };
        // (a text not in UTF-8 is sent as it is: the rewrite works on characters)
        let text = std::str::from_utf8(text).ok()?;
        let version = self
            .server
            .as_deref()?
            .params
            .reported_value("server_version")?;
        let sql = match rewrite(text, &self.statements, version) {
            Ok(sql) => sql?,
            Err(Refused::TooLarge(len)) => {
                let reason = format!(
                    "pg_prepared_statements through Pake: this client's {} prepared statements \
                     make a {len}-byte statement",
                    self.statements.len()
                );
                return Some(state::over_limit(tag, &reason));
            }
        };
        let mut buf = BytesMut::with_capacity(sql.len() + rest.len() + 16);
        let at = wire::begin_frame(&mut buf, tag);
        if tag == fe::PARSE {
            buf.put_u8(0); // unnamed
        }
        wire::put_cstr(&mut buf, sql.as_bytes());
        buf.put_slice(rest);
        wire::finish_frame(&mut buf, at);
        Some(buf)
    }

    /// How a Bind or Describe naming `client` (a client statement and what the client was
    /// told of it: [`Session::client_statement`]) reaches it on the server. One that reads
    /// `pg_prepared_statements` runs as the unnamed statement, parsed with the view as it is
    /// now (its text was fixed when prepared).
    fn reach(&self, client: Option<(Arc<Statement>, Option<u64>)>) -> Reach {
        let Some((stmt, told)) = client else {
            return Reach::AsSent;
        };
        if !stmt.reads_view {
            return Reach::Server(stmt, told);
        }
        let mut parse = BytesMut::with_capacity(stmt.definition().len() + 6);
        let at = wire::begin_frame(&mut parse, fe::PARSE);
        parse.put_u8(0);
        parse.put_slice(stmt.definition());
        wire::finish_frame(&mut parse, at);
        match self.with_prepared_view(&parse) {
            Some(fresh) => Reach::Fresh(fresh),
            None => Reach::Server(stmt, None),
        }
    }

    fn forward_bind(&mut self, frame: &[u8], part: Part) -> Result<(), Error> {
        let b = frame::bind(frame)?;
        if self.noting() {
            self.note_bind(b.statement, part.analysis);
        }
        let client = self.client_statement(b.statement);
        let dirty = match &client {
            Some((s, _)) => self.track_bound(s, b.rest),
            None if b.statement.is_empty() => self.track_unnamed_bound(b.rest),
            None => None,
        };
        self.pending_settings
            .bound(b.portal, b.statement.is_empty());
        let reach = self.reach(client);
        let cap = self.pool.settings().defaults.max_prepared_statements;
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(());
        };
        if let Some(reason) = dirty {
            server.dirty = Some(reason);
        }
        server.in_extended = true;
        if b.statement.is_empty() && self.mode == PoolMode::Transaction {
            super::unnamed::own_unnamed(server, self.id, &self.unnamed_parse);
        }
        if let Reach::Server(stmt, _) = &reach {
            if super::refusal::bind_counts_refused(server, stmt, b.statement, b.rest) {
                return Ok(());
            }
        }
        let sent = send_for_statement(server, reach, cap, frame, |wbuf, name| {
            let at = wire::begin_frame(wbuf, fe::BIND);
            wire::put_cstr(wbuf, b.portal);
            wire::put_cstr(wbuf, name);
            wbuf.put_slice(b.rest);
            wire::finish_frame(wbuf, at);
        });
        server.replies.push(match sent {
            Sent::Stale(stmt) => Expect::Stale { stmt },
            Sent::To(stmt) => Expect::Bind { stmt },
        });
        Ok(())
    }

    /// Transaction mode: the interned statement a client's statement name stands for, and
    /// what the client was told of it if it described it. A name keeps its statement after
    /// the registry forgot it (DDL, a stale plan): the client described it, so it must see
    /// the server's 0A000 as it would directly, and re-prepare.
    fn client_statement(&self, name: &[u8]) -> Option<(Arc<Statement>, Option<u64>)> {
        if self.mode != PoolMode::Transaction || name.is_empty() {
            return None;
        }
        let (stmt, told) = self.statements.told(name)?;
        Some((stmt.clone(), told))
    }

    fn forward_describe(&mut self, frame: &[u8]) -> Result<(), Error> {
        let subject = frame::subject(frame)?;
        let reach = match subject.is_named_statement() {
            true => self.reach(self.client_statement(subject.name)),
            false => Reach::AsSent,
        };
        let cap = self.pool.settings().defaults.max_prepared_statements;
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(());
        };
        server.in_extended = true;
        let unnamed = subject.kind == b'S' && subject.name.is_empty();
        if unnamed && self.mode == PoolMode::Transaction {
            super::unnamed::own_unnamed(server, self.id, &self.unnamed_parse);
        }
        let sent = send_for_statement(server, reach, cap, frame, describe_statement);
        let injected = false;
        server.replies.push(match (sent, subject.kind) {
            (Sent::Stale(stmt), _) => Expect::Stale { stmt },
            (Sent::To(stmt), b'S') => Expect::DescribeStatement { stmt, injected },
            _ => Expect::RowDescription {
                stmt: None,
                injected,
            },
        });
        Ok(())
    }

    fn forward_close(&mut self, frame: &[u8]) -> Result<(), Error> {
        let subject = frame::subject(frame)?;
        if self.noting() && subject.kind == b'S' {
            self.note_close(subject.name);
        }
        if subject.kind == b'S' {
            self.forget_terminate_statement(subject.name);
        }
        let local = self.mode == PoolMode::Transaction && subject.is_named_statement();
        // after an error the server skips to Sync: the statement stays, as directly
        let skipping = self
            .server
            .as_ref()
            .is_some_and(|s| s.replies.is_skipping());
        // the client's name goes; the server keeps the statement for other clients
        let stamp = (local && !skipping).then(|| self.statements.close_pending(subject.name));
        self.with_server(|server| {
            server.in_extended = true;
            match stamp {
                Some(stamp) => server
                    .replies
                    .push(Expect::Synth(Synth::CloseStatement(stamp))),
                None if local => {} // the server skips it: owed nothing
                None => {
                    server.wbuf.put_slice(frame);
                    server.replies.push(Expect::Close {
                        swallow: false,
                        stmt: None,
                    });
                }
            }
        });
        Ok(())
    }

    fn forward_execute(&mut self, frame: &[u8]) {
        let sent = match self.noting() {
            true => self.portal_statement(),
            false => None,
        };
        self.tally.queries += 1;
        let mut seq = None;
        self.with_server(|server| {
            server.in_extended = true;
            server.wbuf.put_slice(frame);
            seq = state::push_statement(server, Expect::Execute);
        });
        let portal = match self.pending_settings.has_portals() {
            true => wire::cstr(wire::body(frame)).map_or(&b""[..], |(p, _)| p),
            false => b"",
        };
        self.pending_settings.execute_sent(portal, seq);
        if let Some(stmt) = sent {
            self.sent(stmt, Text::None, true);
        }
    }

    fn forward_sync(&mut self, frame: &[u8]) {
        self.statements.sync_sent();
        self.with_server(|server| {
            server.in_extended = false;
            server.wbuf.put_slice(frame);
            server.replies.on_sync_sent();
        });
    }

    fn forward_function_call(&mut self, frame: &[u8]) {
        self.tally.queries += 1;
        self.with_server(|server| {
            server.wbuf.put_slice(frame);
            server.replies.push(Expect::Ready {
                swallow: false,
                stmt: false,
            });
        });
    }
}

/// How a Bind or Describe reaches the statement it names ([`Session::reach`]).
enum Reach {
    /// As the client wrote it (the unnamed statement, a portal, session mode).
    AsSent,
    /// The client's statement under its process-wide name on the server, and what the
    /// client was told it takes and returns, if it described it.
    Server(Arc<Statement>, Option<u64>),
    /// This unnamed Parse first (a statement reading `pg_prepared_statements`).
    Fresh(BytesMut),
}

/// What a Bind or Describe was sent to.
enum Sent {
    /// This process-wide statement, or (`None`) what the client named.
    To(Option<StatementId>),
    /// Nothing: the server's copy of this statement takes or returns other than the client
    /// was told, so the message names [`STALE`] and fails there.
    Stale(StatementId),
}

/// What a client's Query is owed.
const CLIENT_QUERY: Expect = Expect::Ready {
    swallow: false,
    stmt: true,
};

/// A statement name no server has (no client's name reaches a server unrenamed in
/// transaction mode): a Bind or Describe of it fails, and with it the rest of the batch.
pub(super) const STALE: &[u8] = b"pake_stale";
/// The name a redefining Parse's text is tried under ([`Session::refuse_parse`]).
const PROBE: &str = "pake_redefined";

/// Send a Bind or Describe as `reach` says: as the client wrote it, or rewritten by
/// `rewrite` to the server-side name — after making sure the server has the statement, or
/// after the Parse standing for it. A copy there known to take or return other than the
/// client was told is not used: PostgreSQL refuses its own stale plan (0A000), so does Pake.
fn send_for_statement(
    server: &mut Server,
    reach: Reach,
    cap: usize,
    frame: &[u8],
    rewrite: impl FnOnce(&mut BytesMut, &[u8]),
) -> Sent {
    match reach {
        Reach::AsSent => {
            server.wbuf.put_slice(frame);
            Sent::To(None)
        }
        Reach::Server(stmt, told) => {
            ensure_prepared(server, &stmt, cap);
            let copy = server.statements.description(stmt.id);
            if told.is_some_and(|t| copy.is_some_and(|c| c != t)) {
                rewrite(&mut server.wbuf, STALE);
                return Sent::Stale(stmt.id);
            }
            rewrite(&mut server.wbuf, stmt.name.as_bytes());
            Sent::To(Some(stmt.id))
        }
        Reach::Fresh(parse) => {
            // its ParseComplete swallowed; the server's unnamed statement is no longer the
            // client's own
            server.wbuf.put_slice(&parse);
            server.replies.push(Expect::Parse {
                swallow: true,
                registers: None,
                client: None,
            });
            server.unnamed_owner = None;
            rewrite(&mut server.wbuf, b"");
            Sent::To(None)
        }
    }
}

/// Make sure `server` has `stmt` before a Bind/Describe uses it: inject its Parse (reply
/// swallowed) if not.
fn ensure_prepared(server: &mut Server, stmt: &Arc<Statement>, cap: usize) {
    if server.replies.is_skipping() || server.statements.contains(stmt.id) {
        // (a server skipping to Sync would discard the Parse: the Bind fails there anyway)
        return;
    }
    parse_on(server, stmt, cap, None);
}

/// Parse `stmt` under its process-wide name on `server` (which lacks it), making room under
/// the cap first: for the client's Parse stamped `client`, or (`None`) because Pake needs
/// it there, its ParseComplete swallowed.
fn parse_on(server: &mut Server, stmt: &Arc<Statement>, cap: usize, client: Option<u64>) {
    evict_statement(server, cap);
    server.wbuf.put_slice(&stmt.parse);
    server.statements.insert(stmt, server.replies.batch());
    server.replies.push(Expect::Parse {
        swallow: client.is_none(),
        registers: Some(stmt.id),
        client,
    });
}

/// The client's own Parse (stamped `stamp`) of `stmt`, parsed afresh on `server` as it is
/// directly: a copy there may predate DDL Pake did not see, and PostgreSQL would refuse its
/// plan (0A000) at the client's first Describe or Bind, which a statement just prepared
/// never gets directly. The old copy is closed first, in the same write.
fn parse_afresh(server: &mut Server, stmt: &Arc<Statement>, cap: usize, stamp: Option<u64>) {
    if server.statements.contains(stmt.id) {
        close_statement(server, &stmt.name, Some(stmt.id));
        server.statements.remove(stmt.id);
    }
    parse_on(server, stmt, cap, stamp);
}

/// A Describe of the statement `name`.
pub(super) fn describe_statement(wbuf: &mut BytesMut, name: &[u8]) {
    let at = wire::begin_frame(wbuf, fe::DESCRIBE);
    wbuf.put_u8(b'S');
    wire::put_cstr(wbuf, name);
    wire::finish_frame(wbuf, at);
}

/// Close the least recently used statement on `server` when it is at its cap.
fn evict_statement(server: &mut Server, cap: usize) {
    if server.replies.is_skipping() {
        return; // the Close would be discarded
    }
    let batch = server.replies.batch();
    if let Some(old) = server.statements.evict_over(cap.saturating_sub(1), batch) {
        // skipped after an error before it, the server keeps the copy (`close_skipped`)
        close_statement(server, &old.name, Some(old.id));
    }
}

/// Close the process-wide statement `name` on `server` (its CloseComplete swallowed);
/// `copy`: its id, when it is Pake's copy of a statement (evicted, or parsed afresh next).
fn close_statement(server: &mut Server, name: &str, copy: Option<StatementId>) {
    let at = wire::begin_frame(&mut server.wbuf, fe::CLOSE);
    server.wbuf.put_u8(b'S');
    wire::put_cstr(&mut server.wbuf, name.as_bytes());
    wire::finish_frame(&mut server.wbuf, at);
    server.replies.push(Expect::Close {
        swallow: true,
        stmt: copy,
    });
}
