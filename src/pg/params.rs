//! Session parameters across pooled servers.
//!
//! A client's startup packet asks for settings (`application_name`, `client_encoding`,
//! `DateStyle`, `TimeZone`, `-c search_path=…` in options…) and PostgreSQL reports some of them
//! back with ParameterStatus. In transaction mode the client's transactions run on servers
//! other clients used before, so before a client's first message on a server Pake compares
//! what the client expects with what the server has and sends one `SET …` (its replies
//! swallowed) when they differ. A signature per side makes the common case — same client
//! settings as last time — a single integer comparison.

use super::sql::normalize::hash64;
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

fn is_tracked(name: &str) -> bool {
    TRACKED.iter().any(|t| t.eq_ignore_ascii_case(name))
}

/// The parameters one client expects on its session.
#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    /// (name, value); names compared case-insensitively.
    values: Vec<(String, String)>,
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
        p.resign();
        p
    }

    fn set_quiet(&mut self, name: &str, value: &str) {
        match self
            .values
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value.to_string(),
            None => self.values.push((name.to_string(), value.to_string())),
        }
    }

    fn resign(&mut self) {
        let mut text = String::new();
        for (k, v) in &self.values {
            text.push_str(&k.to_ascii_lowercase());
            text.push('\0');
            text.push_str(v);
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
        self.values
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn sig(&self) -> u64 {
        self.sig
    }
}

/// What one server session has.
#[derive(Debug, Clone, Default)]
pub struct ServerParams {
    /// Values the server reported with ParameterStatus.
    pub reported: Vec<(String, String)>,
    /// Unreported settings Pake applied for a client (e.g. search_path from options).
    pub applied: Vec<(String, String)>,
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
        for (k, v) in client.iter() {
            if self.current(k) != Some(v) {
                sql.push_str(&format!("SET {} TO {};", ident(k), literal(v)));
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
        if sql.is_empty() {
            self.synced_sig = client.sig();
            None
        } else {
            Some(sql)
        }
    }
}

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

/// Quote a value as a string literal.
fn literal(v: &str) -> String {
    if v.contains('\\') {
        format!("E'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", v.replace('\'', "''"))
    }
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
            "SET \"application_name\" TO 'psql';SET \"search_path\" TO 'app';"
        );
        assert!(!sql.contains("server_version"));
        // the server reports the change; the sync is then recorded
        server.on_status(&status_body("application_name", "psql"));
        server.synced_sig = client.sig();
        assert_eq!(server.sync_sql(&client), None);

        // the next client wants neither: both go back
        let plain = ClientParams::new(&defaults, &[]);
        let sql = server.sync_sql(&plain).unwrap();
        assert_eq!(sql, "SET \"application_name\" TO '';RESET \"search_path\";");
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
    fn quoting() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b"), "E'a\\\\b'");
        assert_eq!(ident("my.custom"), "\"my\".\"custom\"");
    }
}
