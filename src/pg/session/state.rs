//! Session state a client leaves on its server, in transaction mode.
//!
//! Settings (`SET`, `RESET`, `set_config(…, false)`, `SET SESSION CHARACTERISTICS …`) follow
//! the client: they are held as pending while their transaction runs, recorded on the client
//! and on the server when it commits, and replayed on the next server by the parameter sync
//! of [`Session::attach`](super::attach). Anything else that outlives a transaction marks the
//! server dirty, and it is reset before another client gets it; state that cannot be carried
//! (temporary tables, advisory locks, `WITH HOLD` cursors, SQL `PREPARE`, `LISTEN`, see
//! [`crate::pg::sql::pins`]) is handled as the pool's `session_state` says: `pin` keeps the
//! client on its server until the state is gone, `error` refuses the statement (the server
//! raises 0A000 in its place, so a transaction around it fails as it would on an error),
//! `reset` resets the server at the end of the transaction.

use super::Session;
use crate::config::{PoolMode, SessionState};
use crate::pg::params::{reported_change, ClientParams, PendingSettings, ServerParams, Settled};
use crate::pg::prepared::{Statement, StatementId};
use crate::pg::server::replies::{Effects, Expect};
use crate::pg::server::Server;
use crate::pg::sql::pins::{self, Event};
use crate::pg::sql::settings::{setting_changes_bound, Change};
use crate::pg::sql::SessionEffect;
use crate::pg::wire::{self, fe};
use bytes::BytesMut;

/// Effects whose state is a setting, and so can follow the client.
const SETTING_REASONS: &[&str] = &["SET", "RESET", "set_config"];
/// Named prepared statements that change settings one session remembers (their settings are
/// noted when they are bound); past this, such a statement resets the server instead.
pub(super) const MAX_SETTING_STATEMENTS: usize = 64;

/// What sending a statement means for its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    Clean,
    /// Reset the server before another client gets it.
    Dirty(&'static str),
    /// `session_state = "error"`: send the refusal instead of the statement.
    Refuse(&'static str),
}

impl Fate {
    pub fn dirty(self) -> Option<&'static str> {
        match self {
            Fate::Dirty(r) => Some(r),
            _ => None,
        }
    }
}

impl Session {
    /// A Query or an unnamed Parse with `effect` is being sent: state that pins first
    /// ([`Session::pin_effect`]), then the settings it changes (held until its transaction
    /// commits). The text is read only when the effect or a pin calls for it.
    pub(super) fn statement_sent<'t>(
        &mut self,
        effect: &SessionEffect,
        text: impl Fn() -> Option<std::borrow::Cow<'t, str>>,
    ) -> Fate {
        let fate = self.pin_effect(effect, &text, true);
        if let Fate::Refuse(_) = fate {
            return fate;
        }
        match self.track_effect(effect, &text, &[]) {
            Some(reason) => Fate::Dirty(reason),
            None => fate,
        }
    }

    /// Pins and their ends for a statement with `effect` (transaction mode). `Dirty` for
    /// state that cannot follow the client (the server is reset when it is finally released).
    /// While pinned every Query is read, for the ends (`CLOSE`, `DISCARD TEMP`…); `ends` is
    /// false for a Parse, which runs later if at all: its ends are not followed.
    pub(super) fn pin_effect<'t>(
        &mut self,
        effect: &SessionEffect,
        text: impl Fn() -> Option<std::borrow::Cow<'t, str>>,
        ends: bool,
    ) -> Fate {
        let dirties = effect.dirties();
        let pinned = ends && self.pins.is_pinned();
        if self.mode != PoolMode::Transaction || !(dirties || pinned) {
            return Fate::Clean;
        }
        let mut events = text().map(|t| pins::events(&t)).unwrap_or_default();
        if !ends {
            events.retain(|e| matches!(e, Event::Pin(..)));
        }
        let pinning = events.iter().find_map(|e| match e {
            Event::Pin(kind, _) => Some(kind.name()),
            _ => None,
        });
        match (self.pool.settings().session_state, pinning) {
            (SessionState::Error, Some(kind)) => return Fate::Refuse(kind),
            (SessionState::Reset, Some(kind)) => return Fate::Dirty(kind),
            _ => self.pins.on_sent(events),
        }
        self.show_pins();
        pinning.map_or(Fate::Clean, Fate::Dirty)
    }

    /// Tell SHOW CLIENTS whether (and why) this client is pinned.
    pub(super) fn show_pins(&mut self) {
        let now = self.pins.reason().map(Box::from);
        if now != self.cancel.pinned() {
            self.cancel.set_pinned(now);
        }
    }

    pub(super) fn pinned(&self) -> bool {
        self.pins.is_pinned()
    }

    /// `session_state = "error"`: the Parse to send instead of `frame` when its statement
    /// would pin.
    pub(super) fn parse_refusal(&self, frame: &[u8], effect: &SessionEffect) -> Option<BytesMut> {
        let refuse = self.mode == PoolMode::Transaction
            && effect.dirties()
            && self.pool.settings().session_state == SessionState::Error;
        if !refuse {
            return None;
        }
        let p = super::frame::parse(frame).ok()?;
        let kind = pins::events(&p.query).into_iter().find_map(|e| match e {
            Event::Pin(kind, _) => Some(kind.name()),
            _ => None,
        })?;
        Some(refused_parse(p.name, kind))
    }

    /// A statement with `effect` is being sent: note the settings it changes (their text is
    /// read only then, from `text`), and return why its server must be reset before reuse,
    /// if it must.
    fn track_effect<'t>(
        &mut self,
        effect: &SessionEffect,
        text: impl FnOnce() -> Option<std::borrow::Cow<'t, str>>,
        params: &[Option<&[u8]>],
    ) -> Option<&'static str> {
        let reason = effect.reason()?;
        if self.mode != PoolMode::Transaction || !SETTING_REASONS.contains(&reason) {
            return Some(reason);
        }
        match text().and_then(|t| setting_changes_bound(&t, params)) {
            Some(changes) => {
                let carried = changes.into_iter().filter(|c| !reported_change(c));
                self.pending_settings.stage(carried);
                None
            }
            None => Some(reason),
        }
    }

    /// A named statement (transaction mode) is parsed: one that changes settings does so
    /// when it is bound, so it is remembered for then; the reason to reset its server now
    /// for other session effects.
    pub(super) fn note_named_effect(
        &mut self,
        id: StatementId,
        effect: &SessionEffect,
    ) -> Option<&'static str> {
        let reason = effect.reason()?;
        if SETTING_REASONS.contains(&reason) {
            let noted = &mut self.rare().setting_statements;
            if noted.contains(&id) || noted.len() < MAX_SETTING_STATEMENTS {
                noted.insert(id);
                return None;
            }
        }
        Some("statement with session effects")
    }

    /// An unnamed Parse in transaction mode: when its statement changes settings through
    /// parameters, remember its text so the Bind can note them with the values
    /// ([`Session::track_unnamed_bound`]); `true` then (nothing to note now). Any earlier
    /// unnamed statement's text is forgotten: this Parse replaces it.
    pub(super) fn defer_unnamed_setting(&mut self, effect: &SessionEffect, query: &str) -> bool {
        let bound = effect
            .reason()
            .is_some_and(|r| SETTING_REASONS.contains(&r))
            && query.contains('$')
            && self.mode == PoolMode::Transaction;
        if bound {
            self.rare().unnamed_setting = Some(std::sync::Arc::from(query));
        } else {
            self.forget_unnamed_setting();
        }
        bound
    }

    /// The unnamed statement is gone or replaced: no Bind of it notes settings any more.
    pub(super) fn forget_unnamed_setting(&mut self) {
        if let Some(r) = self.rare.as_mut() {
            r.unnamed_setting = None;
        }
    }

    /// The unnamed statement is bound: note the settings it changes, if it was deferred
    /// to here ([`Session::defer_unnamed_setting`]).
    pub(super) fn track_unnamed_bound(&mut self, bind_rest: &[u8]) -> Option<&'static str> {
        let query = self.rare.as_ref()?.unnamed_setting.clone()?;
        let params = super::frame::bind_params(bind_rest).unwrap_or_default();
        self.track_effect(
            &SessionEffect::Dirties("set_config"),
            || Some(std::borrow::Cow::Borrowed(&*query)),
            &params,
        )
    }

    /// A named statement is bound (`bind_rest`: the Bind after its statement name): note
    /// the settings it changes, with its parameters' values.
    pub(super) fn track_bound(
        &mut self,
        stmt: &Statement,
        bind_rest: &[u8],
    ) -> Option<&'static str> {
        let noted = self.rare.as_ref();
        if !noted.is_some_and(|r| r.setting_statements.contains(&stmt.id)) {
            return None;
        }
        // a Bind whose parameters do not decode leaves the settings unknown: reset
        let params = super::frame::bind_params(bind_rest).unwrap_or_default();
        self.track_effect(
            &SessionEffect::Dirties("SET"),
            || Some(std::borrow::Cow::Borrowed(&*stmt.query)),
            &params,
        )
    }
}

/// A ReadyForQuery with `status` answered the client: the ends of pinned state its
/// transaction committed apply (after a `DISCARD ALL` the server is as new); returns whether
/// the pins changed.
pub(super) fn settle_pins(pins: &mut pins::Pins, server: &mut Server, status: u8) -> Option<bool> {
    let before = pins.is_pinned();
    if pins.on_ready(status) {
        server.after_reset();
        return Some(true);
    }
    (before != pins.is_pinned()).then_some(false)
}

/// A ReadyForQuery with `status` answered the client: record the settings its transaction
/// committed on both sides, or have the server reset when they may have been undone.
pub(super) fn settle_settings(
    pending: &mut PendingSettings,
    client: &mut ClientParams,
    server: &mut Server,
    status: u8,
) {
    match pending.on_ready(status) {
        Settled::Nothing => {}
        Settled::Commit(changes) => record(&changes, client, &mut server.params),
        Settled::Doubtful => {
            if server.dirty.is_none() {
                server.dirty = Some("SET in a failed transaction");
            }
        }
    }
}

/// Committed setting changes, recorded on both sides.
fn record(changes: &[Change], client: &mut ClientParams, server: &mut ServerParams) {
    for c in changes {
        client.apply(c);
        server.apply(c);
    }
}

/// A server message reached the client (`seen`; a swallowed one still answers statements):
/// both sides follow a ParameterStatus; pins follow what the client saw; settings follow the client statements it answered,
/// numbered from `before` (exclusive) to `after`
/// ([`crate::pg::server::replies::Replies::answered`]), and a COMMIT it completed.
pub(super) fn follow_state(
    pins: &mut pins::Pins,
    pending: &mut PendingSettings,
    (client, server): (&mut ClientParams, &mut ServerParams),
    (tag, body, seen): (u8, &[u8], bool),
    (before, after): (u64, u64),
    fx: &Effects,
) {
    if tag == wire::be::PARAMETER_STATUS {
        server.on_status(body);
        client.on_status(body);
    }
    if seen {
        pins.on_message(tag, body);
    }
    if !pending.following() {
        return;
    }
    if seen || fx.refused.is_some() {
        let tag = if seen { tag } else { wire::be::ERROR_RESPONSE };
        if let Some(committed) = pending.on_message(tag, body) {
            record(&committed, client, server);
        }
    }
    let ready = fx.ready.map(|(status, _)| status);
    let ran = fx.done.as_ref().is_some_and(|d| d.error.is_none());
    for seq in before + 1..=after {
        pending.answered(seq, ran && seq == before + 1, ready);
    }
}

/// Queue `e`, a client statement (Query or Execute): its number among the server's client
/// statements, `None` when the server skips it.
pub(super) fn push_statement(server: &mut Server, e: Expect) -> Option<u64> {
    let before = server.replies.statements();
    server.replies.push(e);
    let now = server.replies.statements();
    (now != before).then_some(now)
}

/// The statement sent in place of one refused under `session_state = "error"`: the server
/// raises the error itself, so an open transaction fails exactly as on any error.
fn refusal_sql(reason: &str) -> String {
    raising_sql(
        "0A000",
        &format!(
            "pake: {reason} keeps state on the server connection, which transaction pooling \
             cannot carry (session_state = error)"
        ),
        "Set session_state = pin for this pool, or use pool_mode = session.",
    )
}

/// A DO block raising `code` with `message` and `hint` (Pake's own texts, no `$pake$`).
fn raising_sql(code: &str, message: &str, hint: &str) -> String {
    let q = |s: &str| s.replace('\'', "''");
    format!(
        "DO $pake$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = '{}', \
         HINT = '{}'; END$pake$",
        q(message),
        q(hint)
    )
}

/// A Query frame of the refusal.
pub(super) fn refused_query(reason: &str) -> BytesMut {
    statement_frame(fe::QUERY, b"", &refusal_sql(reason))
}

/// A Parse frame of the refusal, under the client's statement name.
pub(super) fn refused_parse(name: &[u8], reason: &str) -> BytesMut {
    statement_frame(fe::PARSE, name, &refusal_sql(reason))
}

/// A Query (`tag`), or an unnamed Parse, that fails with 54000 program_limit_exceeded and
/// `message`: sent in place of a statement Pake cannot pass on within its limits.
pub(super) fn over_limit(tag: u8, message: &str) -> BytesMut {
    let hint = "The limit protects the server and Pake's memory; see the README's limits.";
    statement_frame(tag, b"", &raising_sql("54000", message, hint))
}

/// A Query, or a Parse named `name` with no parameter types, of `sql`.
fn statement_frame(tag: u8, name: &[u8], sql: &str) -> BytesMut {
    use bytes::BufMut;
    let mut buf = BytesMut::new();
    let at = wire::begin_frame(&mut buf, tag);
    if tag == fe::PARSE {
        wire::put_cstr(&mut buf, name);
    }
    wire::put_cstr(&mut buf, sql.as_bytes());
    if tag == fe::PARSE {
        buf.put_i16(0);
    }
    wire::finish_frame(&mut buf, at);
    buf
}
