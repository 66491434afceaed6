//! Typed configuration: one TOML file (`config/pake.toml`), or a quick start built from CLI
//! flags. Every struct rejects unknown keys; [`Config::load`] and [`Config::validate`] name the
//! offending key and say why, so `pake check-config` is useful on its own.
//!
//! Setting names follow PgBouncer where PgBouncer has the setting (`pool_size`,
//! `max_client_conn`, `server_lifetime`, `query_wait_timeout`…): its users should feel at home.

pub mod peering;
mod quickstart;
#[cfg(test)]
mod tests;
pub mod units;
mod validate;

use crate::pg::auth::Method;
pub use quickstart::{parse_url, QuickStart, UrlTarget};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
pub use units::{Bytes, Dur};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings: listeners, limits, logging.
    #[serde(default)]
    pub general: General,
    /// Pool defaults; each database and user may override some of them.
    #[serde(default)]
    pub pool: PoolDefaults,
    /// The databases clients may connect to, by the name they use.
    #[serde(default)]
    pub databases: Vec<Database>,
    /// The users clients may log in as.
    #[serde(default)]
    pub users: Vec<User>,
    /// Read/write split across streaming replicas.
    #[serde(default)]
    pub routing: Routing,
    /// TLS towards clients and towards servers.
    #[serde(default)]
    pub tls: crate::tls::TlsConfig,
    /// Query insight: per-statement statistics, slow-query plans, index advice.
    #[serde(default)]
    pub insight: crate::insight::config::InsightConfig,
    /// The Redis proxy (`[redis]`); absent means no Redis listener.
    #[serde(default)]
    pub redis: Option<crate::redis::config::RedisConfig>,
    /// OTLP/HTTP export of one span per client transaction (off by default).
    #[serde(default)]
    pub otlp: crate::obs::otlp::OtlpConfig,
    /// Cancel forwarding between Pake instances behind one address (off by default).
    #[serde(default)]
    pub peering: peering::Peering,
}

/// How reads are sent to replicas, and when a replica is trusted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    /// A replica further behind than this is banned: a duration (`"5s"`, replay time behind
    /// the primary) or a size (`"64MiB"`, WAL bytes not yet replayed).
    pub max_replica_lag: LagLimit,
    /// How long a lagging or failing replica gets no reads.
    pub ban_time: Dur,
    /// How often each replica's health and lag, and the primary's WAL position, are sampled
    /// (on side connections, off the request path).
    pub health_check_interval: Dur,
    /// A health check slower than this counts as failed.
    pub health_check_timeout: Dur,
    /// How often the primary's WAL position and each replica's replay position are sampled
    /// for read-your-writes, on connections of their own (one light query per server): a
    /// session's reads move to a replica about two of these after its write. `"0s"` leaves
    /// it to the health check.
    pub position_interval: Dur,
    /// After a session commits a write, where its next reads go: `causal` (the primary until a
    /// replica has replayed past the primary's WAL position sampled after the commit),
    /// `window` (the primary for `read_your_writes_window`), or `off`.
    pub read_your_writes: ReadYourWrites,
    /// Time reads stay on the primary after a write in `window` mode.
    pub read_your_writes_window: Dur,
    /// How a read picks among healthy replicas: `least_outstanding`, `round_robin`,
    /// `random` or `weighted`.
    pub load_balancing: Balance,
    /// This Pake's zone: replicas in the same zone are preferred when healthy.
    pub zone: Option<String>,
    /// Functions that change state beyond the built-in list (nextval, setval,
    /// pg_advisory_*, set_config, txid_current, lo_*, pg_notify…): statements calling them go
    /// to the primary. (Any function the catalog marks VOLATILE does too.)
    pub primary_functions: Vec<String>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            max_replica_lag: LagLimit::Time(Dur::secs(5)),
            ban_time: Dur::secs(30),
            health_check_interval: Dur::millis(250),
            health_check_timeout: Dur::secs(2),
            position_interval: Dur::millis(10),
            read_your_writes: ReadYourWrites::Causal,
            read_your_writes_window: Dur::secs(5),
            load_balancing: Balance::LeastOutstanding,
            zone: None,
            primary_functions: Vec::new(),
        }
    }
}

/// Replica lag limit: replay time or WAL bytes behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagLimit {
    Time(Dur),
    Bytes(u64),
}

impl<'de> Deserialize<'de> for LagLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let t = text.trim();
        let unit: String = t
            .chars()
            .skip_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let unit = unit.trim().to_ascii_lowercase();
        if unit.ends_with('b') {
            units::parse_bytes(t)
                .map(LagLimit::Bytes)
                .map_err(serde::de::Error::custom)
        } else {
            units::parse_duration(t)
                .map(|d| LagLimit::Time(Dur(d)))
                .map_err(serde::de::Error::custom)
        }
    }
}

impl Serialize for LagLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LagLimit::Time(d) => s.serialize_str(&d.to_string()),
            LagLimit::Bytes(b) => s.serialize_str(&Bytes(*b).to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadYourWrites {
    #[default]
    Causal,
    Window,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    LeastOutstanding,
    RoundRobin,
    Random,
    Weighted,
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    /// Where Postgres clients connect (PgBouncer: listen_addr + listen_port).
    pub pg_listen: SocketAddr,
    /// Admin HTTP (`/metrics`, `/health`, `/ready`); empty to disable.
    pub admin_listen: Option<SocketAddr>,
    /// Tokio worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Reactor threads for Postgres clients, each a single-threaded runtime with its own
    /// SO_REUSEPORT listener (as `[redis] threads`); 0: clients on the main runtime.
    pub pg_threads: usize,
    /// `text` (human) or `json` (one object per line).
    pub log_format: LogFormat,
    /// tracing filter, e.g. `info` or `pake=debug`. `RUST_LOG` wins when set.
    pub log_level: String,
    /// Most client connections at once; further clients get 53300.
    pub max_client_conn: usize,
    /// Largest message a client may send; bigger declared lengths get 08P01 before any
    /// memory is reserved.
    pub max_message_size: Bytes,
    /// What all Postgres clients' large messages (each above 256 KiB, up to
    /// `max_message_size`) may hold together while Pake reads them; the client whose message
    /// would pass it gets 53200 and its connection closes, the others go on. Smaller
    /// messages are bounded per client by backpressure and are not counted.
    pub clients_max_memory: Bytes,
    /// Longest statement text the SQL parser analyses (routing, fingerprint). Longer ones
    /// get a token-level fingerprint, go to the primary and are never cached: a parse tree
    /// costs tens of times its text.
    pub max_analyzed_statement_size: Bytes,
    /// Transaction mode LISTEN/NOTIFY: most bytes of notifications waiting for one client to
    /// read them; past it the client is disconnected with 54000 (a notification is at most
    /// ~8 KB, so the default holds at least 128).
    pub listen_queue_size: Bytes,
    /// Default client authentication: `scram-sha-256`, `md5` or `trust`.
    pub auth_type: Method,
    /// Users allowed on the admin console (database `pake`).
    pub admin_users: Vec<String>,
    /// How long SIGTERM waits for transactions to finish before closing clients with 57P01.
    pub shutdown_timeout: Dur,
    /// Transactions (or autocommit statements) per second per user; 0 is unlimited.
    /// Over it, a request gets 53400 and the client stays connected.
    pub rate_limit_per_user: f64,
    /// Transactions per second per client IP address; 0 is unlimited.
    pub rate_limit_per_address: f64,
    /// Bursts allowed above the rates, as seconds' worth of requests.
    pub rate_limit_burst: Dur,
    /// Allow the admin API to inject faults (latency, errors, resets, bandwidth caps).
    /// Off by default: nothing is ever injected unless this is on and a fault is added.
    pub fault_injection: bool,
    /// Most databases served through the wildcard `[[databases]] name = "*"` entry at once
    /// (each has its own pools); past it a login gets 53300. Idle ones make room.
    pub max_wildcard_databases: usize,
    /// PgBouncer's `auth_user`: a `[[users]]` entry Pake logs in as to look up, with
    /// `auth_query`, the password of a client's user that has no `[[users]]` entry of its own.
    /// Empty (the default) turns the lookup off. A database may set its own.
    pub auth_user: String,
    /// The lookup (PgBouncer's `auth_query`): `$1` is the user name, sent as a parameter of the
    /// extended protocol; the first row's second column is the stored secret (a
    /// `SCRAM-SHA-256$…` verifier or an `md5…` hash); no row or NULL refuses the login. The
    /// default skips roles that cannot log in and passwords past VALID UNTIL.
    pub auth_query: String,
    /// The database (a `[[databases]]` name, or one the wildcard entry serves) the lookup runs
    /// in; empty runs it in the client's target database.
    pub auth_dbname: String,
    /// How long a looked-up secret is trusted before the next login looks it up again.
    pub auth_cache_ttl: Dur,
    /// Most looked-up users remembered at once (the oldest make room).
    pub auth_cache_max_entries: usize,
    /// A lookup (connecting as `auth_user` included) slower than this fails the login
    /// with 08006.
    pub auth_query_timeout: Dur,
}

/// PgBouncer's default `auth_query`: the role's password, unless the role cannot log in
/// (no row) or its VALID UNTIL has passed (NULL).
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin";

impl Default for General {
    fn default() -> Self {
        General {
            pg_listen: SocketAddr::from(([127, 0, 0, 1], 6432)),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9930))),
            workers: 0,
            pg_threads: 0,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            max_client_conn: 10_000,
            max_message_size: Bytes(64 << 20),
            clients_max_memory: Bytes(512 << 20),
            max_analyzed_statement_size: Bytes(crate::pg::sql::DEFAULT_MAX_ANALYZED as u64),
            listen_queue_size: Bytes(1 << 20),
            auth_type: Method::ScramSha256,
            admin_users: Vec::new(),
            shutdown_timeout: Dur::secs(30),
            rate_limit_per_user: 0.0,
            rate_limit_per_address: 0.0,
            rate_limit_burst: Dur::secs(1),
            fault_injection: false,
            max_wildcard_databases: 100,
            auth_user: String::new(),
            auth_query: DEFAULT_AUTH_QUERY.into(),
            auth_dbname: String::new(),
            auth_cache_ttl: Dur::secs(60),
            auth_cache_max_entries: 10_000,
            auth_query_timeout: Dur::secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// When a server connection goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// After each transaction (ReadyForQuery with status idle).
    #[default]
    Transaction,
    /// When the client disconnects.
    Session,
}

impl std::fmt::Display for PoolMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        })
    }
}

impl std::str::FromStr for PoolMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "transaction" => Ok(PoolMode::Transaction),
            "session" => Ok(PoolMode::Session),
            _ => Err(format!(
                "pool mode must be transaction or session, not {s:?}"
            )),
        }
    }
}

/// Transaction mode: what happens to a client that leaves session state on its server that
/// cannot follow it to another server (temporary tables, session advisory locks,
/// `DECLARE … WITH HOLD` cursors, SQL `PREPARE`, `LISTEN`). Settings always follow the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// The client keeps its server until the state is gone (or it disconnects).
    #[default]
    Pin,
    /// The statement is refused (SQLSTATE 0A000), so the client never holds a server.
    Error,
    /// The server is reset with `server_reset_query` at the end of the transaction: the
    /// state is lost for the client.
    Reset,
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionState::Pin => "pin",
            SessionState::Error => "error",
            SessionState::Reset => "reset",
        })
    }
}

/// Pool settings shared by every pool unless a database or user overrides them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolDefaults {
    pub pool_mode: PoolMode,
    /// Server connections per (database, user) pool.
    pub pool_size: usize,
    /// Server connections each pool keeps open (warm) even when idle.
    pub min_pool_size: usize,
    /// Extra connections a pool may open beyond `pool_size` for clients that have waited
    /// `reserve_pool_timeout`; closed again when no one waits.
    pub reserve_pool_size: usize,
    /// How long a client waits before the reserve may be used for it.
    pub reserve_pool_timeout: Dur,
    /// How long a client waits for a server before it gets 57014; 0 waits forever.
    pub query_wait_timeout: Dur,
    /// How long connecting and logging in to a server may take.
    pub server_connect_timeout: Dur,
    /// Close a server connection this long after it was opened (when it is next idle).
    pub server_lifetime: Dur,
    /// Close a server connection idle in the pool for this long.
    pub server_idle_timeout: Dur,
    /// Disconnect a client idle inside a transaction for this long (25P03); 0 is off.
    pub idle_transaction_timeout: Dur,
    /// Disconnect a client idle outside a transaction for this long (57P05); 0 is off.
    pub client_idle_timeout: Dur,
    /// A client must finish startup and authentication within this time.
    pub client_login_timeout: Dur,
    /// Run on a server before it is reused when a client left session state on it
    /// (SET, temp tables, advisory locks, LISTEN…), and always at the end of a session.
    pub server_reset_query: String,
    /// Transaction mode: `pin`, `error` or `reset` for session state that cannot follow a
    /// client to another server (see [`SessionState`]).
    pub session_state: SessionState,
    /// Prepared statements kept per server connection in transaction mode; the least
    /// recently used are closed beyond this.
    pub max_prepared_statements: usize,
    /// Consecutive failed connects to a backend that open its circuit breaker (new
    /// connects then fail at once with 57P03); 0 turns the breaker off.
    pub circuit_breaker_failures: u32,
    /// The longest an open breaker fails fast before one probe connect is tried: the first
    /// wait is 100 ms, doubling with every failed probe up to this.
    pub circuit_breaker_cooldown: Dur,
}

impl Default for PoolDefaults {
    fn default() -> Self {
        PoolDefaults {
            pool_mode: PoolMode::Transaction,
            pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Dur::secs(5),
            query_wait_timeout: Dur::secs(120),
            server_connect_timeout: Dur::secs(5),
            server_lifetime: Dur::secs(3600),
            server_idle_timeout: Dur::secs(600),
            idle_transaction_timeout: Dur::secs(0),
            client_idle_timeout: Dur::secs(0),
            client_login_timeout: Dur::secs(60),
            server_reset_query: "DISCARD ALL".into(),
            session_state: SessionState::Pin,
            max_prepared_statements: 500,
            circuit_breaker_failures: 5,
            circuit_breaker_cooldown: Dur::secs(5),
        }
    }
}

/// The `[[databases]]` name that serves every database name without an entry of its own.
pub const WILDCARD_DATABASE: &str = "*";

/// A database clients connect to by `name`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// The name clients put in their connection string.
    pub name: String,
    /// Primary server host (an address or a name).
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// The database name on the server; defaults to `name`.
    #[serde(default)]
    pub dbname: Option<String>,
    /// Log in to the server as this user whatever the client's user (PgBouncer's `user=`).
    #[serde(default)]
    pub server_user: Option<String>,
    /// Password for `server_user`.
    #[serde(default)]
    pub server_password: Option<String>,
    #[serde(default)]
    pub pool_size: Option<usize>,
    #[serde(default)]
    pub pool_mode: Option<PoolMode>,
    /// Overrides `pool.session_state` for this database's pools.
    #[serde(default)]
    pub session_state: Option<SessionState>,
    /// Streaming replicas of this database's primary; read-only statements may go there.
    #[serde(default)]
    pub replicas: Vec<Replica>,
    /// Send read-only statements to replicas (default: yes when there are replicas).
    #[serde(default)]
    pub read_from_replicas: Option<bool>,
    /// Overrides `general.auth_user` for clients of this database.
    #[serde(default)]
    pub auth_user: Option<String>,
    /// Overrides `general.auth_query` for clients of this database.
    #[serde(default)]
    pub auth_query: Option<String>,
    /// Overrides `general.auth_dbname` for clients of this database.
    #[serde(default)]
    pub auth_dbname: Option<String>,
}

/// A streaming replica of a database's primary.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Replica {
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Share of reads under `load_balancing = "weighted"`.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Zone (rack, availability zone): same-zone replicas are preferred.
    #[serde(default)]
    pub zone: Option<String>,
}

fn default_weight() -> u32 {
    100
}

fn default_pg_port() -> u16 {
    5432
}

impl Database {
    /// The database `name` on `host:port`, with no settings of its own.
    pub fn at(name: &str, host: &str, port: u16) -> Database {
        Database {
            name: name.to_string(),
            host: host.to_string(),
            port,
            dbname: None,
            server_user: None,
            server_password: None,
            pool_size: None,
            pool_mode: None,
            session_state: None,
            replicas: Vec::new(),
            read_from_replicas: None,
            auth_user: None,
            auth_query: None,
            auth_dbname: None,
        }
    }

    pub fn server_dbname(&self) -> &str {
        self.dbname.as_deref().unwrap_or(&self.name)
    }
}

/// Where and how the password of a user without a `[[users]]` entry is looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthLookup {
    /// The `[[users]]` entry the lookup logs in as.
    pub auth_user: String,
    pub query: String,
    /// The Pake database name the lookup runs in.
    pub dbname: String,
}

impl Config {
    /// The user lookup for clients of `database` (already resolved), if `auth_user` is set
    /// for it or globally.
    pub fn auth_lookup(&self, database: &Database) -> Option<AuthLookup> {
        let g = &self.general;
        let auth_user = database
            .auth_user
            .clone()
            .unwrap_or_else(|| g.auth_user.clone());
        if auth_user.is_empty() {
            return None;
        }
        let query = database
            .auth_query
            .clone()
            .unwrap_or_else(|| g.auth_query.clone());
        let dbname = database
            .auth_dbname
            .clone()
            .filter(|d| !d.is_empty())
            .or_else(|| Some(g.auth_dbname.clone()).filter(|d| !d.is_empty()))
            .unwrap_or_else(|| database.name.clone());
        Some(AuthLookup {
            auth_user,
            query,
            dbname,
        })
    }
}

/// A user clients log in as.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// Plaintext, `md5…` hash or `SCRAM-SHA-256$…` verifier. Plaintext also lets Pake log in
    /// to servers as this user; with a hash, give `server_password` or a database `server_user`.
    #[serde(default)]
    pub password: Option<String>,
    /// Password Pake uses to log in to servers as this user, when `password` is a hash.
    #[serde(default)]
    pub server_password: Option<String>,
    /// Overrides `general.auth_type` for this user.
    #[serde(default)]
    pub auth_type: Option<Method>,
    #[serde(default)]
    pub pool_size: Option<usize>,
    #[serde(default)]
    pub pool_mode: Option<PoolMode>,
    /// Most client connections for this user at once; 0 is unlimited.
    #[serde(default)]
    pub max_user_connections: usize,
    /// `false` keeps this user's reads on the primary.
    #[serde(default)]
    pub read_from_replicas: Option<bool>,
    /// Overrides `general.rate_limit_per_user` for this user.
    #[serde(default)]
    pub rate_limit: Option<f64>,
}

impl User {
    /// A user with no settings of its own (an `auth_query` user): the pool defaults apply.
    pub fn named(name: &str) -> User {
        User {
            name: name.to_string(),
            password: None,
            server_password: None,
            auth_type: None,
            pool_size: None,
            pool_mode: None,
            max_user_connections: 0,
            read_from_replicas: None,
            rate_limit: None,
        }
    }
}

/// A problem with one key of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// Dotted path to the key, e.g. `databases[1].port`.
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(ConfigError),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigError>),
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config = Config::parse(&text).map_err(LoadError::Parse)?;
        config.validate().map_err(LoadError::Invalid)?;
        Ok(config)
    }

    /// Parse TOML text; the error names the key path (`pool.pool_size`) and the reason.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new("(file)", e.to_string().trim().to_string()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let reason = e.inner().message().trim().to_string();
            let span = e
                .inner()
                .span()
                .map(|s| line_of(text, s.start))
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            ConfigError::new(
                if key == "." { "(file)".into() } else { key },
                format!("{reason}{span}"),
            )
        })
    }

    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.iter().find(|d| d.name == name)
    }

    /// The database a client names: its own entry, or else the wildcard entry
    /// (`name = "*"`, PgBouncer's fallback) serving that name on its server.
    pub fn resolve_database(&self, name: &str) -> Option<std::borrow::Cow<'_, Database>> {
        if name.is_empty() || name == WILDCARD_DATABASE {
            return None;
        }
        if let Some(db) = self.database(name) {
            return Some(std::borrow::Cow::Borrowed(db));
        }
        let wild = self.database(WILDCARD_DATABASE)?;
        Some(std::borrow::Cow::Owned(Database {
            name: name.to_string(),
            dbname: None,
            ..wild.clone()
        }))
    }

    /// `name` is served through the wildcard entry, not one of its own.
    pub fn is_wildcard_database(&self, name: &str) -> bool {
        self.database(name).is_none() && self.database(WILDCARD_DATABASE).is_some()
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The effective settings of the (database, user) pool.
    pub fn pool_settings(&self, db: &Database, user: &User) -> PoolSettings {
        PoolSettings {
            read_from_replicas: !db.replicas.is_empty()
                && user.read_from_replicas.unwrap_or(true)
                && db.read_from_replicas.unwrap_or(true),
            mode: user
                .pool_mode
                .or(db.pool_mode)
                .unwrap_or(self.pool.pool_mode),
            size: user
                .pool_size
                .or(db.pool_size)
                .unwrap_or(self.pool.pool_size),
            session_state: db.session_state.unwrap_or(self.pool.session_state),
            defaults: self.pool.clone(),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|t| t.bytes().filter(|&b| b == b'\n').count() + 1)
        .unwrap_or(0)
}

/// The resolved settings of one pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub mode: PoolMode,
    /// Read-only statements may go to replicas.
    pub read_from_replicas: bool,
    pub size: usize,
    /// `pool.session_state`, or the database's own.
    pub session_state: SessionState,
    pub defaults: PoolDefaults,
}
