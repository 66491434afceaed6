//! Users without a `[[users]]` entry, looked up on the server with `auth_query` (PgBouncer's
//! `auth_user` + `auth_query`): a role created at run time logs in through Pake with no
//! config change.
//!
//! The lookup logs in as `auth_user` (a configured user) on one dedicated server connection
//! per (server, database, auth_user), kept open and used by one lookup at a time, and sends
//! the query over the extended protocol with the user name as `$1`. What it returns (a SCRAM
//! verifier or an md5 hash) authenticates the client (`login`); servers are then logged in to
//! without the password ([`super::passthrough`]).
//!
//! Found users are cached for `auth_cache_ttl`, at most `auth_cache_max_entries` of them. Users
//! not found are not cached (a role created a moment later logs in at once); the dedicated
//! connection bounds what unknown names can cost the server. A failed login against a cached
//! secret drops it, so a user whose password just changed gets the new one on the next try.

use super::auth::{Method, Secret};
use super::proxy::UserEntry;
use super::server::{Server, ServerError, ServerTarget};
use crate::config::{Config, Dur, User};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Why a lookup could not answer (the login fails; other clients are not affected).
#[derive(Debug, thiserror::Error)]
pub enum AuthQueryError {
    #[error("auth_query: auth_dbname {0:?} is not a database Pake serves")]
    NoDatabase(String),
    #[error("auth_query: auth_user {0:?} is not defined in [[users]]")]
    NoAuthUser(String),
    #[error("auth_query: cannot log in to the server as auth_user \"{user}\": {source}")]
    Connect { user: String, source: ServerError },
    #[error("auth_query failed on the server: {0}")]
    Failed(String),
    #[error("auth_query: lost the lookup connection: {0}")]
    Query(ServerError),
    #[error("auth_query must return (user name, password) columns; it returned {0} column(s)")]
    Shape(usize),
    #[error("auth_query: no answer within auth_query_timeout ({0})")]
    Timeout(Dur),
}

impl AuthQueryError {
    /// The lookup's database does not exist on the server (SQLSTATE 3D000 at its login).
    pub fn is_unknown_database(&self) -> bool {
        matches!(self, AuthQueryError::Connect { source, .. } if source.server_code() == Some("3D000"))
    }

    /// The server could not be reached in time (08006), rather than a misconfiguration (F0000).
    pub fn is_unreachable(&self) -> bool {
        match self {
            AuthQueryError::Timeout(_) => true,
            AuthQueryError::Connect { source, .. } => source.server_code().is_none(),
            _ => false,
        }
    }
}

/// What the lookup says about a user.
pub enum Lookup {
    /// No `auth_user` for this database: the user is simply unknown.
    Off,
    /// The query found no usable password (no such role, cannot log in, expired).
    Unknown,
    Found {
        entry: Arc<UserEntry>,
        /// Served from the cache rather than looked up for this login.
        cached: bool,
    },
}

/// Which dedicated connection runs a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ConnKey {
    host: String,
    port: u16,
    dbname: String,
    auth_user: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    conn: ConnKey,
    query: String,
    user: String,
}

struct Cached {
    entry: Arc<UserEntry>,
    at: Instant,
}

type Conn = Arc<tokio::sync::Mutex<Option<Server>>>;

/// Dedicated lookup connections kept open at once (one per server database and auth_user).
const MAX_LOOKUP_CONNECTIONS: usize = 16;

/// The lookup cache and the lookups' dedicated connections.
#[derive(Default)]
pub struct AuthQuery {
    cache: Mutex<HashMap<CacheKey, Cached>>,
    conns: Mutex<HashMap<ConnKey, Conn>>,
}

impl AuthQuery {
    /// Look up `user`, a name with no `[[users]]` entry, for a client of `database`.
    /// `auth_user` is the configured user's entry for the lookup's login.
    pub async fn look_up(
        &self,
        config: &Config,
        database: &str,
        user: &str,
        auth_user: impl Fn(&str) -> Option<Arc<UserEntry>>,
        tls: &crate::tls::Tls,
    ) -> Result<(Lookup, Option<CacheKey>), AuthQueryError> {
        let Some(db) = config.resolve_database(database) else {
            return Ok((Lookup::Off, None));
        };
        let Some(lookup) = config.auth_lookup(&db) else {
            return Ok((Lookup::Off, None));
        };
        let auth_db = config
            .resolve_database(&lookup.dbname)
            .ok_or_else(|| AuthQueryError::NoDatabase(lookup.dbname.clone()))?;
        let auth_entry =
            auth_user(&lookup.auth_user).ok_or(AuthQueryError::NoAuthUser(lookup.auth_user))?;
        let conn = ConnKey {
            host: auth_db.host.clone(),
            port: auth_db.port,
            dbname: auth_db.server_dbname().to_string(),
            auth_user: auth_entry.config.name.clone(),
        };
        let key = CacheKey {
            conn: conn.clone(),
            query: lookup.query.clone(),
            user: user.to_string(),
        };
        let ttl = config.general.auth_cache_ttl.0;
        if let Some(c) = self.cache.lock().get(&key) {
            if c.at.elapsed() < ttl {
                let entry = c.entry.clone();
                return Ok((
                    Lookup::Found {
                        entry,
                        cached: true,
                    },
                    Some(key),
                ));
            }
        }
        let target = ServerTarget {
            host: conn.host.clone(),
            port: conn.port,
            user: conn.auth_user.clone(),
            password: auth_entry
                .config
                .server_password
                .clone()
                .or_else(|| auth_entry.secret.plaintext.clone()),
            passthrough: None,
            database: conn.dbname.clone(),
            connect_timeout: config.general.auth_query_timeout.0,
            tls: tls.connector.clone().map(|c| (c, tls.server_mode)),
            extra: Vec::new(),
        };
        let limit = config.general.auth_query_timeout;
        let row = tokio::time::timeout(limit.0, self.query(&conn, &target, &lookup.query, user))
            .await
            .map_err(|_| AuthQueryError::Timeout(limit))??;
        let Some(secret) = row.and_then(|s| parse_secret(user, &s)) else {
            return Ok((Lookup::Unknown, Some(key)));
        };
        let entry = Arc::new(looked_up_entry(config, user, secret));
        self.remember(config, key.clone(), entry.clone());
        Ok((
            Lookup::Found {
                entry,
                cached: false,
            },
            Some(key),
        ))
    }

    /// Run the query on the dedicated connection (opened, or reopened, as needed); the
    /// second column of the first row.
    async fn query(
        &self,
        key: &ConnKey,
        target: &ServerTarget,
        query: &str,
        user: &str,
    ) -> Result<Option<String>, AuthQueryError> {
        let result = self.query_on_slot(key, target, query, user).await;
        self.trim(key);
        result
    }

    /// Keep at most [`MAX_LOOKUP_CONNECTIONS`] dedicated connections (client-chosen database
    /// names must not grow the map): past it, the ones not in use are closed.
    fn trim(&self, keep: &ConnKey) {
        let mut conns = self.conns.lock();
        if conns.len() > MAX_LOOKUP_CONNECTIONS {
            conns.retain(|k, c| k == keep || c.try_lock().is_err());
        }
    }

    /// Close the lookup connections to database `dbname` not in use (a client drops or
    /// renames it, or makes it a template: PostgreSQL refuses while sessions are on it).
    pub fn free_database(&self, dbname: &str) -> usize {
        let mut conns = self.conns.lock();
        let before = conns.len();
        conns.retain(|k, c| k.dbname != dbname || c.try_lock().is_err());
        before - conns.len()
    }

    async fn query_on_slot(
        &self,
        key: &ConnKey,
        target: &ServerTarget,
        query: &str,
        user: &str,
    ) -> Result<Option<String>, AuthQueryError> {
        let conn = self.conns.lock().entry(key.clone()).or_default().clone();
        let mut slot = conn.lock().await;
        // the server is out of the slot while the query runs: a lookup abandoned at its
        // timeout drops the connection with it, so no later lookup reads its late reply
        let alive = slot
            .take()
            .and_then(|mut s| s.is_alive(std::time::Duration::ZERO).then_some(s));
        let mut server = match alive {
            Some(s) => s,
            None => Server::connect(0, target)
                .await
                .map_err(|source| AuthQueryError::Connect {
                    user: target.user.clone(),
                    source,
                })?,
        };
        let rows = match server
            .query_params(query, &[user], target.connect_timeout)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                return Err(match e {
                    ServerError::Query { message, .. } => {
                        if server.is_idle() {
                            *slot = Some(server);
                        }
                        AuthQueryError::Failed(message)
                    }
                    e => AuthQueryError::Query(e),
                });
            }
        };
        *slot = Some(server);
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        if row.len() < 2 {
            return Err(AuthQueryError::Shape(row.len()));
        }
        Ok(row.into_iter().nth(1).flatten())
    }

    fn remember(&self, config: &Config, key: CacheKey, entry: Arc<UserEntry>) {
        let max = config.general.auth_cache_max_entries;
        if max == 0 {
            return;
        }
        let ttl = config.general.auth_cache_ttl.0;
        let mut cache = self.cache.lock();
        if cache.len() >= max && !cache.contains_key(&key) {
            cache.retain(|_, c| c.at.elapsed() < ttl);
            while cache.len() >= max {
                let oldest = cache
                    .iter()
                    .min_by_key(|(_, c)| c.at)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => cache.remove(&k),
                    None => break,
                };
            }
        }
        cache.insert(
            key,
            Cached {
                entry,
                at: Instant::now(),
            },
        );
    }

    /// A login failed against this cached secret: look it up again next time.
    pub fn forget(&self, key: &CacheKey) {
        self.cache.lock().remove(key);
    }

    /// Looked-up users currently cached.
    pub fn cached(&self) -> usize {
        self.cache.lock().len()
    }
}

/// The stored secret, when it is one Pake can check a login against (a plaintext stored by
/// an old server, or anything else, is refused like a wrong password).
fn parse_secret(user: &str, stored: &str) -> Option<Secret> {
    if stored.starts_with("SCRAM-SHA-256$") || is_md5_hash(stored) {
        return Some(Secret::from_config(user, stored));
    }
    tracing::warn!(
        user,
        "auth_query returned a password that is neither a SCRAM verifier nor an md5 hash; login refused"
    );
    None
}

fn is_md5_hash(p: &str) -> bool {
    p.len() == 35 && p.starts_with("md5") && p[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A looked-up user: the pool defaults, and the method its secret supports. SCRAM verifiers
/// always log in with SCRAM (as PostgreSQL switches an `md5` rule to SCRAM); md5 hashes with
/// md5, unless `auth_type` is `scram-sha-256` (then the login fails as PostgreSQL's would).
/// `trust` is not applied: Pake needs the client's proof to log in to servers for it.
fn looked_up_entry(config: &Config, user: &str, secret: Secret) -> UserEntry {
    let method = match (&secret.scram, config.general.auth_type) {
        (Some(_), _) | (None, Method::ScramSha256) => Method::ScramSha256,
        (None, _) => Method::Md5,
    };
    UserEntry {
        config: User {
            auth_type: Some(method),
            ..User::named(user)
        },
        secret,
        method,
        looked_up: true,
        looked_up_at: Some(Instant::now()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> CacheKey {
        CacheKey {
            conn: ConnKey {
                host: "h".into(),
                port: 1,
                dbname: "d".into(),
                auth_user: "a".into(),
            },
            query: "q $1".into(),
            user: user.into(),
        }
    }

    fn entry(config: &Config, user: &str) -> Arc<UserEntry> {
        let verifier = postgres_protocol::password::scram_sha_256(b"pw");
        let secret = parse_secret(user, &verifier).expect("a verifier");
        Arc::new(looked_up_entry(config, user, secret))
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_the_oldest() {
        let mut config = Config::default();
        config.general.auth_cache_max_entries = 2;
        let q = AuthQuery::default();
        for user in ["a", "b", "c"] {
            q.remember(&config, key(user), entry(&config, user));
        }
        assert_eq!(q.cached(), 2);
        let cache = q.cache.lock();
        assert!(!cache.contains_key(&key("a")), "the oldest made room");
        assert!(cache.contains_key(&key("b")) && cache.contains_key(&key("c")));
        drop(cache);
        q.forget(&key("b"));
        assert_eq!(q.cached(), 1);
        config.general.auth_cache_max_entries = 0;
        q.remember(&config, key("d"), entry(&config, "d"));
        assert_eq!(q.cached(), 1, "0 turns the cache off");
    }

    #[test]
    fn secrets_and_methods() {
        let mut config = Config::default();
        assert!(parse_secret("u", "plaintext").is_none());
        let md5 = postgres_protocol::password::md5(b"pw", "u");
        let md5_secret = parse_secret("u", &md5).expect("md5 hash");
        let e = looked_up_entry(&config, "u", md5_secret.clone());
        assert_eq!(e.method, Method::ScramSha256, "md5 refused under scram");
        config.general.auth_type = Method::Trust;
        let e = looked_up_entry(&config, "u", md5_secret);
        assert_eq!(e.method, Method::Md5, "trust is not applied");
        assert!(e.looked_up && e.secret.plaintext.is_none());
        let e = entry(&config, "u");
        assert_eq!(e.method, Method::ScramSha256);
    }
}
