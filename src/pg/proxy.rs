//! State shared by every Postgres client session: the config snapshot, users and their
//! secrets, the pools, the cancel registry, the statement analyser and metrics.

use super::auth::{Method, Secret};
use super::cancel::CancelRegistry;
use super::cluster::Cluster;
use super::error::Error;
use super::pool::{Pool, PoolCounts, PoolKey};
use super::prepared::Registry;
use super::route::Topology;
use super::sql::Analyzer;
use crate::config::{Config, User};
use crate::obs::metrics::Metrics;
use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// A configured user with its derived secret.
#[derive(Debug)]
pub struct UserEntry {
    pub config: User,
    pub secret: Secret,
    pub method: Method,
    /// Found with `auth_query` (at `looked_up_at`), not configured: servers are logged in
    /// to without its password ([`super::passthrough`]).
    pub looked_up: bool,
    pub looked_up_at: Option<std::time::Instant>,
}

/// Lifecycle of the proxy, broadcast to every session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// Stop taking new work; sessions end at their next transaction boundary.
    Draining,
    /// Close every session now (57P01).
    Closing,
}

pub struct Proxy {
    pub(super) config: ArcSwap<Config>,
    pub(super) tls: ArcSwap<crate::tls::Tls>,
    pub(super) users: ArcSwap<HashMap<String, Arc<UserEntry>>>,
    pub(super) clusters: RwLock<HashMap<PoolKey, Arc<Cluster>>>,
    pub(super) topologies: Mutex<HashMap<String, Arc<Topology>>>,
    /// Per database: the listening connection of transaction-mode LISTEN/NOTIFY.
    pub(super) listeners: Mutex<HashMap<String, Arc<super::notify::Listener>>>,
    pub cancel: CancelRegistry,
    /// Users without a `[[users]]` entry, looked up with `auth_query`.
    pub auth_query: super::auth_query::AuthQuery,
    /// Shared with the OTLP exporter, which looks fingerprint texts up off the request path.
    pub analyzer: Arc<Analyzer>,
    pub statements: Registry,
    pub metrics: Arc<Metrics>,
    /// Injected faults (admin API), shared with the Redis side.
    pub faults: Arc<crate::faults::Faults>,
    /// Query insight: per-statement statistics, slow plans, index advice.
    pub insight: Arc<crate::insight::Insight>,
    /// The OTLP trace exporter, when `[otlp]` is enabled; replaced by a RELOAD that changes
    /// the section (sessions take the new one at their next transaction boundary).
    pub(super) otlp: arc_swap::ArcSwapOption<crate::obs::otlp::Tracer>,
    /// The Redis side, when configured (for the console's SHOW CACHE).
    pub redis: std::sync::OnceLock<Arc<crate::redis::Service>>,
    clients: AtomicUsize,
    next_client: AtomicU64,
    per_user: Mutex<HashMap<String, usize>>,
    phase: watch::Sender<Phase>,
    paused_all: Mutex<bool>,
    paused_dbs: Mutex<std::collections::HashSet<String>>,
    /// Where RELOAD re-reads the config, and the command-line flags applied on top.
    pub(super) source: Mutex<Option<ConfigSource>>,
    pub(super) generation: AtomicU64,
    /// Held from a reload's validation to its drain (and by the build at start): two
    /// reloads (SIGHUP and the console) never plan against the same running pools.
    pub(super) reloading: tokio::sync::Mutex<()>,
    pub(super) breakers: Mutex<HashMap<String, Arc<crate::pg::limits::Breaker>>>,
    rate: crate::pg::limits::RateLimiter,
    pub(super) rate_limits_on: std::sync::atomic::AtomicBool,
    /// `general.clients_max_memory`: what clients' large messages hold together.
    pub memory: Arc<crate::limits::MemoryBudget>,
}

pub(super) fn any_rate_limit(c: &Config) -> bool {
    c.general.rate_limit_per_user > 0.0
        || c.general.rate_limit_per_address > 0.0
        || c.users
            .iter()
            .any(|u| u.rate_limit.is_some_and(|r| r > 0.0))
}

/// Where the configuration came from, so RELOAD can read it again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: Option<std::path::PathBuf>,
    pub overrides: crate::config::QuickStart,
}

impl Proxy {
    /// Build the shared state; fails when the TLS certificates cannot be loaded.
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        faults: Arc<crate::faults::Faults>,
    ) -> Result<Arc<Proxy>, crate::tls::TlsError> {
        let users = build_users(&config);
        let tls = crate::tls::Tls::build(&config.tls)?;
        let rate_limits_on = any_rate_limit(&config);
        let analyzer = Arc::new(Analyzer::new());
        let cancel = CancelRegistry::new(&config.peering);
        analyzer.set_max_analyzed(config.general.max_analyzed_statement_size.0 as usize);
        let otlp = crate::obs::otlp::Tracer::start(&config.otlp, &metrics, analyzer.clone());
        Ok(Arc::new(Proxy {
            memory: crate::limits::MemoryBudget::new(config.general.clients_max_memory.0 as usize),
            otlp: arc_swap::ArcSwapOption::new(otlp),
            tls: ArcSwap::from_pointee(tls),
            insight: crate::insight::Insight::new(config.insight.clone(), &metrics.registry),
            faults,
            redis: std::sync::OnceLock::new(),
            config: ArcSwap::from_pointee(config),
            users: ArcSwap::from_pointee(users),
            clusters: RwLock::new(HashMap::new()),
            topologies: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
            cancel,
            auth_query: Default::default(),
            analyzer,
            statements: Registry::default(),
            metrics,
            clients: AtomicUsize::new(0),
            next_client: AtomicU64::new(1),
            per_user: Mutex::new(HashMap::new()),
            phase: watch::channel(Phase::Running).0,
            paused_all: Mutex::new(false),
            paused_dbs: Mutex::new(std::collections::HashSet::new()),
            source: Mutex::new(None),
            generation: AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
            breakers: Mutex::new(HashMap::new()),
            rate: crate::pg::limits::RateLimiter::default(),
            rate_limits_on: std::sync::atomic::AtomicBool::new(rate_limits_on),
        }))
    }

    /// The TLS state (acceptor for clients, connector for servers).
    pub fn tls(&self) -> Arc<crate::tls::Tls> {
        self.tls.load_full()
    }

    /// The OTLP trace exporter, when export is on.
    pub fn otlp(&self) -> Option<Arc<crate::obs::otlp::Tracer>> {
        self.otlp.load_full()
    }

    /// Shutdown, after the sessions: stop trace export, sending what is queued first.
    pub async fn finish_otlp(&self) {
        if let Some(tracer) = self.otlp.swap(None) {
            let config = self.config();
            let limit = config.otlp.export_timeout.0 + config.otlp.export_interval.0;
            crate::obs::otlp::Tracer::finish(tracer, limit).await;
        }
    }

    /// The current configuration snapshot (cheap: an `Arc`).
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn user(&self, name: &str) -> Option<Arc<UserEntry>> {
        self.users.load().get(name).cloned()
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// Close the idle pooled servers connected to server database `dbname` (every user,
    /// primary and replicas), and auth_query's idle lookup connection there: a client's
    /// `DROP DATABASE`/`ALTER DATABASE … RENAME`/`CREATE DATABASE … TEMPLATE` would otherwise
    /// fail on sessions it cannot see. Servers in use by other clients stay, and
    /// the statement fails as it would directly while those clients are connected.
    pub fn close_idle_servers(&self, dbname: &str) {
        let clusters: Vec<Arc<Cluster>> = self.clusters.read().values().cloned().collect();
        // auth_query's lookup connection there, if any (the lookup runs in the client's
        // database unless auth_dbname names another)
        let mut closed = self.auth_query.free_database(dbname);
        for cluster in clusters {
            for pool in cluster.pools() {
                if pool.target().database == dbname {
                    closed += pool.free_database();
                }
            }
        }
        if closed > 0 {
            tracing::info!(
                database = dbname,
                closed,
                "closed idle servers of a database a client drops or renames"
            );
        }
    }

    /// The listening connection of `database` (transaction-mode LISTEN/NOTIFY).
    pub fn listener(&self, database: &str) -> Option<Arc<super::notify::Listener>> {
        self.listeners.lock().get(database).cloned()
    }

    /// Remember where the config came from (for RELOAD and SIGHUP).
    pub fn set_source(&self, source: ConfigSource) {
        *self.source.lock() = Some(source);
    }

    /// Bumped by every applied RELOAD: sessions pick up new pools at their next boundary.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Is any rate limit configured? (Keeps the request path free of lookups otherwise.)
    pub fn rate_limits_on(&self) -> bool {
        self.rate_limits_on.load(Ordering::Relaxed)
    }

    /// Take one request from the user's and the address's rate limits.
    pub fn admit_request(&self, user: &UserEntry, addr: std::net::IpAddr) -> Result<(), Error> {
        let config = self.config.load();
        let g = &config.general;
        let burst = g.rate_limit_burst.0.as_secs_f64().max(0.001);
        let per_user = user.config.rate_limit.unwrap_or(g.rate_limit_per_user);
        if per_user > 0.0
            && !self
                .rate
                .take_user(&user.config.name, per_user, (per_user * burst).max(1.0))
        {
            self.metrics.rate_limited.with_label_values(&["user"]).inc();
            return Err(Error::RateLimited {
                scope: "user",
                limit: per_user,
            });
        }
        let per_addr = g.rate_limit_per_address;
        if per_addr > 0.0
            && !self
                .rate
                .take_addr(addr, per_addr, (per_addr * burst).max(1.0))
        {
            self.metrics
                .rate_limited
                .with_label_values(&["address"])
                .inc();
            return Err(Error::RateLimited {
                scope: "client address",
                limit: per_addr,
            });
        }
        Ok(())
    }

    /// Every database's routing state.
    pub fn topologies(&self) -> Vec<Arc<Topology>> {
        let mut v: Vec<_> = self.topologies.lock().values().cloned().collect();
        v.sort_by(|a, b| a.database.cmp(&b.database));
        v
    }

    /// `PAUSE [db]`: hold new transactions, return once every server is idle.
    pub async fn pause(&self, db: Option<&str>) {
        let pools: Vec<_> = self
            .pools()
            .into_iter()
            .filter(|p| db.is_none_or(|d| p.key.database == d))
            .collect();
        if db.is_none() {
            *self.paused_all.lock() = true;
        } else if let Some(d) = db {
            self.paused_dbs.lock().insert(d.to_string());
        }
        for p in &pools {
            p.pause();
        }
        while pools.iter().any(|p| p.counts().active > 0) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// `RESUME [db]`.
    pub fn resume(&self, db: Option<&str>) {
        match db {
            None => {
                *self.paused_all.lock() = false;
                self.paused_dbs.lock().clear();
            }
            Some(d) => {
                self.paused_dbs.lock().remove(d);
            }
        }
        let all = *self.paused_all.lock();
        let dbs = self.paused_dbs.lock().clone();
        for p in self.pools() {
            if !all && !dbs.contains(&p.key.database) {
                p.resume();
            }
        }
    }

    pub(super) fn is_paused(&self, db: &str) -> bool {
        *self.paused_all.lock() || self.paused_dbs.lock().contains(db)
    }

    pub fn clusters(&self) -> Vec<Arc<Cluster>> {
        self.clusters.read().values().cloned().collect()
    }

    /// Every pool of every cluster.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.clusters
            .read()
            .values()
            .flat_map(|c| c.pools().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Count a new client; `Err` with the limit when `max_client_conn` is reached.
    pub fn admit(self: &Arc<Self>) -> Result<ClientGuard, usize> {
        let max = self.config.load().general.max_client_conn;
        let n = self.clients.fetch_add(1, Ordering::AcqRel);
        let guard = ClientGuard {
            proxy: self.clone(),
        };
        if n >= max {
            return Err(max);
        }
        Ok(guard)
    }

    /// Count a client against its user's `max_user_connections`.
    pub fn admit_user(self: &Arc<Self>, user: &Arc<UserEntry>) -> Result<UserGuard, usize> {
        let max = user.config.max_user_connections;
        let mut map = self.per_user.lock();
        let n = map.entry(user.config.name.clone()).or_default();
        if max > 0 && *n >= max {
            return Err(max);
        }
        *n += 1;
        Ok(UserGuard {
            proxy: self.clone(),
            user: user.clone(),
        })
    }

    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub fn current_phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Move to `phase`: the listener sees it on the watch, each client session is woken
    /// through its cancel slot (it reads the phase again).
    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
        self.cancel.wake_all();
    }

    /// Refresh the state gauges from the pools (called before each scrape).
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        m.client_connections
            .with_label_values(&[] as &[&str])
            .set(self.client_count() as i64);
        let mut pinned: HashMap<(String, String), i64> = HashMap::new();
        for c in self.cancel.clients() {
            if c.pinned().is_some() {
                *pinned
                    .entry((c.info.database.clone(), c.info.user.clone()))
                    .or_default() += 1;
            }
        }
        for pool in self.pools() {
            let key = (pool.key.database.clone(), pool.key.user.clone());
            m.pinned_clients
                .with_label_values(&[key.0.as_str(), key.1.as_str()])
                .set(pinned.get(&key).copied().unwrap_or(0));
            let PoolCounts {
                idle,
                active,
                waiting,
                clients,
            } = pool.counts();
            let db = pool.key.database.as_str();
            let user = pool.key.user.as_str();
            let target = pool.target_name.as_str();
            let idle_clients = clients.saturating_sub(active + waiting);
            for (state, v) in [
                ("active", active),
                ("waiting", waiting),
                ("idle", idle_clients),
            ] {
                m.clients
                    .with_label_values(&[db, user, target, state])
                    .set(v as i64);
            }
            for (state, v) in [("active", active), ("idle", idle)] {
                m.servers
                    .with_label_values(&[db, user, target, state])
                    .set(v as i64);
            }
            m.pool_size
                .with_label_values(&[db, user, target])
                .set(pool.settings().size as i64);
        }
    }
}

pub(super) fn build_users(config: &Config) -> HashMap<String, Arc<UserEntry>> {
    config
        .users
        .iter()
        .map(|u| {
            let secret = match &u.password {
                Some(p) => Secret::from_config(&u.name, p),
                None => Secret {
                    scram: None,
                    md5: None,
                    plaintext: None,
                },
            };
            let entry = UserEntry {
                config: u.clone(),
                secret,
                method: u.auth_type.unwrap_or(config.general.auth_type),
                looked_up: false,
                looked_up_at: None,
            };
            (u.name.clone(), Arc::new(entry))
        })
        .collect()
}

/// Releases a client's place in `max_client_conn` when dropped.
pub struct ClientGuard {
    proxy: Arc<Proxy>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.proxy.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Releases a client's place in its user's `max_user_connections` when dropped.
pub struct UserGuard {
    proxy: Arc<Proxy>,
    user: Arc<UserEntry>,
}

impl Drop for UserGuard {
    fn drop(&mut self) {
        if let Some(n) = self.proxy.per_user.lock().get_mut(&self.user.config.name) {
            *n = n.saturating_sub(1);
        }
    }
}
