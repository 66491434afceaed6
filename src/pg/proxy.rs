//! State shared by every Postgres client session: the config snapshot, users and their
//! secrets, the pools, the cancel registry, the statement analyser and metrics.

use super::auth::{Method, Secret};
use super::cancel::CancelRegistry;
use super::cluster::Cluster;
use super::error::Error;
use super::pool::{Pool, PoolCounts, PoolKey};
use super::prepared::Registry;
use super::route::topology::{spawn_monitor, MonitorLogin};
use super::route::Topology;
use super::server::ServerTarget;
use super::sql::Analyzer;
use crate::config::{Config, User};
use crate::obs::metrics::Metrics;
use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
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
    config: ArcSwap<Config>,
    tls: ArcSwap<crate::tls::Tls>,
    users: ArcSwap<HashMap<String, Arc<UserEntry>>>,
    pub(super) clusters: RwLock<HashMap<PoolKey, Arc<Cluster>>>,
    pub(super) topologies: Mutex<HashMap<String, Arc<Topology>>>,
    /// Per database: the listening connection of transaction-mode LISTEN/NOTIFY.
    listeners: Mutex<HashMap<String, Arc<super::notify::Listener>>>,
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
    otlp: arc_swap::ArcSwapOption<crate::obs::otlp::Tracer>,
    /// The Redis side, when configured (for the console's SHOW CACHE).
    pub redis: std::sync::OnceLock<Arc<crate::redis::Service>>,
    clients: AtomicUsize,
    next_client: AtomicU64,
    per_user: Mutex<HashMap<String, usize>>,
    phase: watch::Sender<Phase>,
    paused_all: Mutex<bool>,
    paused_dbs: Mutex<std::collections::HashSet<String>>,
    /// Where RELOAD re-reads the config, and the command-line flags applied on top.
    source: Mutex<Option<ConfigSource>>,
    generation: AtomicU64,
    breakers: Mutex<HashMap<String, Arc<crate::pg::limits::Breaker>>>,
    rate: crate::pg::limits::RateLimiter,
    rate_limits_on: std::sync::atomic::AtomicBool,
    /// `general.clients_max_memory`: what clients' large messages hold together.
    pub memory: Arc<crate::limits::MemoryBudget>,
}

fn any_rate_limit(c: &Config) -> bool {
    c.general.rate_limit_per_user > 0.0
        || c.general.rate_limit_per_address > 0.0
        || c.users
            .iter()
            .any(|u| u.rate_limit.is_some_and(|r| r > 0.0))
}

/// What identifies a database's servers (a change needs new pools).
fn target_fields(d: &crate::config::Database) -> String {
    format!(
        "{}|{}|{}|{:?}|{:?}|{}",
        d.host,
        d.port,
        d.server_dbname(),
        d.server_user,
        d.server_password,
        toml::to_string(&d.replicas).unwrap_or_default()
    )
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

    /// The pools for (database, user), created on first use: primary and replicas.
    pub fn cluster(self: &Arc<Self>, database: &str, user: &UserEntry) -> Option<Arc<Cluster>> {
        let key = PoolKey {
            database: database.to_string(),
            user: user.config.name.clone(),
        };
        if let Some(c) = self.clusters.read().get(&key) {
            return Some(c.clone());
        }
        let config = self.config();
        let db = config.resolve_database(database)?;
        let db = db.as_ref();
        let settings = config.pool_settings(db, &user.config);
        let (server_user, password) = match &db.server_user {
            Some(u) => (u.clone(), db.server_password.clone()),
            None => (
                user.config.name.clone(),
                user.config
                    .server_password
                    .clone()
                    .or_else(|| user.secret.plaintext.clone()),
            ),
        };
        let (passthrough, side_user, side_password) =
            self.side_login(&config, db, user, &server_user, &password);
        let target = |host: &str, port: u16| ServerTarget {
            host: host.to_string(),
            port,
            user: server_user.clone(),
            password: password.clone(),
            passthrough: passthrough.clone(),
            database: db.server_dbname().to_string(),
            connect_timeout: config.pool.server_connect_timeout.0,
            tls: {
                let tls = self.tls.load();
                tls.connector.clone().map(|c| (c, tls.server_mode))
            },
        };
        let topology = self.topology(db, &config, &side_user, side_password.clone());
        // EXPLAIN and the index advisor use their own connections, as this pool's user
        self.insight.register_database(
            &db.name,
            crate::insight::explain::ConnTarget {
                host: db.host.clone(),
                port: db.port,
                user: side_user.clone(),
                password: side_password.clone(),
                dbname: db.server_dbname().to_string(),
            },
        );
        let mut clusters = self.clusters.write();
        let cluster = clusters
            .entry(key.clone())
            .or_insert_with(|| {
                let pool = |name: String, t: ServerTarget| {
                    let metrics = self.metrics.pool(&key.database, &key.user, &name);
                    let breaker = self.breaker(&t.host, t.port, &config.pool);
                    let pool = Pool::new(key.clone(), name, settings.clone(), t, metrics, breaker);
                    spawn_reaper(Arc::downgrade(&pool));
                    if self.is_paused(&key.database) {
                        pool.pause();
                    }
                    pool
                };
                let primary = pool("primary".into(), target(&db.host, db.port));
                let replicas = topology
                    .replicas
                    .iter()
                    .map(|r| pool(r.name.clone(), target(&r.config.host, r.config.port)))
                    .collect();
                tracing::info!(pool = %key, mode = %settings.mode, size = settings.size,
                    replicas = topology.replicas.len(), "pool created");
                Arc::new(Cluster {
                    primary,
                    replicas,
                    topology,
                    passthrough: passthrough.clone(),
                    looked_up: user.looked_up,
                })
            })
            .clone();
        Some(cluster)
    }

    /// The listening connection of `database` (transaction-mode LISTEN/NOTIFY).
    /// Close the idle pooled servers connected to server database `dbname` (every user,
    /// primary and replicas): a client's `DROP DATABASE`/`ALTER DATABASE … RENAME` would
    /// otherwise fail on sessions it cannot see. Servers in use by other clients stay, and
    /// the statement fails as it would directly while those clients are connected.
    pub fn close_idle_servers(&self, dbname: &str) {
        let clusters: Vec<Arc<Cluster>> = self.clusters.read().values().cloned().collect();
        let mut closed = 0;
        for cluster in clusters {
            for pool in cluster.pools() {
                if pool.target().database == dbname {
                    closed += pool.close_idle();
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

    pub fn listener(&self, database: &str) -> Option<Arc<super::notify::Listener>> {
        self.listeners.lock().get(database).cloned()
    }

    /// The routing state of a database (one monitor per database, whatever the users).
    fn topology(
        &self,
        db: &crate::config::Database,
        config: &Config,
        user: &str,
        password: Option<String>,
    ) -> Arc<Topology> {
        let mut map = self.topologies.lock();
        map.entry(db.name.clone())
            .or_insert_with(|| {
                let t = Topology::new(
                    &db.name,
                    &db.replicas,
                    config.routing.clone(),
                    self.metrics.clone(),
                );
                let login = MonitorLogin {
                    user: user.to_string(),
                    password,
                    dbname: db.server_dbname().to_string(),
                    primary_host: db.host.clone(),
                    primary_port: db.port,
                };
                let listener =
                    super::notify::Listener::new(&db.name, login.clone(), &t, self.metrics.clone());
                self.listeners.lock().insert(db.name.clone(), listener);
                spawn_monitor(&t, login);
                t
            })
            .clone()
    }

    /// Remember where the config came from (for RELOAD and SIGHUP).
    pub fn set_source(&self, source: ConfigSource) {
        *self.source.lock() = Some(source);
    }

    /// Bumped by every applied RELOAD: sessions pick up new pools at their next boundary.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// RELOAD / SIGHUP: read the config file again, apply the same command-line flags on top,
    /// validate everything, then apply. Returns what changed.
    pub fn reload_from_file(&self) -> Result<Vec<String>, String> {
        let source =
            self.source.lock().clone().ok_or_else(|| {
                "nothing to reload: Pake was not started with --config".to_string()
            })?;
        let Some(path) = &source.path else {
            return Err("nothing to reload: Pake was not started with --config".into());
        };
        let base = Config::load(path).map_err(|e| e.to_string())?;
        let config = source.overrides.apply(base).map_err(|e| e.to_string())?;
        config.validate().map_err(|errs| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        Ok(self.apply(config))
    }

    /// Apply a validated configuration without dropping anyone: users and secrets are
    /// replaced; pools whose servers are unchanged get their new sizes and timeouts in place;
    /// pools whose target changed (host, port, credentials, replicas, routing) are replaced
    /// for new transactions while running ones finish on the old servers.
    pub fn apply(&self, new: Config) -> Vec<String> {
        let old = self.config();
        let mut report = restart_only_changes(&old, &new);
        self.users.store(Arc::new(build_users(&new)));
        match crate::tls::Tls::build(&new.tls) {
            Ok(tls) => self.tls.store(Arc::new(tls)),
            Err(e) => report.push(format!("tls: {e}; the previous certificates stay")),
        }
        self.keep_or_drop_pools(&old, &new, &mut report);
        self.swap_services(&old, &new, &mut report);
        self.memory
            .set_limit(new.general.clients_max_memory.0 as usize);
        self.config.store(Arc::new(new));
        self.generation.fetch_add(1, Ordering::AcqRel);
        if report.is_empty() {
            report.push("configuration reloaded: no pool changed".into());
        }
        report
    }

    /// Pools whose servers are unchanged take their new settings in place; the others (and
    /// their replica monitors) are dropped, to be built again for the next login.
    fn keep_or_drop_pools(&self, old: &Config, new: &Config, report: &mut Vec<String>) {
        // routing or server TLS changes mean new pools (and monitors)
        let routing_changed = toml::to_string(&old.routing).ok()
            != toml::to_string(&new.routing).ok()
            || toml::to_string(&old.tls).ok() != toml::to_string(&new.tls).ok();
        self.topologies.lock().retain(|name, _| {
            let same = |c: &Config| c.database(name).map(|d| toml::to_string(&d.replicas).ok());
            !routing_changed && same(old) == same(new)
        });
        let mut clusters = self.clusters.write();
        clusters.retain(|key, cluster| {
            let db = new.resolve_database(&key.database);
            // an auth_query user stays while its database still looks users up
            let looked_up = (cluster.looked_up
                && new.user(&key.user).is_none()
                && db.as_deref().and_then(|d| new.auth_lookup(d)).is_some())
            .then(|| User::named(&key.user));
            let user = new.user(&key.user).or(looked_up.as_ref());
            let (Some(db), Some(user)) = (db.as_deref(), user) else {
                report.push(format!(
                    "pool {key}: database or user removed (new logins refused)"
                ));
                return false;
            };
            let same_target = old
                .resolve_database(&key.database)
                .as_deref()
                .map(target_fields)
                == Some(target_fields(db))
                && (looked_up.is_some()
                    || old
                        .user(&key.user)
                        .map(|u| (&u.password, &u.server_password))
                        == Some((&user.password, &user.server_password)))
                && !routing_changed;
            if !same_target {
                report.push(format!(
                    "pool {key}: servers changed; new transactions use the new ones"
                ));
                return false;
            }
            let settings = new.pool_settings(db, user);
            let before = cluster.primary.settings();
            if before.size != settings.size {
                report.push(format!(
                    "pool {key}: pool_size {} -> {}",
                    before.size, settings.size
                ));
            }
            for p in cluster.pools() {
                p.update_settings(settings.clone());
            }
            true
        });
    }

    /// Rate limits, the OTLP exporter, the Redis side and fault injection.
    fn swap_services(&self, old: &Config, new: &Config, report: &mut Vec<String>) {
        self.rate_limits_on
            .store(any_rate_limit(new), Ordering::Relaxed);
        if old.otlp != new.otlp {
            let tracer =
                crate::obs::otlp::Tracer::start(&new.otlp, &self.metrics, self.analyzer.clone());
            report.push(match tracer {
                Some(_) => "otlp: trace export (re)started with the new settings".into(),
                None => "otlp: trace export off".into(),
            });
            // the old exporter sends what it has queued, then ends with its last session
            self.otlp.store(tracer);
        }
        if let Some(redis) = self.redis.get() {
            report.extend(redis.reload(old.redis.as_ref(), new.redis.as_ref()));
        }
        if self.faults.enabled() != new.general.fault_injection {
            self.faults.set_enabled(new.general.fault_injection);
            report.push(format!("fault_injection = {}", new.general.fault_injection));
        }
        self.analyzer
            .set_max_analyzed(new.general.max_analyzed_statement_size.0 as usize);
    }

    /// The circuit breaker of a backend (one per host:port, shared by every pool).
    fn breaker(
        &self,
        host: &str,
        port: u16,
        pool: &crate::config::PoolDefaults,
    ) -> Option<Arc<crate::pg::limits::Breaker>> {
        if pool.circuit_breaker_failures == 0 {
            return None;
        }
        let backend = format!("{host}:{port}");
        let mut map = self.breakers.lock();
        let b = map.entry(backend.clone()).or_insert_with(|| {
            Arc::new(crate::pg::limits::Breaker::new(
                backend.clone(),
                pool.circuit_breaker_failures,
                pool.circuit_breaker_cooldown.0,
                self.metrics.circuit_state.with_label_values(&[&backend]),
                self.metrics.circuit_open.with_label_values(&[&backend]),
            ))
        });
        Some(b.clone())
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

    fn is_paused(&self, db: &str) -> bool {
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
    pub fn admit(&self) -> Result<ClientGuard<'_>, usize> {
        let max = self.config.load().general.max_client_conn;
        let n = self.clients.fetch_add(1, Ordering::AcqRel);
        let guard = ClientGuard { proxy: self };
        if n >= max {
            return Err(max);
        }
        Ok(guard)
    }

    /// Count a client against its user's `max_user_connections`.
    pub fn admit_user(&self, user: &UserEntry) -> Result<UserGuard<'_>, usize> {
        let max = user.config.max_user_connections;
        let mut map = self.per_user.lock();
        let n = map.entry(user.config.name.clone()).or_default();
        if max > 0 && *n >= max {
            return Err(max);
        }
        *n += 1;
        Ok(UserGuard {
            proxy: self,
            user: user.config.name.clone(),
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

    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
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

fn build_users(config: &Config) -> HashMap<String, Arc<UserEntry>> {
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

/// Per pool: keep `min_pool_size` warm and close what idled too long.
fn spawn_reaper(pool: Weak<Pool>) {
    tokio::spawn(async move {
        loop {
            let interval = match pool.upgrade() {
                Some(p) => {
                    p.ensure_min();
                    p.reap_interval()
                }
                None => return,
            };
            tokio::time::sleep(interval).await;
            match pool.upgrade() {
                Some(p) => {
                    p.reap();
                }
                None => return,
            }
        }
    });
}

/// Releases a client's place in `max_client_conn` when dropped.
pub struct ClientGuard<'a> {
    proxy: &'a Proxy,
}

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        self.proxy.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Releases a client's place in its user's `max_user_connections` when dropped.
pub struct UserGuard<'a> {
    proxy: &'a Proxy,
    user: String,
}

impl Drop for UserGuard<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.proxy.per_user.lock().get_mut(&self.user) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Settings a running process cannot change: reported, applied at the next start.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let g = (&old.general, &new.general);
    [
        ("general.pg_listen", g.0.pg_listen != g.1.pg_listen),
        ("general.admin_listen", g.0.admin_listen != g.1.admin_listen),
        ("general.workers", g.0.workers != g.1.workers),
        ("peering", old.peering != new.peering),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(name, _)| format!("{name} changed: takes effect after a restart"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_reports_what_needs_a_restart() {
        let old = Config::default();
        assert!(restart_only_changes(&old, &old.clone()).is_empty());
        let mut new = old.clone();
        new.general.workers = old.general.workers + 1;
        new.general.pg_listen = "127.0.0.1:1".parse().unwrap();
        new.peering.peer_id = 3;
        let report = restart_only_changes(&old, &new);
        assert_eq!(
            report,
            [
                "general.pg_listen changed: takes effect after a restart",
                "general.workers changed: takes effect after a restart",
                "peering changed: takes effect after a restart",
            ]
        );
    }
}
