//! The queue of replies a server owes, sans-IO.
//!
//! Every request message the session forwards pushes what the server will answer (Parse →
//! ParseComplete, Execute → rows then CommandComplete, Sync → ReadyForQuery…). Each server
//! message is matched against the head of the queue, so the session always knows whether a
//! server is *in sync*: poolable only when the queue is empty and the last ReadyForQuery said
//! idle. A message that does not fit the queue means the state is unknown, and the server is
//! closed rather than pooled.
//!
//! Two kinds of entries do not come from the client's own messages:
//! * `swallow` entries: replies to messages Pake injected (a re-Parse of a prepared statement
//!   on a server that lacks it, a `SET` that syncs session parameters). They are dropped
//!   instead of forwarded.
//! * [`Synth`] entries: replies Pake produces itself (CloseComplete for a client-side Close),
//!   emitted in order once everything before them has been forwarded.

use crate::pg::prepared::StatementId;
use crate::pg::wire::{backend, be, Tag};
use bytes::BytesMut;
use std::collections::VecDeque;
pub use unnamed::OwnUnnamed;

mod unnamed;

/// What one request message will be answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Everything up to ReadyForQuery: Query (`stmt`: a client statement whose completion
    /// is reported), FunctionCall, Sync, and queries Pake injects (`swallow`).
    Ready { swallow: bool, stmt: bool },
    /// ParseComplete; `registers` names the statement this Parse creates on the server,
    /// `client` the client's named Parse it stands for (transaction mode: the stamp from
    /// [`crate::pg::prepared::ClientStatements::insert_pending`]).
    Parse {
        swallow: bool,
        registers: Option<StatementId>,
        client: Option<u64>,
    },
    /// BindComplete; `stmt`: the interned statement it binds (transaction mode).
    Bind { stmt: Option<StatementId> },
    /// CloseComplete; `stmt`: Pake closes its own statement there, to parse it afresh or to
    /// evict it.
    Close {
        swallow: bool,
        stmt: Option<StatementId>,
    },
    /// Describe of a statement: ParameterDescription, then RowDescription or NoData.
    /// `injected`: Pake asked, to learn what the server's copy takes and returns
    /// (swallowed).
    DescribeStatement {
        stmt: Option<StatementId>,
        injected: bool,
    },
    /// Describe of a portal (or the second half of a statement Describe).
    /// `stmt`: the interned statement whose Describe this completes.
    RowDescription {
        stmt: Option<StatementId>,
        injected: bool,
    },
    /// A Bind or Describe Pake made fail on the server (it names no statement there) because
    /// the server's copy of `stmt` takes or returns other than the client was told: the server's
    /// error is replaced by the 0A000 PostgreSQL gives for its own stale plan.
    Stale { stmt: StatementId },
    /// A message Pake made fail on the server (it names no statement there) because the
    /// client's own fails directly without reaching the server's statements (a Parse of a
    /// name the client has: 42P05): the server's error is replaced by `body`.
    Refused { body: Box<[u8]> },
    /// Execute: DataRows (or a COPY), then CommandComplete / EmptyQuery / PortalSuspended.
    Execute,
    /// A reply Pake writes itself when it reaches the head of the queue.
    Synth(Synth),
}

/// Replies Pake produces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synth {
    /// CloseComplete for a client's Close of its named statement, stamped by
    /// [`crate::pg::prepared::ClientStatements::close_pending`]: skipped after an error in
    /// its batch, the statement was not closed ([`Effects::not_closed`]).
    CloseStatement(u64),
}

/// What to do with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Forward,
    Swallow,
}

/// Side effects of one server message that the session acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// ReadyForQuery arrived with this status, and whether it ended an injected query.
    pub ready: Option<(u8, bool)>,
    /// Statements the server did not create after all (their Parse failed or was skipped).
    pub not_created: Vec<StatementId>,
    /// A statement the server just created (ParseComplete for a registering Parse).
    pub created: Option<StatementId>,
    /// The client's named Parse with this stamp was answered ParseComplete.
    pub parsed: Option<u64>,
    /// The client's named Parses stamped from the first to the last failed or were skipped.
    pub not_parsed: Option<(u64, u64)>,
    /// The client's Closes of named statements with these stamps were skipped after an
    /// error: as directly, the statements still exist.
    pub not_closed: Vec<u64>,
    /// Pake's Close of its own statement there was answered CloseComplete.
    pub closed: Option<StatementId>,
    /// Pake's Closes of its own statements there were skipped after an error: the server
    /// keeps them.
    pub closes_skipped: Vec<StatementId>,
    /// The server entered COPY IN (client data must flow) or left it.
    pub copy_in: Option<bool>,
    /// A client statement (a Query, or an Execute) completed.
    pub done: Option<Done>,
    /// Executes the server skipped after an error in their batch (they never ran).
    pub skipped: u32,
    /// A statement Describe answered: the statement, what it takes and returns
    /// ([`crate::pg::prepared::statement_sig`]), and whether Pake asked (not the client).
    pub described: Option<(StatementId, u64, bool)>,
    /// A message Pake made fail ([`Expect::Stale`], [`Expect::Refused`]) failed: the client
    /// gets this error body in the server's.
    pub refused: Option<std::borrow::Cow<'static, [u8]>>,
    /// The server reported this statement's cached plan invalid (0A000 `cached plan must
    /// not change result type`): it must be prepared afresh.
    pub invalidated: Option<StatementId>,
    /// A query Pake injected (the `SET` that brings the server to the client's settings)
    /// failed with this ErrorResponse: the server does not have what the client expects.
    pub injected_failed: Option<Vec<u8>>,
    /// The server announced its end (a FATAL error, or an error while nothing was owed,
    /// such as `idle_session_timeout` or `pg_terminate_backend`): forward it, then close.
    pub ended: bool,
    /// A Parse Pake sent that may have set the unnamed statement (the client's parsed
    /// again) failed or was skipped after an error: whose the server's unnamed statement
    /// is, is not known.
    pub unnamed_lost: bool,
    /// A client's `DISCARD ALL` or `DEALLOCATE ALL` completed (in any protocol, named or
    /// not; prepared statements are not transactional): the server has no prepared
    /// statement left but these, whose Parse was sent after it and is still owed.
    pub statements_dropped: Option<Vec<StatementId>>,
}

/// How a client statement ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Done {
    /// Rows from CommandComplete (summed over a multi-statement Query).
    pub rows: u64,
    /// The SQLSTATE of its error, if it failed.
    pub error: Option<[u8; 5]>,
}

/// Rows in a CommandComplete tag (`SELECT 5`, `INSERT 0 3`, `UPDATE 7`…).
fn tag_rows(body: &[u8]) -> u64 {
    let tag = body.strip_suffix(b"\0").unwrap_or(body);
    tag.rsplit(|&b| b == b' ')
        .next()
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn sqlstate(body: &[u8]) -> Option<[u8; 5]> {
    crate::pg::wire::error_code(body).and_then(|c| c.try_into().ok())
}

/// A server message that does not fit the queue: the connection's state is unknown.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("server sent {tag} while Pake expected {expected}")]
pub struct Desync {
    pub tag: Tag,
    pub expected: String,
}

/// The queue of replies one server owes.
#[derive(Debug, Default)]
pub struct Replies {
    q: VecDeque<Expect>,
    /// What the client Query at the head has returned so far.
    running: Done,
    /// The server is in COPY IN (from CopyInResponse until CommandComplete/Error).
    copy_in: bool,
    /// The client's COPY data is still flowing (from CopyInResponse until the client's
    /// CopyDone/CopyFail or an error): Syncs sent now are ignored by the server.
    client_copy_open: bool,
    /// CopyDone/CopyFail sent before the server's CopyInResponse arrived (asyncpg streams a
    /// simple-Query COPY without waiting for it): that COPY's data is already complete.
    early_copy_ends: u32,
    /// After an error in an extended batch whose Sync has not been sent yet, the server
    /// discards every message until that Sync: those are owed nothing.
    skipping: bool,
    /// The parameter types of the statement Describe at the head, until its second half.
    described_params: u64,
    /// ReadyForQuery answers queued so far ([`Replies::batch`]).
    readies: u64,
    /// The batch of the last Parse Pake queued that may set the unnamed statement, while it
    /// may be in doubt ([`Replies::unnamed_in_doubt`]).
    unnamed_parsed_in: Option<u64>,
    /// The client's own unnamed Parses owed ([`Replies::push_own_unnamed`]).
    pub own_unnamed: OwnUnnamed,
    /// Client statements (Queries and Executes) queued so far ([`Replies::statements`]).
    statements: u64,
    /// Client statements answered so far: completed, failed or skipped.
    answered: u64,
}

impl Replies {
    pub fn push(&mut self, e: Expect) {
        if self.skipping {
            // the server discards it unanswered (libpq pipeline mode sends on after an
            // error); the session registers no statement meanwhile (`is_skipping`)
            return;
        }
        self.readies += u64::from(matches!(e, Expect::Ready { .. }));
        self.statements += u64::from(matches!(
            e,
            Expect::Execute | Expect::Ready { stmt: true, .. }
        ));
        if reparses_unnamed(&e) {
            self.unnamed_parsed_in = Some(self.readies);
        }
        self.q.push_back(e);
    }

    /// Transaction mode: the client's own unnamed Parse `frame` is sent; `parse`, the
    /// client's unnamed Parse, becomes it until the server answers (skipped after an error,
    /// it is the one before again: [`OwnUnnamed::restored`]). Nothing, and `false`, while
    /// the server skips to Sync: the client's unnamed statement stays, as directly.
    pub fn push_own_unnamed(&mut self, parse: &mut BytesMut, frame: &[u8]) -> bool {
        if self.skipping {
            return false;
        }
        self.push(Expect::Parse {
            swallow: false,
            registers: None,
            client: None,
        });
        self.own_unnamed.sent(self.readies, parse, frame);
        true
    }

    /// The client's own unnamed Parse is owed in a batch before the one being sent: a Bind
    /// or Describe of the unnamed statement waits for it (skipped, the one before it stays).
    pub fn own_unnamed_in_doubt(&self) -> bool {
        self.own_unnamed
            .last_batch()
            .is_some_and(|b| b != self.readies)
    }

    /// The batch being sent, by number: the requests answered by a ReadyForQuery (Syncs,
    /// Queries…) queued before it. An error skips messages up to the end of its own batch
    /// only.
    pub fn batch(&self) -> u64 {
        self.readies
    }

    /// A Parse creating statement `id`, or a Close of Pake's copy of it, is owed in a batch
    /// before the one being sent: an error earlier in that batch may yet make the server
    /// skip it.
    pub fn copy_owed_in_earlier_batch(&self, id: StatementId) -> bool {
        self.owed_in_earlier_batch(|e| match e {
            Expect::Parse { registers, .. } => *registers == Some(id),
            Expect::Close { stmt, .. } => *stmt == Some(id),
            _ => false,
        })
    }

    /// A Parse Pake sent that may set the unnamed statement (the client's parsed again
    /// before its Bind) is owed in a batch before the one being sent: an error earlier in
    /// that batch may yet make the server skip it, and the server's unnamed statement is
    /// then another (see [`Effects::unnamed_lost`]).
    pub fn unnamed_in_doubt(&mut self) -> bool {
        if self.unnamed_parsed_in.is_none_or(|b| b == self.readies) {
            return false;
        }
        let owed = self.owed_in_earlier_batch(reparses_unnamed);
        if !owed {
            self.unnamed_parsed_in = None;
        }
        owed
    }

    /// A message answered by `is` is owed before a ReadyForQuery.
    fn owed_in_earlier_batch(&self, is: impl Fn(&Expect) -> bool) -> bool {
        let mut seen = false;
        for e in &self.q {
            match e {
                Expect::Ready { .. } if seen => return true,
                e if is(e) => seen = true,
                _ => {}
            }
        }
        false
    }

    /// Client statements (Queries, Executes) queued so far; one the server skips is not.
    pub fn statements(&self) -> u64 {
        self.statements
    }

    /// Client statements answered so far, in order: [`Effects::done`] answers the next
    /// one, [`Effects::skipped`] as many more after it.
    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// The server is discarding messages until the client's next Sync.
    pub fn is_skipping(&self) -> bool {
        self.skipping
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// A Describe Pake injected is still owed (a message that needs its answer waits).
    pub fn describing(&self) -> bool {
        self.q.iter().any(|e| {
            matches!(
                e,
                Expect::DescribeStatement { injected: true, .. }
                    | Expect::RowDescription { injected: true, .. }
            )
        })
    }

    /// Is the next reply one Pake writes itself?
    pub fn has_synthetic_head(&self) -> bool {
        matches!(self.q.front(), Some(Expect::Synth(_)))
    }

    pub fn in_copy_in(&self) -> bool {
        self.copy_in
    }

    /// A Sync forwarded now: owed a ReadyForQuery unless the server is taking COPY data
    /// (PostgreSQL ignores Sync in copy-in mode).
    pub fn on_sync_sent(&mut self) {
        self.skipping = false;
        if !self.client_copy_open {
            self.readies += 1;
            self.q.push_back(Expect::Ready {
                swallow: false,
                stmt: false,
            });
        }
    }

    /// The client sent CopyDone or CopyFail.
    pub fn on_copy_end_sent(&mut self) {
        if self.client_copy_open {
            self.client_copy_open = false;
        } else {
            self.early_copy_ends += 1;
        }
    }

    /// Write every synthetic reply at the head of the queue into `out`; the stamp of the
    /// last of them (each a client's Close of a named statement, [`Synth::CloseStatement`]).
    pub fn drain_synthetic(&mut self, out: &mut BytesMut) -> Option<u64> {
        let mut closed = None;
        while let Some(Expect::Synth(Synth::CloseStatement(stamp))) = self.q.front() {
            closed = Some(*stamp);
            backend::close_complete(out);
            self.q.pop_front();
        }
        closed
    }

    fn desync(&self, tag: u8) -> Desync {
        Desync {
            tag: Tag(tag),
            expected: match self.q.front() {
                Some(e) => format!("{e:?}"),
                None => "nothing".into(),
            },
        }
    }

    /// Match one server message (tag and body) against the queue.
    pub fn on_message(
        &mut self,
        tag: u8,
        body: &[u8],
        fx: &mut Effects,
    ) -> Result<Disposition, Desync> {
        use Disposition::*;
        if let Some(d) = self.unowed(tag, body, fx) {
            return Ok(d);
        }
        let head = self.q.front().cloned().ok_or_else(|| self.desync(tag))?;
        match (tag, head) {
            (be::READY_FOR_QUERY, Expect::Ready { swallow, stmt }) => {
                Ok(self.on_ready(body, swallow, stmt, fx))
            }
            (be::ERROR_RESPONSE, head) => Ok(self.on_error(body, head, fx)),
            (be::PARSE_COMPLETE, head @ Expect::Parse { .. }) => Ok(self.on_parsed(head, fx)),
            (be::BIND_COMPLETE, Expect::Bind { .. }) => {
                self.q.pop_front();
                Ok(Forward)
            }
            (be::CLOSE_COMPLETE, Expect::Close { swallow, stmt }) => {
                self.q.pop_front();
                fx.closed = stmt;
                Ok(pass(swallow))
            }
            (be::PARAMETER_DESCRIPTION, Expect::DescribeStatement { stmt, injected }) => {
                if stmt.is_some() {
                    self.described_params = crate::pg::prepared::params_sig(body);
                }
                // the server checks the plan between the two halves
                if let Some(front) = self.q.front_mut() {
                    *front = Expect::RowDescription { stmt, injected };
                }
                Ok(pass(injected))
            }
            (be::ROW_DESCRIPTION | be::NO_DATA, Expect::RowDescription { stmt, injected }) => {
                Ok(self.on_description(tag, body, stmt, injected, fx))
            }
            (
                be::COMMAND_COMPLETE | be::EMPTY_QUERY_RESPONSE | be::PORTAL_SUSPENDED,
                Expect::Execute,
            ) => Ok(self.on_execute_done(tag, body, fx)),
            (
                be::COPY_IN_RESPONSE,
                head @ (Expect::Execute | Expect::Ready { swallow: false, .. }),
            ) => Ok(self.on_copy_in(head == Expect::Execute, fx)),
            (
                be::DATA_ROW
                | be::COPY_OUT_RESPONSE
                | be::COPY_BOTH_RESPONSE
                | be::COPY_DATA
                | be::COPY_DONE,
                Expect::Execute,
            ) => Ok(Forward),
            (
                be::COMMAND_COMPLETE
                | be::EMPTY_QUERY_RESPONSE
                | be::ROW_DESCRIPTION
                | be::DATA_ROW
                | be::COPY_OUT_RESPONSE
                | be::COPY_BOTH_RESPONSE
                | be::COPY_DATA
                | be::COPY_DONE
                | be::FUNCTION_CALL_RESPONSE,
                Expect::Ready { swallow, stmt },
            ) => {
                if tag == be::COMMAND_COMPLETE {
                    self.on_query_command_done(body, stmt, fx);
                }
                Ok(pass(swallow))
            }
            _ => Err(self.desync(tag)),
        }
    }

    /// A message that answers nothing in the queue: an asynchronous one, or the server's
    /// own farewell (57P01, idle_session_timeout…), which the client gets as the server
    /// sent it, and after which the server is done.
    fn unowed(&self, tag: u8, body: &[u8], fx: &mut Effects) -> Option<Disposition> {
        if let Some(d) = self.asynchronous(tag) {
            return Some(d);
        }
        if tag == be::ERROR_RESPONSE && (self.q.is_empty() || is_fatal(body)) {
            fx.ended = true;
            return Some(Disposition::Forward);
        }
        None
    }

    /// Messages that may arrive at any time, whatever is owed: forwarded (a notice is
    /// dropped with the rest of an injected query's replies).
    fn asynchronous(&self, tag: u8) -> Option<Disposition> {
        match tag {
            be::PARAMETER_STATUS | be::NOTIFICATION_RESPONSE => Some(Disposition::Forward),
            be::NOTICE_RESPONSE => Some(pass(matches!(
                self.q.front(),
                Some(Expect::Ready { swallow: true, .. })
            ))),
            _ => None,
        }
    }

    /// An ErrorResponse: ending a simple Query, failing a message Pake made fail (the
    /// client gets 0A000 in its place: [`Expect::Stale`]), or inside an extended batch.
    fn on_error(&mut self, body: &[u8], head: Expect, fx: &mut Effects) -> Disposition {
        match head {
            Expect::Ready { swallow, stmt } => self.on_query_error(body, swallow, stmt, fx),
            Expect::Stale { stmt } => {
                fx.refused = Some(STALE_PLAN.into());
                fx.invalidated = Some(stmt);
                self.on_extended_error(STALE_PLAN, fx);
                Disposition::Swallow
            }
            Expect::Refused { body } => {
                self.on_extended_error(&body, fx);
                fx.refused = Some(body.into_vec().into());
                Disposition::Swallow
            }
            _ => self.on_extended_error(body, fx),
        }
    }

    /// ParseComplete: the statement it registers exists on the server, and the client's
    /// name it stands for, if any, names it.
    fn on_parsed(&mut self, head: Expect, fx: &mut Effects) -> Disposition {
        self.q.pop_front();
        if is_own_unnamed(&head) {
            self.own_unnamed.made();
        }
        let Expect::Parse {
            swallow,
            registers,
            client,
        } = head
        else {
            return Disposition::Forward;
        };
        fx.created = registers;
        fx.parsed = client;
        pass(swallow)
    }

    /// The RowDescription or NoData that ends a Describe: of a statement, with the
    /// ParameterDescription before it, it says what the server's copy takes and returns.
    fn on_description(
        &mut self,
        tag: u8,
        body: &[u8],
        stmt: Option<StatementId>,
        injected: bool,
        fx: &mut Effects,
    ) -> Disposition {
        self.q.pop_front();
        if let Some(id) = stmt {
            let params = std::mem::take(&mut self.described_params);
            let sig = crate::pg::prepared::statement_sig(params, tag, body);
            fx.described = Some((id, sig, injected));
        }
        pass(injected)
    }

    /// An error inside a simple Query: the ReadyForQuery that follows ends it.
    fn on_query_error(
        &mut self,
        body: &[u8],
        swallow: bool,
        stmt: bool,
        fx: &mut Effects,
    ) -> Disposition {
        if stmt && self.running.error.is_none() {
            self.running.error = sqlstate(body);
        }
        if swallow && fx.injected_failed.is_none() {
            fx.injected_failed = Some(body.to_vec());
        }
        self.client_copy_open = false;
        self.leave_copy_in(fx);
        pass(swallow)
    }

    /// One statement of a simple Query completed (its rows add up; a COPY ended).
    fn on_query_command_done(&mut self, body: &[u8], stmt: bool, fx: &mut Effects) {
        if stmt {
            self.running.rows += tag_rows(body);
            self.on_statements_dropped(body, fx);
        }
        self.leave_copy_in(fx);
    }

    /// A client statement's CommandComplete: after `DISCARD ALL` / `DEALLOCATE ALL` the
    /// server keeps only the statements whose Parse is still owed.
    fn on_statements_dropped(&self, body: &[u8], fx: &mut Effects) {
        let tag = body.strip_suffix(b"\0").unwrap_or(body);
        if tag != b"DISCARD ALL" && tag != b"DEALLOCATE ALL" {
            return;
        }
        let owed = self.q.iter().filter_map(|e| match e {
            Expect::Parse { registers, .. } => *registers,
            _ => None,
        });
        fx.statements_dropped = Some(owed.collect());
    }

    /// ReadyForQuery ends the Query (or Sync, or injected query) at the head.
    fn on_ready(
        &mut self,
        body: &[u8],
        swallow: bool,
        stmt: bool,
        fx: &mut Effects,
    ) -> Disposition {
        if stmt {
            fx.done = Some(std::mem::take(&mut self.running));
            self.answered += 1;
        }
        self.q.pop_front();
        self.copy_in = false;
        if self.q.is_empty() {
            self.early_copy_ends = 0; // a stray CopyDone outside any COPY
        }
        fx.ready = Some((body.first().copied().unwrap_or(b'I'), swallow));
        pass(swallow)
    }

    /// An error in an extended-protocol batch: the server skips everything up to the next
    /// Sync, so the replies owed up to it are dropped.
    fn on_extended_error(&mut self, body: &[u8], fx: &mut Effects) -> Disposition {
        self.client_copy_open = false;
        self.leave_copy_in(fx);
        // 0A000: a cached plan whose result type changed; XX000 (cache lookup failed): a
        // statement naming a type dropped since, or created in a transaction that rolled
        // back. Either way the statement must be prepared afresh.
        if matches!(sqlstate(body), Some(c) if c == *b"0A000" || c == *b"XX000") {
            if let Some(
                Expect::Bind { stmt }
                | Expect::DescribeStatement { stmt, .. }
                | Expect::RowDescription { stmt, .. },
            ) = self.q.front()
            {
                fx.invalidated = *stmt;
            }
        }
        let mut failed = false;
        // Pake's Closes of its statements skipped too: the server keeps those copies
        let mut kept = Vec::new();
        // the message that failed heads the queue, the others were skipped
        let mut head = true;
        while let Some(e) = self.q.front() {
            match e {
                Expect::Ready { .. } => break,
                Expect::Close { stmt: Some(id), .. } => kept.push(*id),
                e @ Expect::Close { stmt: None, .. } => fx.unnamed_lost |= reparses_unnamed(e),
                Expect::Parse {
                    registers, client, ..
                } => {
                    fx.unnamed_lost |= reparses_unnamed(e) || is_own_unnamed(e);
                    if is_own_unnamed(e) {
                        self.own_unnamed.not_made(head);
                    }
                    // a Parse afresh (Close, then Parse) skipped: the old copy is still there
                    if let Some(id) = registers.filter(|id| !kept.contains(id)) {
                        fx.not_created.push(id);
                    }
                    if let Some(stamp) = *client {
                        let first = fx.not_parsed.map_or(stamp, |(first, _)| first);
                        fx.not_parsed = Some((first, stamp));
                    }
                }
                // the first Execute is the statement that failed (itself, or the
                // Parse/Bind it needed); the ones after it never ran
                Expect::Execute if !failed => {
                    failed = true;
                    self.answered += 1;
                    fx.done = Some(Done {
                        rows: 0,
                        error: sqlstate(body),
                    });
                }
                Expect::Execute => {
                    self.answered += 1;
                    fx.skipped += 1;
                }
                Expect::Synth(Synth::CloseStatement(stamp)) => fx.not_closed.push(*stamp),
                _ => {}
            }
            head = false;
            self.q.pop_front();
        }
        fx.closes_skipped.extend(kept);
        // no Sync sent yet: the server discards what comes until it
        self.skipping = self.q.is_empty();
        Disposition::Forward
    }

    /// CommandComplete, EmptyQueryResponse or PortalSuspended ends an Execute.
    fn on_execute_done(&mut self, tag: u8, body: &[u8], fx: &mut Effects) -> Disposition {
        self.q.pop_front();
        self.answered += 1;
        if tag == be::COMMAND_COMPLETE {
            self.on_statements_dropped(body, fx);
        }
        fx.done = Some(Done {
            rows: if tag == be::COMMAND_COMPLETE {
                tag_rows(body)
            } else {
                0
            },
            error: None,
        });
        self.leave_copy_in(fx);
        Disposition::Forward
    }

    /// The server entered COPY IN.
    fn on_copy_in(&mut self, in_execute: bool, fx: &mut Effects) -> Disposition {
        self.copy_in = true;
        fx.copy_in = Some(true);
        if self.early_copy_ends > 0 {
            // the client's data and its end are already on their way
            self.early_copy_ends -= 1;
            return Disposition::Forward;
        }
        self.client_copy_open = true;
        if in_execute {
            // Syncs pipelined behind this Execute reach the server in copy-in mode, where
            // it ignores them: no ReadyForQuery will come for them.
            let sync = Expect::Ready {
                swallow: false,
                stmt: false,
            };
            let mut i = 1;
            while i < self.q.len() {
                if self.q[i] == sync {
                    self.q.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        Disposition::Forward
    }

    /// COPY IN ended (CommandComplete or an error).
    fn leave_copy_in(&mut self, fx: &mut Effects) {
        if self.copy_in {
            self.copy_in = false;
            fx.copy_in = Some(false);
        }
    }
}

/// The body of the error PostgreSQL raises for a cached plan whose result changed, which the
/// client gets when a [`Expect::Stale`] message fails. Its source fields are PostgreSQL's
/// own: drivers tell this error by them (asyncpg raises InvalidCachedStatementError, clears
/// its statement cache and retries only when the routine is `RevalidateCachedQuery`; without
/// it the client kept its stale statement for good).
pub const STALE_PLAN: &[u8] = b"SERROR\0VERROR\0C0A000\0\
    Mcached plan must not change result type\0\
    Dthe statement now takes or returns other types than when this client described it: \
    DDL changed it since (Pake prepared it again on another server connection)\0\
    Hprepare the statement again\0\
    Fplancache.c\0RRevalidateCachedQuery\0\0";

/// A FATAL or PANIC ErrorResponse: the server closes the connection after it.
fn is_fatal(body: &[u8]) -> bool {
    let severity = crate::pg::wire::error_field(body, b'V')
        .or_else(|| crate::pg::wire::error_field(body, b'S'));
    matches!(severity, Some(b"FATAL" | b"PANIC"))
}

/// A Parse or Close Pake sent of its own that may set the unnamed statement: the client's
/// parsed again before its Bind, or closed before the Bind of a client that has none (some
/// of these are others: a Parse or Close under a name of Pake's own, a statement reading
/// `pg_prepared_statements`; the unnamed statement is then taken for in doubt or lost
/// needlessly, and parsed again). The client's own unnamed Parse is not one: skipped, it
/// leaves the unnamed statement that was there ([`OwnUnnamed`]).
fn reparses_unnamed(e: &Expect) -> bool {
    matches!(
        e,
        Expect::Parse {
            swallow: true,
            registers: None,
            client: None,
        } | Expect::Close {
            swallow: true,
            stmt: None,
        }
    )
}

/// The client's own unnamed Parse, in transaction mode (where a named one always registers
/// a statement: [`Replies::push_own_unnamed`]).
fn is_own_unnamed(e: &Expect) -> bool {
    matches!(
        e,
        Expect::Parse {
            swallow: false,
            registers: None,
            client: None,
        }
    )
}

/// Forward a reply, or drop it when it answers a message Pake injected.
fn pass(swallow: bool) -> Disposition {
    if swallow {
        Disposition::Swallow
    } else {
        Disposition::Forward
    }
}

#[cfg(test)]
mod tests;
