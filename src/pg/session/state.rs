//! Session state a client leaves on its server, in transaction mode.
//!
//! Settings (`SET`, `RESET`, `set_config(…, false)`, `SET SESSION CHARACTERISTICS …`) follow
//! the client: they are held as pending while their transaction runs, recorded on the client
//! and on the server when it commits, and replayed on the next server by the parameter sync
//! of [`Session::attach`](super::attach). Anything else that outlives a transaction marks the
//! server dirty, and it is reset before another client gets it.

use super::Session;
use crate::config::PoolMode;
use crate::pg::params::{reported_change, ClientParams, PendingSettings, Settled};
use crate::pg::prepared::{Statement, StatementId};
use crate::pg::server::Server;
use crate::pg::sql::settings::setting_changes;
use crate::pg::sql::SessionEffect;

/// Effects whose state is a setting, and so can follow the client.
const SETTING_REASONS: &[&str] = &["SET", "RESET", "set_config"];
/// Named prepared statements that change settings one session remembers (their settings are
/// noted when they are bound); past this, such a statement resets the server instead.
pub(super) const MAX_SETTING_STATEMENTS: usize = 64;

impl Session {
    /// A statement with `effect` is being sent: note the settings it changes (their text is
    /// read only then, from `text`), and return why its server must be reset before reuse,
    /// if it must.
    pub(super) fn track_effect<'t>(
        &mut self,
        effect: &SessionEffect,
        text: impl FnOnce() -> Option<&'t str>,
    ) -> Option<&'static str> {
        let SessionEffect::Dirties(reason) = effect else {
            return None;
        };
        if self.mode != PoolMode::Transaction || !SETTING_REASONS.contains(reason) {
            return Some(reason);
        }
        match text().and_then(setting_changes) {
            Some(changes) => {
                let carried = changes.into_iter().filter(|c| !reported_change(c));
                self.pending_settings.push(carried);
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
        let SessionEffect::Dirties(reason) = effect else {
            return None;
        };
        let room = self.setting_statements.contains(&id)
            || self.setting_statements.len() < MAX_SETTING_STATEMENTS;
        if SETTING_REASONS.contains(reason) && room {
            self.setting_statements.insert(id);
            return None;
        }
        Some("statement with session effects")
    }

    /// A named statement is bound: note the settings it changes.
    pub(super) fn track_bound(&mut self, stmt: &Statement) -> Option<&'static str> {
        if !self.setting_statements.contains(&stmt.id) {
            return None;
        }
        self.track_effect(&SessionEffect::Dirties("SET"), || Some(&stmt.query))
    }
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
        Settled::Commit(changes) => {
            for c in &changes {
                client.apply(c);
                server.params.apply(c);
            }
        }
        Settled::Doubtful => {
            if server.dirty.is_none() {
                server.dirty = Some("SET in a failed transaction");
            }
        }
    }
}
