//! The Redis back end: `fred` pools for the shared path, and the topology Pake needs for
//! everything else (which primary serves a slot, for dedicated links and tracking).
//!
//! fred does slot routing, MOVED/ASK redirection, slot-map refresh and reconnection; Pake
//! hands it each command with the slot it computed from the command table
//! (`ClusterHash::Custom`), so fred never guesses where keys are. There is one pool per
//! (ACL user, database, protocol): a client's `AUTH` or `HELLO … AUTH` is forwarded by
//! logging a pool in as that user, so Redis itself accepts or refuses the credentials, and
//! RESP3 clients get replies from RESP3 connections (no lossy conversion).

pub mod link;

use super::config::RedisConfig;
use super::error::Error;
use super::l1::ALL_SLOTS;
use super::resp::encode::Proto;
use fred::clients::Pool;
use fred::interfaces::{ClientLike, ClusterInterface};
use fred::types::config::{Config as FredConfig, ReconnectPolicy, ServerConfig};
use fred::types::{Builder, RespVersion};
use link::{Link, Target};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Which pool serves a client: its ACL identity, database and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// `(user, password)` after AUTH; `None` uses the URL's credentials.
    pub auth: Option<(String, String)>,
    pub db: u8,
    pub proto: Proto,
}

/// A primary and the slot ranges it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    pub addr: String,
    pub slots: Vec<(u16, u16)>,
}

pub struct Backend {
    base: FredConfig,
    pub cluster: bool,
    /// `redis_version` of the seed node, reported in HELLO.
    pub version: String,
    pool_size: usize,
    connect_timeout: Duration,
    command_timeout: Duration,
    seed: String,
    pools: RwLock<HashMap<PoolKey, Arc<Pool>>>,
    /// Serialises pool creation so concurrent logins of one user build one pool.
    creating: tokio::sync::Mutex<()>,
}

fn server_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Backend {
    /// Parse the URL, find out (or take) whether it is a cluster, and connect the default
    /// pool. Fails when Redis cannot be reached: Pake then refuses to start.
    pub async fn connect(cfg: &RedisConfig) -> Result<Arc<Backend>, Error> {
        let mut base = FredConfig::from_url(&cfg.url)
            .map_err(|e| Error::Backend(format!("invalid Redis URL: {e}")))?;
        let seed = match &base.server {
            ServerConfig::Centralized { server } => server_addr(&server.host, server.port),
            ServerConfig::Clustered { hosts, .. } => hosts
                .first()
                .map(|s| server_addr(&s.host, s.port))
                .ok_or_else(|| Error::Backend("the URL names no host".into()))?,
            _ => return Err(Error::Backend("only redis:// URLs are supported".into())),
        };
        let connect_timeout = cfg.connect_timeout.0;
        let (detected, version) = probe(&seed, &base, connect_timeout).await?;
        let cluster = cfg.cluster.unwrap_or(detected);
        if cluster {
            if let ServerConfig::Centralized { server } = &base.server {
                base.server =
                    ServerConfig::new_clustered(vec![(server.host.to_string(), server.port)]);
            }
        }
        let backend = Arc::new(Backend {
            base,
            cluster,
            version,
            pool_size: cfg.pool_size,
            connect_timeout,
            command_timeout: cfg.command_timeout.0,
            seed,
            pools: RwLock::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
        });
        backend.pool(&backend.default_key(Proto::Resp2)).await?;
        Ok(backend)
    }

    pub fn default_db(&self) -> u8 {
        self.base.database.unwrap_or(0)
    }

    pub fn default_key(&self, proto: Proto) -> PoolKey {
        PoolKey {
            auth: None,
            db: self.default_db(),
            proto,
        }
    }

    /// The pool for `key`, created and logged in on first use. A login Redis refuses is
    /// returned as its error (WRONGPASS…), and no pool is kept.
    pub async fn pool(&self, key: &PoolKey) -> Result<Arc<Pool>, Error> {
        if let Some(p) = self.pools.read().get(key) {
            return Ok(p.clone());
        }
        let _guard = self.creating.lock().await;
        if let Some(p) = self.pools.read().get(key) {
            return Ok(p.clone());
        }
        let pool = Arc::new(self.build_pool(key)?);
        for client in pool.clients() {
            let init = tokio::time::timeout(self.connect_timeout, client.init()).await;
            let failure = match init {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(Error::Backend(e.details().to_string())),
                Err(_) => Some(Error::Backend(format!(
                    "connecting to {} timed out",
                    self.seed
                ))),
            };
            if let Some(e) = failure {
                let _ = pool.quit().await;
                return Err(e);
            }
        }
        self.pools.write().insert(key.clone(), pool.clone());
        Ok(pool)
    }

    fn build_pool(&self, key: &PoolKey) -> Result<Pool, Error> {
        let mut config = self.base.clone();
        if let Some((user, pass)) = &key.auth {
            config.username = Some(user.clone());
            config.password = Some(pass.clone());
        }
        config.database = (key.db != 0).then_some(key.db);
        config.version = match key.proto {
            Proto::Resp2 => RespVersion::RESP2,
            Proto::Resp3 => RespVersion::RESP3,
        };
        config.fail_fast = true;
        let command_timeout = self.command_timeout;
        let connect_timeout = self.connect_timeout;
        Builder::from_config(config)
            .with_performance_config(|p| {
                p.default_command_timeout = command_timeout;
            })
            .with_connection_config(|c| {
                c.connection_timeout = connect_timeout;
                c.internal_command_timeout = connect_timeout;
                c.max_command_attempts = 3;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .build_pool(self.pool_size)
            .map_err(|e| Error::Backend(e.details().to_string()))
    }

    /// The primaries and their slots, as fred last saw them (the seed alone, with every
    /// slot, for a standalone server).
    pub fn primaries(&self) -> Vec<Primary> {
        if !self.cluster {
            return vec![Primary {
                addr: self.seed.clone(),
                slots: ALL_SLOTS.to_vec(),
            }];
        }
        let Some(pool) = self
            .pools
            .read()
            .get(&self.default_key(Proto::Resp2))
            .cloned()
        else {
            return Vec::new();
        };
        let Some(state) = pool
            .clients()
            .first()
            .and_then(|c| c.cached_cluster_state())
        else {
            return Vec::new();
        };
        let mut by_node: HashMap<String, Vec<(u16, u16)>> = HashMap::new();
        for range in state.slots() {
            let addr = server_addr(&range.primary.host, range.primary.port);
            by_node
                .entry(addr)
                .or_default()
                .push((range.start, range.end));
        }
        let mut out: Vec<Primary> = by_node
            .into_iter()
            .map(|(addr, mut slots)| {
                slots.sort_unstable();
                Primary { addr, slots }
            })
            .collect();
        out.sort_by(|a, b| a.addr.cmp(&b.addr));
        out
    }

    /// The primary serving `slot` (any primary when `slot` is `None`).
    pub fn node_for(&self, slot: Option<u16>) -> Option<String> {
        let primaries = self.primaries();
        match slot {
            None => primaries.into_iter().next().map(|p| p.addr),
            Some(s) => primaries
                .into_iter()
                .find(|p| p.slots.iter().any(|&(a, b)| (a..=b).contains(&s)))
                .map(|p| p.addr),
        }
    }

    /// Connection details for a dedicated link to `addr` as the pool `key` logs in.
    pub fn target(&self, addr: String, key: &PoolKey) -> Target {
        let (username, password) = match &key.auth {
            Some((u, p)) => (Some(u.clone()), Some(p.clone())),
            None => (self.base.username.clone(), self.base.password.clone()),
        };
        Target {
            addr,
            username,
            password,
            db: key.db,
            proto: key.proto,
            connect_timeout: self.connect_timeout,
        }
    }

    /// Ask Redis for the cluster's primaries (used when fred has not learnt them yet).
    pub async fn refresh(&self) {
        let pool = self
            .pools
            .read()
            .get(&self.default_key(Proto::Resp2))
            .cloned();
        if let Some(pool) = pool {
            if let Some(c) = pool.clients().first() {
                let _ = c.sync_cluster().await;
            }
        }
    }

    /// Close every pool.
    pub async fn close(&self) {
        let pools: Vec<Arc<Pool>> = self.pools.write().drain().map(|(_, p)| p).collect();
        for p in pools {
            let _ = p.quit().await;
        }
    }

    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }
}

/// Ask the seed whether it is a cluster node, and its version.
async fn probe(seed: &str, base: &FredConfig, timeout: Duration) -> Result<(bool, String), Error> {
    let target = Target {
        addr: seed.to_string(),
        username: base.username.clone(),
        password: base.password.clone(),
        db: 0,
        proto: Proto::Resp2,
        connect_timeout: timeout,
    };
    let mut link = Link::connect(&target).await.map_err(|e| {
        Error::Backend(format!(
            "cannot reach Redis to tell standalone from cluster ({e}); pass --redis-cluster or fix the URL"
        ))
    })?;
    let info = link.call_ok(&[b"INFO"]).await?;
    let info = String::from_utf8_lossy(&info);
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let cluster = field("cluster_enabled:").as_deref() == Some("1");
    let version = field("redis_version:").unwrap_or_else(|| "unknown".into());
    Ok((cluster, version))
}
