//! Session parameters across pooled servers.
//!
//! A client's startup packet asks for settings (`application_name`, `client_encoding`,
//! `DateStyle`, `TimeZone`, `-c search_path=…` in options…) and PostgreSQL reports some of them
//! back with ParameterStatus. In transaction mode the client's transactions run on servers
//! other clients used before, so before a client's first message on a server Pake compares
//! what the client expects with what the server has and sends one `SET …` (its replies
//! swallowed) when they differ. A signature per side makes the common case — same client
//! settings as last time — a single integer comparison.
//!
//! The same mechanism carries the session-level settings a client changes itself (`SET`,
//! `RESET`, `set_config(…, false)`, `SET SESSION CHARACTERISTICS …`, see
//! [`crate::pg::sql::settings`]): each is kept per client as the statement that sets it, is
//! recorded once its transaction commits ([`PendingSettings`]), and is replayed in the same
//! injected statement on the next server whose own record differs.

pub use super::pending::{Settled, TxPending};
use super::sql::normalize::hash64;
use super::sql::settings::{quote_literal, quote_name, Change};
use super::wire::cstr;

/// Reported parameters clients may change and expect to follow them (PgBouncer tracks the
/// same set). Others (server_version, is_superuser…) are fixed per server.
pub const TRACKED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
];

/// PostgreSQL's longest name, NAMEDATALEN − 1 bytes.
const NAME_MAX: usize = 63;

/// `application_name` as PostgreSQL takes it: longer than [`NAME_MAX`] bytes, it is cut at
/// the last character boundary within them, and the server says so with a NOTICE (42622,
/// "identifier … will be truncated to …") before its ParameterStatus. Pake answers the
/// login, so it does both itself (the server's notice, on the first `SET` Pake sends for
/// the client, would be swallowed). `None`: kept as it is.
pub fn truncated_application_name(value: &str) -> Option<(String, String)> {
    if value.len() <= NAME_MAX {
        return None;
    }
    let mut end = NAME_MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let kept = &value[..end];
    let notice = format!("identifier \"{value}\" will be truncated to \"{kept}\"");
    Some((kept.to_string(), notice))
}

/// Whether `name` (any case) is one of [`TRACKED`].
pub fn is_tracked(name: &str) -> bool {
    tracked_index(name).is_some()
}

/// `name` as [`TRACKED`] spells it (`datestyle` → `DateStyle`), if tracked.
pub fn tracked_name(name: &str) -> Option<&'static str> {
    tracked_index(name).map(|i| TRACKED[i])
}

fn tracked_index(name: &str) -> Option<usize> {
    TRACKED.iter().position(|t| t.eq_ignore_ascii_case(name))
}

/// The parameters one client expects on its session.
#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    /// The tracked parameters' values, in [`TRACKED`]'s order: every client has them, and
    /// in place they need no list of their own (every idle client holds a ClientParams).
    tracked: [Option<Box<str>>; TRACKED.len()],
    /// Other parameters the startup packet set (name, value); names compared
    /// case-insensitively.
    other: Vec<(Box<str>, Box<str>)>,
    /// Settings the client changed in its session: (lower-case name, statement setting it).
    session: Vec<(String, String)>,
    sig: u64,
}

impl ClientParams {
    /// Start from the pool's reported defaults for tracked names, then the client's own.
    pub fn new(defaults: &[(String, String)], requested: &[(String, String)]) -> ClientParams {
        let mut p = ClientParams::default();
        for (k, v) in defaults.iter().filter(|(k, _)| is_tracked(k)) {
            p.set_quiet(k, v);
        }
        for (k, v) in requested {
            p.set_quiet(k, v);
        }
        p.other.shrink_to_fit();
        p.resign();
        p
    }

    fn set_quiet(&mut self, name: &str, value: &str) {
        if let Some(i) = tracked_index(name) {
            self.tracked[i] = Some(value.into());
            return;
        }
        match self
            .other
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value.into(),
            None => self.other.push((name.into(), value.into())),
        }
    }

    fn resign(&mut self) {
        let mut text = String::new();
        for (k, v) in self.iter() {
            text.push_str(&k.to_ascii_lowercase());
            text.push('\0');
            text.push_str(v);
            text.push('\0');
        }
        text.push('\u{1}');
        for (_, sql) in &self.session {
            text.push_str(sql);
            text.push('\0');
        }
        // 0 is reserved for "unknown" on the server side
        self.sig = hash64(text.as_bytes()) | 1;
    }

    /// A ParameterStatus reached this client: it now expects that value.
    pub fn on_status(&mut self, body: &[u8]) {
        if let Some((k, v)) = status(body) {
            if is_tracked(&k) {
                self.set_quiet(&k, &v);
                self.resign();
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        match tracked_index(name) {
            Some(i) => self.tracked[i].as_deref(),
            None => self
                .other
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| &**v),
        }
    }

    /// (name, value): the tracked ones the client has, in [`TRACKED`]'s order, then the others.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let tracked = TRACKED.iter().zip(&self.tracked);
        tracked
            .filter_map(|(k, v)| Some((*k, v.as_deref()?)))
            .chain(self.other.iter().map(|(k, v)| (&**k, &**v)))
    }

    pub fn sig(&self) -> u64 {
        self.sig
    }

    /// A committed session-level change of the client's own.
    pub fn apply(&mut self, change: &Change) {
        apply_session(&mut self.session, change);
        self.resign();
    }

    /// `DISCARD ALL`: only the startup settings remain.
    pub fn discard(&mut self) {
        if !self.session.is_empty() {
            self.session.clear();
            self.resign();
        }
    }

    /// The session-level settings the client changed, as (name, statement).
    pub fn session(&self) -> impl Iterator<Item = (&str, &str)> {
        self.session.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The client set `default_transaction_read_only` on in its session.
    pub fn read_only_default(&self) -> bool {
        self.session.iter().any(|(k, sql)| {
            k == "default_transaction_read_only" && {
                let v = sql.rsplit(" TO ").next().unwrap_or("");
                let v = v.trim_matches('\'').to_ascii_lowercase();
                ["on", "true", "yes", "1"].contains(&v.as_str())
            }
        })
    }
}

/// Record `change` in a (name, statement) list of session settings.
fn apply_session(list: &mut Vec<(String, String)>, change: &Change) {
    match change {
        Change::Set { name, sql } => match list.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1.clone_from(sql),
            None => list.push((name.clone(), sql.clone())),
        },
        Change::Reset(name) => list.retain(|(k, _)| k != name),
        Change::ResetAll => list.clear(),
    }
}

/// Is this change carried by ParameterStatus already (reported, tracked parameters)?
pub fn reported_change(change: &Change) -> bool {
    match change {
        Change::Set { name, .. } | Change::Reset(name) => is_tracked(name),
        Change::ResetAll => false,
    }
}

/// What one server session has.
#[derive(Debug, Clone, Default)]
pub struct ServerParams {
    /// Values the server reported with ParameterStatus.
    pub reported: Vec<(String, String)>,
    /// Unreported settings Pake applied for a client (e.g. search_path from options).
    pub applied: Vec<(String, String)>,
    /// Session-level settings clients changed on this server: (name, statement).
    pub session: Vec<(String, String)>,
    /// Signature of the client parameters this server was last synced to, 0 if unknown.
    pub synced_sig: u64,
}

impl ServerParams {
    pub fn on_status(&mut self, body: &[u8]) {
        if let Some((k, v)) = status(body) {
            self.synced_sig = 0;
            match self.reported.iter_mut().find(|(n, _)| *n == k) {
                Some(slot) => slot.1 = v,
                None => self.reported.push((k, v)),
            }
        }
    }

    /// The value the server reported for `name` (`server_version`…).
    pub fn reported_value(&self, name: &str) -> Option<&str> {
        (self.reported.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn current(&self, name: &str) -> Option<&str> {
        self.reported
            .iter()
            .chain(self.applied.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The reset query ran: unreported settings are back to the login defaults.
    pub fn on_reset(&mut self) {
        self.applied.clear();
        self.session.clear();
        self.synced_sig = 0;
    }

    /// A client's session-level change committed on this server.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Set { name, .. } | Change::Reset(name) => {
                self.applied.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            }
            Change::ResetAll => self.applied.clear(),
        }
        apply_session(&mut self.session, change);
        self.synced_sig = 0;
    }

    /// The statement that brings this server to `client`'s settings, if any is needed.
    /// Records the unreported settings it applies; the caller marks the sync done
    /// (`synced_sig`) once the statement has run.
    pub fn sync_sql(&mut self, client: &ClientParams) -> Option<String> {
        if self.synced_sig == client.sig() {
            return None;
        }
        let mut sql = String::new();
        // settings a previous client changed and this one did not go back first
        let stale: Vec<String> = self
            .session
            .iter()
            .filter(|(k, _)| !client.session.iter().any(|(n, _)| n == k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            sql.push_str(&format!("RESET {};", quote_name(&k)));
            self.apply(&Change::Reset(k));
        }
        for (k, v) in client.iter() {
            if client
                .session
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(k))
            {
                continue; // the client's own SET below wins
            }
            if self.current(k) != Some(v) {
                // set_config takes the value as the startup packet gave it: a list such as
                // `search_path=a,b` stays a list (`SET x TO 'a,b'` would make it one name)
                let set = format!(
                    "SELECT pg_catalog.set_config({}, {}, false);",
                    quote_literal(k),
                    quote_literal(v)
                );
                sql.push_str(&set);
                if !is_tracked(k) {
                    self.applied.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
                    self.applied.push((k.to_string(), v.to_string()));
                }
            }
        }
        let stale: Vec<String> = self
            .applied
            .iter()
            .filter(|(k, _)| client.get(k).is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            sql.push_str(&format!("RESET {};", ident(&k)));
            self.applied.retain(|(n, _)| *n != k);
        }
        for (k, set) in &client.session {
            if !self.session.iter().any(|(n, s)| n == k && s == set) {
                sql.push_str(set);
                sql.push(';');
                apply_session(
                    &mut self.session,
                    &Change::Set {
                        name: k.clone(),
                        sql: set.clone(),
                    },
                );
            }
        }
        if sql.is_empty() {
            self.synced_sig = client.sig();
            None
        } else {
            Some(sql)
        }
    }
}

pub use super::pending_settings::PendingSettings;

fn status(body: &[u8]) -> Option<(String, String)> {
    let (k, rest) = cstr(body)?;
    let (v, _) = cstr(rest)?;
    Some((
        String::from_utf8_lossy(k).into_owned(),
        String::from_utf8_lossy(v).into_owned(),
    ))
}

/// Quote a GUC name as an identifier (dotted custom names keep their parts).
fn ident(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    fn status_body(k: &str, v: &str) -> Vec<u8> {
        format!("{k}\0{v}\0").into_bytes()
    }

    #[test]
    fn syncs_only_differences_and_remembers() {
        let defaults = vec![
            s("TimeZone", "UTC"),
            s("application_name", ""),
            s("server_version", "15"),
        ];
        let client = ClientParams::new(
            &defaults,
            &[s("application_name", "psql"), s("search_path", "app")],
        );
        let mut server = ServerParams {
            reported: defaults.clone(),
            ..ServerParams::default()
        };
        let sql = server.sync_sql(&client).unwrap();
        assert_eq!(
            sql,
            "SELECT pg_catalog.set_config('application_name', 'psql', false);\
             SELECT pg_catalog.set_config('search_path', 'app', false);"
        );
        assert!(!sql.contains("server_version"));
        // the server reports the change; the sync is then recorded
        server.on_status(&status_body("application_name", "psql"));
        server.synced_sig = client.sig();
        assert_eq!(server.sync_sql(&client), None);

        // the next client wants neither: both go back
        let plain = ClientParams::new(&defaults, &[]);
        let sql = server.sync_sql(&plain).unwrap();
        assert_eq!(
            sql,
            "SELECT pg_catalog.set_config('application_name', '', false);RESET \"search_path\";"
        );
        assert!(server.applied.is_empty());
    }

    #[test]
    fn client_follows_its_own_set() {
        let mut c = ClientParams::new(&[s("TimeZone", "UTC")], &[]);
        let before = c.sig();
        c.on_status(&status_body("TimeZone", "Europe/Paris"));
        assert_eq!(c.get("timezone"), Some("Europe/Paris"));
        assert_ne!(before, c.sig());
        c.on_status(&status_body("server_version", "16"));
        assert_eq!(c.get("server_version"), None);
    }

    #[test]
    fn session_settings_replay_and_reset() {
        let defaults = vec![s("TimeZone", "UTC")];
        let set = |name: &str, sql: &str| Change::Set {
            name: name.into(),
            sql: sql.into(),
        };
        let mut a = ClientParams::new(&defaults, &[s("search_path", "app")]);
        a.apply(&set("work_mem", "SET work_mem TO '8MB'"));
        a.apply(&set("search_path", "SET search_path TO x, y"));
        let mut server = ServerParams {
            reported: defaults.clone(),
            ..ServerParams::default()
        };
        // the client's own SET of search_path wins over its startup value
        let sql = server.sync_sql(&a).unwrap();
        assert_eq!(sql, "SET work_mem TO '8MB';SET search_path TO x, y;");
        server.synced_sig = a.sig();
        assert_eq!(server.sync_sql(&a), None);
        // another client: a's settings go, its startup value comes back
        let b = ClientParams::new(&defaults, &[s("search_path", "app")]);
        let sql = server.sync_sql(&b).unwrap();
        assert_eq!(
            sql,
            "RESET work_mem;RESET search_path;\
             SELECT pg_catalog.set_config('search_path', 'app', false);"
        );
        // a commits a RESET on a server: recorded on both sides, nothing left to replay
        a.apply(&Change::Reset("work_mem".into()));
        server.apply(&Change::Reset("work_mem".into()));
        assert!(a.session().all(|(k, _)| k != "work_mem"));
        let mut fresh = ServerParams {
            reported: defaults.clone(),
            ..ServerParams::default()
        };
        assert_eq!(
            fresh.sync_sql(&a).unwrap(),
            "SET search_path TO x, y;",
            "only what is left"
        );
        a.discard();
        assert_eq!(a.session().count(), 0);
        assert_ne!(a.sig(), ClientParams::new(&defaults, &[]).sig());
    }

    #[test]
    fn long_application_names_are_cut_as_postgres_cuts_them() {
        assert_eq!(truncated_application_name(&"x".repeat(63)), None);
        let (kept, notice) = truncated_application_name(&"x".repeat(65)).unwrap_or_default();
        assert_eq!(kept, "x".repeat(63));
        assert_eq!(
            notice,
            format!(
                "identifier \"{}\" will be truncated to \"{}\"",
                "x".repeat(65),
                "x".repeat(63)
            )
        );
        // never inside a character: "é" is two bytes, so 61 x follow it, as PostgreSQL keeps
        let (kept, _) =
            truncated_application_name(&format!("é{}", "x".repeat(65))).unwrap_or_default();
        assert_eq!(kept, format!("é{}", "x".repeat(61)));
        let (kept, _) =
            truncated_application_name(&format!("{}é", "x".repeat(62))).unwrap_or_default();
        assert_eq!(kept, "x".repeat(62));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
        assert_eq!(ident("my.custom"), "\"my\".\"custom\"");
    }
}
