//! Cross-field rules of a parsed [`Config`]: every problem is reported with the key it is
//! about, not just the first one.

use super::{Config, ConfigError};
use crate::pg::auth::Method;
use std::collections::HashSet;

/// More reactor threads than this is a typo, not a machine.
pub const MAX_PG_THREADS: usize = 256;

impl Config {
    /// Check cross-field rules; every problem found is reported, not just the first.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        self.check_limits(&mut errs);
        self.check_databases(&mut errs);
        validate_tls(&self.tls, &mut errs);
        self.check_users(&mut errs);
        self.check_auth_lookup(&mut errs);
        self.peering.validate(&mut errs);
        errs.extend(self.insight.validate());
        errs.extend(self.otlp.validate());
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// Listener, message and pool limits, and that there is something to serve.
    fn check_limits(&self, errs: &mut Vec<ConfigError>) {
        if let Some(redis) = &self.redis {
            errs.extend(redis.validate());
        }
        if self.databases.is_empty() && self.redis.is_none() {
            errs.push(ConfigError::new(
                "databases",
                "at least one [[databases]] entry (or a [redis] section) is needed",
            ));
        }
        if self.general.pg_threads > MAX_PG_THREADS {
            errs.push(ConfigError::new(
                "general.pg_threads",
                format!("at most {MAX_PG_THREADS} (0: clients on the worker threads)"),
            ));
        }
        if self.general.max_client_conn == 0 {
            errs.push(ConfigError::new(
                "general.max_client_conn",
                "must be at least 1",
            ));
        }
        if self.general.max_message_size.0 < 1024 {
            errs.push(ConfigError::new(
                "general.max_message_size",
                "must be at least 1KiB: clients could not send ordinary queries",
            ));
        }
        if self.pool.pool_size == 0 {
            errs.push(ConfigError::new("pool.pool_size", "must be at least 1"));
        }
        if self.pool.min_pool_size > self.pool.pool_size {
            errs.push(ConfigError::new(
                "pool.min_pool_size",
                format!("must not exceed pool_size ({})", self.pool.pool_size),
            ));
        }
        if self.pool.server_connect_timeout.enabled().is_none() {
            errs.push(ConfigError::new(
                "pool.server_connect_timeout",
                "must be more than 0: a dead server would hang logins forever",
            ));
        }
        if self.pool.client_login_timeout.enabled().is_none() {
            errs.push(ConfigError::new(
                "pool.client_login_timeout",
                "must be more than 0: idle half-open clients would be kept forever",
            ));
        }
    }

    /// Each `[[databases]]` entry and its replicas.
    fn check_databases(&self, errs: &mut Vec<ConfigError>) {
        let mut names = HashSet::new();
        for (i, db) in self.databases.iter().enumerate() {
            let key = |k: &str| format!("databases[{i}].{k}");
            if db.name.is_empty() {
                errs.push(ConfigError::new(key("name"), "must not be empty"));
            } else if !names.insert(db.name.as_str()) {
                errs.push(ConfigError::new(
                    key("name"),
                    format!("database {:?} is defined twice", db.name),
                ));
            }
            if db.name == "pake" || db.name == "pgbouncer" {
                errs.push(ConfigError::new(
                    key("name"),
                    "is reserved for the admin console",
                ));
            }
            if db.host.is_empty() {
                errs.push(ConfigError::new(key("host"), "must not be empty"));
            }
            if db.port == 0 {
                errs.push(ConfigError::new(key("port"), "must be 1 to 65535"));
            }
            if db.pool_size == Some(0) {
                errs.push(ConfigError::new(key("pool_size"), "must be at least 1"));
            }
            for (j, r) in db.replicas.iter().enumerate() {
                if r.host.is_empty() {
                    errs.push(ConfigError::new(
                        format!("databases[{i}].replicas[{j}].host"),
                        "must not be empty",
                    ));
                }
                if r.port == 0 {
                    errs.push(ConfigError::new(
                        format!("databases[{i}].replicas[{j}].port"),
                        "must be 1 to 65535",
                    ));
                }
            }
            if db.server_password.is_some() && db.server_user.is_none() {
                errs.push(ConfigError::new(
                    key("server_password"),
                    "is only used together with server_user",
                ));
            }
        }
    }

    /// Each `[[users]]` entry (its password must fit its auth method) and `admin_users`.
    fn check_users(&self, errs: &mut Vec<ConfigError>) {
        let mut users = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let key = |k: &str| format!("users[{i}].{k}");
            if u.name.is_empty() {
                errs.push(ConfigError::new(key("name"), "must not be empty"));
            } else if !users.insert(u.name.as_str()) {
                errs.push(ConfigError::new(
                    key("name"),
                    format!("user {:?} is defined twice", u.name),
                ));
            }
            let method = u.auth_type.unwrap_or(self.general.auth_type);
            match (&u.password, method) {
                (None, Method::Trust) => {}
                (None, m) => errs.push(ConfigError::new(
                    key("password"),
                    format!("is required for auth_type {m}"),
                )),
                (Some(p), Method::Md5) if p.starts_with("SCRAM-SHA-256$") => {
                    errs.push(ConfigError::new(
                        key("password"),
                        "is a SCRAM verifier, which cannot check md5 logins: give the plaintext or an md5 hash",
                    ))
                }
                (Some(p), Method::ScramSha256) if is_md5_hash(p) => {
                    errs.push(ConfigError::new(
                        key("password"),
                        "is an md5 hash, which cannot check SCRAM logins: give the plaintext or a SCRAM verifier, or set auth_type = \"md5\"",
                    ))
                }
                _ => {}
            }
            if u.pool_size == Some(0) {
                errs.push(ConfigError::new(key("pool_size"), "must be at least 1"));
            }
        }
        for (i, name) in self.general.admin_users.iter().enumerate() {
            if !users.contains(name.as_str()) {
                errs.push(ConfigError::new(
                    format!("general.admin_users[{i}]"),
                    format!("user {name:?} is not defined in [[users]]"),
                ));
            }
        }
    }
}

impl Config {
    /// `auth_user`/`auth_query`/`auth_dbname`, globally and per database: the user must be a
    /// `[[users]]` entry Pake can log in as, the query must take the user name as `$1`, and
    /// the database must be one Pake serves.
    fn check_auth_lookup(&self, errs: &mut Vec<ConfigError>) {
        let g = &self.general;
        let scopes = std::iter::once((
            "general".to_string(),
            Some(&g.auth_user),
            Some(&g.auth_query),
            Some(&g.auth_dbname),
        ))
        .chain(self.databases.iter().enumerate().map(|(i, d)| {
            (
                format!("databases[{i}]"),
                d.auth_user.as_ref(),
                d.auth_query.as_ref(),
                d.auth_dbname.as_ref(),
            )
        }));
        for (scope, user, query, dbname) in scopes {
            if let Some(user) = user.filter(|u| !u.is_empty()) {
                match self.user(user) {
                    None => errs.push(ConfigError::new(
                        format!("{scope}.auth_user"),
                        format!("user {user:?} is not defined in [[users]]: Pake needs its password to run auth_query"),
                    )),
                    Some(u) if u.server_password.is_none()
                        && u.password.as_deref().is_none_or(|p| p.starts_with("SCRAM-SHA-256$") || is_md5_hash(p)) =>
                    {
                        errs.push(ConfigError::new(
                            format!("{scope}.auth_user"),
                            format!("user {user:?} has no plaintext password or server_password to log in to servers with"),
                        ))
                    }
                    Some(_) => {}
                }
            }
            if let Some(query) = query {
                if !query.contains("$1") {
                    errs.push(ConfigError::new(
                        format!("{scope}.auth_query"),
                        "must take the user name as $1",
                    ));
                }
            }
            if let Some(db) = dbname.filter(|d| !d.is_empty()) {
                if self.resolve_database(db).is_none() {
                    errs.push(ConfigError::new(
                        format!("{scope}.auth_dbname"),
                        format!("database {db:?} is not defined in [[databases]] (and no wildcard entry serves it)"),
                    ));
                }
            }
        }
    }
}

fn validate_tls(t: &crate::tls::TlsConfig, errs: &mut Vec<ConfigError>) {
    use crate::tls::{ClientTlsMode, ServerTlsMode};
    if t.client_tls_sslmode != ClientTlsMode::Disable {
        for (key, file) in [
            ("tls.client_tls_cert_file", &t.client_tls_cert_file),
            ("tls.client_tls_key_file", &t.client_tls_key_file),
        ] {
            match file {
                None => errs.push(ConfigError::new(
                    key,
                    "is required when client_tls_sslmode is not disable",
                )),
                Some(p) if !p.exists() => errs.push(ConfigError::new(
                    key,
                    format!("{} does not exist", p.display()),
                )),
                Some(_) => {}
            }
        }
    }
    if matches!(
        t.server_tls_sslmode,
        ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull
    ) {
        match &t.server_tls_ca_file {
            None => errs.push(ConfigError::new(
                "tls.server_tls_ca_file",
                "is required for verify-ca and verify-full",
            )),
            Some(p) if !p.exists() => errs.push(ConfigError::new(
                "tls.server_tls_ca_file",
                format!("{} does not exist", p.display()),
            )),
            Some(_) => {}
        }
    }
}

fn is_md5_hash(p: &str) -> bool {
    p.len() == 35 && p.starts_with("md5") && p[3..].bytes().all(|b| b.is_ascii_hexdigit())
}
