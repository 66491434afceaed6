//! `pake serve` flags (`--pg-primary`, `--redis-listen`…) applied on top of a file or the
//! defaults, and the libpq URL parsing behind them.

use super::{default_weight, Config, ConfigError, Database, LogFormat, PoolMode, Replica, User};
use crate::pg::auth::Method;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// `--pg-threads`: reactor threads for Postgres clients.
    pub pg_threads: Option<usize>,
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
        if let Some(t) = self.pg_threads {
            base.general.pg_threads = t;
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
            let db = Database {
                replicas,
                ..Database::at(&target.dbname, &target.host, target.port)
            };
            // the server serves any database name too (created at run time, `postgres`…)
            if base.database(super::WILDCARD_DATABASE).is_none() {
                base.databases.push(Database {
                    name: super::WILDCARD_DATABASE.into(),
                    ..db.clone()
                });
            }
            base.databases.push(db);
            base.users.retain(|u| u.name != target.user);
            base.users.push(User {
                password: target.password,
                ..User::named(&target.user)
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
