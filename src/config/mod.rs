//! Typed configuration: one TOML file (`config/pake.toml`), or a quick start built from CLI
//! flags. Every struct rejects unknown keys; [`Config::load`] and [`Config::validate`] name the
//! offending key and say why, so `pake check-config` is useful on its own.
//!
//! Setting names follow PgBouncer where PgBouncer has the setting (`pool_size`,
//! `max_client_conn`, `server_lifetime`, `query_wait_timeout`…): its users should feel at home.

pub mod peering;
pub mod units;

use crate::pg::auth::Method;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// `text` (human) or `json` (one object per line).
    pub log_format: LogFormat,
    /// tracing filter, e.g. `info` or `pake=debug`. `RUST_LOG` wins when set.
    pub log_level: String,
    /// Most client connections at once; further clients get 53300.
    pub max_client_conn: usize,
    /// Largest message a client may send; bigger declared lengths get 08P01 before any
    /// memory is reserved.
    pub max_message_size: Bytes,
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
}

impl Default for General {
    fn default() -> Self {
        General {
            pg_listen: SocketAddr::from(([127, 0, 0, 1], 6432)),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9930))),
            workers: 0,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            max_client_conn: 10_000,
            max_message_size: Bytes(64 << 20),
            auth_type: Method::ScramSha256,
            admin_users: Vec::new(),
            shutdown_timeout: Dur::secs(30),
            rate_limit_per_user: 0.0,
            rate_limit_per_address: 0.0,
            rate_limit_burst: Dur::secs(1),
            fault_injection: false,
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
            max_prepared_statements: 500,
            circuit_breaker_failures: 5,
            circuit_breaker_cooldown: Dur::secs(5),
        }
    }
}

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
    /// Streaming replicas of this database's primary; read-only statements may go there.
    #[serde(default)]
    pub replicas: Vec<Replica>,
    /// Send read-only statements to replicas (default: yes when there are replicas).
    #[serde(default)]
    pub read_from_replicas: Option<bool>,
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
    pub fn server_dbname(&self) -> &str {
        self.dbname.as_deref().unwrap_or(&self.name)
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

    /// Check cross-field rules; every problem found is reported, not just the first.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        self.peering.validate(&mut errs);
        if let Some(redis) = &self.redis {
            errs.extend(redis.validate());
        }
        if self.databases.is_empty() && self.redis.is_none() {
            errs.push(ConfigError::new(
                "databases",
                "at least one [[databases]] entry (or a [redis] section) is needed",
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
        validate_tls(&self.tls, &mut errs);
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
        errs.extend(self.insight.validate());
        errs.extend(self.otlp.validate());
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.iter().find(|d| d.name == name)
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
            defaults: self.pool.clone(),
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
    pub defaults: PoolDefaults,
}

/// What `pake serve` takes on the command line instead of (or on top of) a file.
#[derive(Debug, Clone, Default)]
pub struct QuickStart {
    pub pg_listen: Option<SocketAddr>,
    /// `postgres://USER:PASS@HOST:PORT/DB`
    pub pg_primary: Option<String>,
    /// Streaming replicas of the primary (host and port are used; same user and database).
    pub pg_replicas: Vec<String>,
    pub pool_size: Option<usize>,
    pub pool_mode: Option<PoolMode>,
    pub admin_listen: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub workers: Option<usize>,
    pub auth_type: Option<Method>,
    /// `--redis-listen`: where Redis clients connect (turns the Redis proxy on).
    pub redis_listen: Option<SocketAddr>,
    /// `--redis URL`: the Redis (standalone, or any node of a cluster) to front.
    pub redis_url: Option<String>,
    /// `--redis-cluster`: the URL is a cluster node (otherwise detected).
    pub redis_cluster: bool,
    /// `--redis-tls-ca-file`: the CA a `rediss://` URL's nodes must chain to.
    pub redis_tls_ca_file: Option<PathBuf>,
    /// `--otlp-endpoint URL`: export transaction spans to this OTLP/HTTP collector.
    pub otlp_endpoint: Option<String>,
    /// `--redis-sentinel HOST:PORT[,HOST:PORT…]`: find the primary through these sentinels.
    pub redis_sentinels: Vec<String>,
    /// `--redis-master NAME`: the name the sentinels monitor the primary under.
    pub redis_master: Option<String>,
}

impl QuickStart {
    /// Apply the flags on top of `base` (a file, or defaults). `--pg-primary` adds the
    /// database and user it names; clients then log in with the URL's user and password.
    pub fn apply(&self, mut base: Config) -> Result<Config, ConfigError> {
        if let Some(a) = self.pg_listen {
            base.general.pg_listen = a;
        }
        if let Some(a) = self.admin_listen {
            base.general.admin_listen = Some(a);
        }
        if let Some(f) = self.log_format {
            base.general.log_format = f;
        }
        if let Some(w) = self.workers {
            base.general.workers = w;
        }
        if let Some(m) = self.auth_type {
            base.general.auth_type = m;
        }
        if let Some(url) = &self.pg_primary {
            let target = parse_url(url).map_err(|r| ConfigError::new("--pg-primary", r))?;
            if target.password.is_none() && base.general.auth_type != Method::Trust {
                return Err(ConfigError::new(
                    "--pg-primary",
                    "the URL has no password: clients log in to Pake with the URL's user and password (or pass --auth-type trust)",
                ));
            }
            let mut replicas = Vec::new();
            for url in &self.pg_replicas {
                let r = parse_url(url).map_err(|r| ConfigError::new("--pg-replica", r))?;
                replicas.push(Replica {
                    host: r.host,
                    port: r.port,
                    weight: default_weight(),
                    zone: None,
                });
            }
            base.databases.retain(|d| d.name != target.dbname);
            base.databases.push(Database {
                name: target.dbname.clone(),
                host: target.host,
                port: target.port,
                dbname: None,
                server_user: None,
                server_password: None,
                pool_size: None,
                pool_mode: None,
                replicas,
                read_from_replicas: None,
            });
            base.users.retain(|u| u.name != target.user);
            base.users.push(User {
                name: target.user.clone(),
                password: target.password,
                server_password: None,
                auth_type: None,
                pool_size: None,
                pool_mode: None,
                max_user_connections: 0,
                read_from_replicas: None,
                rate_limit: None,
            });
            if !base.general.admin_users.contains(&target.user) {
                base.general.admin_users.push(target.user);
            }
        }
        if self.pg_primary.is_none() && !self.pg_replicas.is_empty() {
            return Err(ConfigError::new(
                "--pg-replica",
                "needs --pg-primary (replicas belong to the primary's database)",
            ));
        }
        if self.redis_url.is_some()
            || self.redis_listen.is_some()
            || self.redis_cluster
            || self.redis_tls_ca_file.is_some()
            || !self.redis_sentinels.is_empty()
            || self.redis_master.is_some()
        {
            let redis = base.redis.get_or_insert_with(Default::default);
            if !self.redis_sentinels.is_empty() {
                redis.sentinels = self.redis_sentinels.clone();
            }
            if let Some(name) = &self.redis_master {
                redis.sentinel_master = Some(name.clone());
            }
            if !self.redis_sentinels.is_empty() && redis.sentinel_master.is_none() {
                return Err(ConfigError::new(
                    "--redis-master",
                    "needed with --redis-sentinel: the name the sentinels monitor the primary under",
                ));
            }
            if self.redis_master.is_some() && redis.sentinels.is_empty() {
                return Err(ConfigError::new(
                    "--redis-sentinel",
                    "needed with --redis-master: the sentinels to ask (HOST:PORT[,HOST:PORT…])",
                ));
            }
            if let Some(url) = &self.redis_url {
                redis.url = url.clone();
            }
            if let Some(a) = self.redis_listen {
                redis.listen = a;
            }
            if self.redis_cluster {
                redis.cluster = Some(true);
            }
            if let Some(ca) = &self.redis_tls_ca_file {
                redis.server_tls_ca_file = Some(ca.clone());
            }
        }
        if let Some(url) = &self.otlp_endpoint {
            base.otlp.enabled = true;
            base.otlp.endpoint = url.clone();
        }
        if let Some(n) = self.pool_size {
            base.pool.pool_size = n;
        }
        if let Some(m) = self.pool_mode {
            base.pool.pool_mode = m;
        }
        Ok(base)
    }
}

/// The parts of a `postgres://` URL Pake needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
}

/// Parse a libpq-style URL (or key=value string) with tokio-postgres's parser.
pub fn parse_url(url: &str) -> Result<UrlTarget, String> {
    use tokio_postgres::config::Host;
    let cfg: tokio_postgres::Config = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let user = cfg
        .get_user()
        .ok_or("the URL must name a user (postgres://USER:PASS@HOST:PORT/DB)")?
        .to_string();
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => {
            return Err(format!("unix socket hosts are not supported yet ({p:?})"))
        }
        None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let password = cfg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let dbname = cfg.get_dbname().unwrap_or(&user).to_string();
    Ok(UrlTarget {
        host,
        port,
        user,
        password,
        dbname,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[general]
pg_listen = "127.0.0.1:7432"
max_client_conn = 100
admin_users = ["admin"]

[pool]
pool_size = 5
query_wait_timeout = "2s"

[[databases]]
name = "app"
host = "127.0.0.1"
port = 5433
pool_mode = "session"

[[databases]]
name = "reports"
host = "db2"
dbname = "warehouse"

[[users]]
name = "admin"
password = "pw"

[[users]]
name = "app"
password = "md5a6343a68d964ca596d9752250d54bb8a"
auth_type = "md5"
pool_size = 9
"#;

    #[test]
    fn parses_and_validates_a_good_file() {
        let c = Config::parse(GOOD).unwrap();
        c.validate().unwrap();
        assert_eq!(c.general.pg_listen.port(), 7432);
        assert_eq!(c.pool.query_wait_timeout, Dur::secs(2));
        let db = c.database("app").unwrap();
        let user = c.user("app").unwrap();
        let s = c.pool_settings(db, user);
        assert_eq!((s.mode, s.size), (PoolMode::Session, 9));
        assert_eq!(c.database("reports").unwrap().server_dbname(), "warehouse");
        assert_eq!(c.database("reports").unwrap().port, 5432);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[pool]\npoolsize = 3\n").unwrap_err();
        assert_eq!(e.key, "pool.poolsize");
        assert!(e.reason.contains("unknown field"), "{e}");
        let e = Config::parse("[pool]\npool_size = \"many\"\n").unwrap_err();
        assert_eq!(e.key, "pool.pool_size");
        assert!(e.reason.contains("line 2"), "{e}");
        let e = Config::parse("[pool]\nquery_wait_timeout = \"5 parsecs\"\n").unwrap_err();
        assert_eq!(e.key, "pool.query_wait_timeout");
    }

    #[test]
    fn cross_field_rules_name_keys() {
        let mut c = Config::parse(GOOD).unwrap();
        c.databases[1].name = "app".into();
        c.users[1].auth_type = Some(Method::ScramSha256);
        c.general.admin_users.push("nobody".into());
        c.databases[0].port = 0;
        let errs = c.validate().unwrap_err();
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"databases[1].name"), "{keys:?}");
        assert!(keys.contains(&"databases[0].port"), "{keys:?}");
        assert!(keys.contains(&"users[1].password"), "{keys:?}");
        assert!(keys.contains(&"general.admin_users[1]"), "{keys:?}");
    }

    #[test]
    fn quick_start_from_url() {
        let q = QuickStart {
            pg_primary: Some("postgres://alice:s3cret@db.example:5433/shop".into()),
            pool_size: Some(7),
            ..QuickStart::default()
        };
        let c = q.apply(Config::default()).unwrap();
        c.validate().unwrap();
        let db = c.database("shop").unwrap();
        assert_eq!((db.host.as_str(), db.port), ("db.example", 5433));
        assert_eq!(c.user("alice").unwrap().password.as_deref(), Some("s3cret"));
        assert_eq!(c.pool.pool_size, 7);
        assert_eq!(c.general.admin_users, vec!["alice".to_string()]);
        let no_pw = QuickStart {
            pg_primary: Some("postgres://alice@db/shop".into()),
            ..QuickStart::default()
        };
        assert_eq!(
            no_pw.apply(Config::default()).unwrap_err().key,
            "--pg-primary"
        );
        assert!(!c.otlp.enabled, "trace export is off unless asked for");
        let traced = QuickStart {
            otlp_endpoint: Some("http://collector:4318".into()),
            ..q
        };
        let c = traced.apply(Config::default()).unwrap();
        c.validate().unwrap();
        assert!(c.otlp.enabled);
        assert_eq!(
            c.otlp.traces_url().unwrap().to_string(),
            "http://collector:4318/v1/traces"
        );
        let bad = QuickStart {
            otlp_endpoint: Some("https://collector:4318".into()),
            ..traced
        };
        let keys: Vec<String> = bad
            .apply(Config::default())
            .unwrap()
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["otlp.endpoint"]);
    }

    #[test]
    fn routing_settings() {
        let c = Config::parse(
            "[routing]\nmax_replica_lag = \"64MiB\"\nload_balancing = \"round_robin\"\n\n[[databases]]\nname = \"a\"\nhost = \"p\"\nreplicas = [{ host = \"r1\", weight = 3, zone = \"eu\" }, { host = \"r2\", port = 5433 }]\n",
        )
        .unwrap();
        assert_eq!(c.routing.max_replica_lag, LagLimit::Bytes(64 << 20));
        assert_eq!(c.routing.load_balancing, Balance::RoundRobin);
        assert_eq!(c.databases[0].replicas[1].port, 5433);
        let c = Config::parse("[routing]\nmax_replica_lag = \"1500ms\"\n").unwrap();
        assert_eq!(c.routing.max_replica_lag, LagLimit::Time(Dur::millis(1500)));
        assert!(Config::parse("[routing]\nmax_replica_lag = \"lots\"\n").is_err());
        let q = QuickStart {
            pg_primary: Some("postgres://u:p@h:5432/d".into()),
            pg_replicas: vec!["postgres://u:p@r:5434/d".into()],
            ..QuickStart::default()
        };
        let c = q.apply(Config::default()).unwrap();
        assert_eq!(c.databases[0].replicas[0].port, 5434);
        let s = c.pool_settings(&c.databases[0], &c.users[0]);
        assert!(s.read_from_replicas);
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let text = include_str!("../../config/pake.toml");
        let c = Config::parse(text).unwrap();
        c.validate().unwrap();
        assert!(c.databases.len() >= 2 && c.users.len() >= 2);
        assert_eq!(c.insight.slow_query_threshold, Dur::millis(250));
        assert!(c.insight.redact_parameters);
        assert!(c.redis.as_ref().is_some_and(|r| r.l1), "[redis] example");
        assert_eq!(
            c.otlp,
            crate::obs::otlp::OtlpConfig::default(),
            "[otlp] example"
        );
    }

    #[test]
    fn redis_quick_start_and_validation() {
        let q = QuickStart {
            redis_url: Some("redis://10.0.0.5:7000".into()),
            redis_cluster: true,
            ..QuickStart::default()
        };
        let c = q.apply(Config::default()).unwrap();
        c.validate().unwrap();
        let r = c.redis.as_ref().unwrap();
        assert_eq!(
            (r.url.as_str(), r.cluster),
            ("redis://10.0.0.5:7000", Some(true))
        );
        assert_eq!(r.listen.port(), 6380);
        let e = Config::parse("[redis]\nl1_max_bytes = \"1MiB\"\nl1_maxttl = 3\n").unwrap_err();
        assert_eq!(e.key, "redis.l1_maxttl");
        let mut c = Config::parse("[redis]\npool_size = 0\n").unwrap();
        let keys: Vec<String> = c
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, vec!["redis.pool_size"]);
        c.redis = None;
        assert!(c.validate().is_err(), "neither databases nor redis");
    }

    #[test]
    fn redis_sentinel_quick_start() {
        let q = QuickStart {
            redis_sentinels: vec!["10.0.0.1:26379".into(), "10.0.0.2:26379".into()],
            redis_master: Some("mymaster".into()),
            ..QuickStart::default()
        };
        let c = q.apply(Config::default()).unwrap();
        c.validate().unwrap();
        let r = c.redis.as_ref().unwrap();
        assert_eq!(r.sentinels.len(), 2);
        assert_eq!(r.sentinel_master.as_deref(), Some("mymaster"));
        let half = QuickStart {
            redis_sentinels: vec!["10.0.0.1:26379".into()],
            ..QuickStart::default()
        };
        assert_eq!(
            half.apply(Config::default()).unwrap_err().key,
            "--redis-master"
        );
        let half = QuickStart {
            redis_master: Some("m".into()),
            ..QuickStart::default()
        };
        assert_eq!(
            half.apply(Config::default()).unwrap_err().key,
            "--redis-sentinel"
        );
        // the file may name the master and the flag the sentinels
        let file = Config::parse("[redis]\nsentinel_master = \"m\"\n").unwrap();
        let c = QuickStart {
            redis_sentinels: vec!["s:26379".into()],
            ..QuickStart::default()
        }
        .apply(file)
        .unwrap();
        c.validate().unwrap();
        let e = Config::parse("[redis]\nsentinels = [\"s:1\"]\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e[0].key, "redis.sentinel_master");
    }
}
