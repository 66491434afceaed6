//! Building the pools of a configuration: each (database, user)'s [`Cluster`] (a pool towards
//! the primary and one per replica), the circuit breakers of their backends, and each
//! database's routing state with its replica monitor.
//!
//! Every configured database is built for every configured user at start and at RELOAD,
//! before a client can ask for it ([`Proxy::start_pools`], `pg::reload`): a login only looks
//! its pools up, and the first read after start finds a monitor that has already sampled the
//! replicas. Databases served through the wildcard entry (`name = "*"`) stay lazy by nature —
//! their names are only known when a client names them — so [`Proxy::cluster`] builds those
//! on demand, bounded by `general.max_wildcard_databases`. Users found through `auth_query`
//! (no `[[users]]` entry) are only known once one logs in: the same on-demand path builds
//! their pools at their first successful login, with a [`Passthrough`] their servers log in
//! with; RELOAD keeps them while their database still looks users up (`pg::reload::plan`).

use super::cluster::Cluster;
use super::notify::Listener;
use super::passthrough::Passthrough;
use super::pool::{Pool, PoolKey};
use super::proxy::{Proxy, UserEntry};
use super::route::topology::{spawn_monitor, MonitorLogin};
use super::route::Topology;
use super::server::ServerTarget;
use crate::config::{Config, Database, User};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// What the pools of one configuration are built from (the running one, or a RELOAD's).
pub(super) struct Blueprint<'a> {
    pub config: &'a Config,
    pub tls: &'a crate::tls::Tls,
}

/// A database's routing state with the connections that follow it.
pub(super) struct Routing {
    pub topology: Arc<Topology>,
    pub listener: Arc<Listener>,
}

/// A password as configured is a hash (`md5…`, `SCRAM-SHA-256$…`), not one Pake can send.
fn is_hash(password: &str) -> bool {
    password.starts_with("SCRAM-SHA-256$")
        || (password.len() == 35
            && password.starts_with("md5")
            && password[3..].bytes().all(|b| b.is_ascii_hexdigit()))
}

/// How Pake logs in to `db`'s servers for `user`: the database's `server_user`, or the user
/// with its `server_password` or plaintext password.
pub(super) fn server_login(db: &Database, user: &User) -> (String, Option<String>) {
    match &db.server_user {
        Some(u) => (u.clone(), db.server_password.clone()),
        None => (
            user.name.clone(),
            user.server_password
                .clone()
                .or_else(|| user.password.clone().filter(|p| !is_hash(p))),
        ),
    }
}

/// Who the side connections of `db` (replica monitor, LISTEN connection, EXPLAIN and the
/// advisor) log in as: the database's `server_user`; otherwise its `auth_user` when it looks
/// users up (Pake has no password for those users, and the lookup logs in as `auth_user`
/// already), then the first configured user whose server password is known, or else the
/// first user (for servers that trust it).
pub(super) fn side_login(db: &Database, config: &Config) -> MonitorLogin {
    let auth_user = config
        .auth_lookup(db)
        .and_then(|l| config.user(&l.auth_user));
    let logins = auth_user
        .into_iter()
        .chain(&config.users)
        .map(|u| server_login(db, u));
    let (user, password) = logins
        .clone()
        .find(|(_, p)| p.is_some())
        .or_else(|| logins.clone().next())
        .unwrap_or_else(|| (db.server_user.clone().unwrap_or_default(), None));
    MonitorLogin {
        user,
        password,
        dbname: db.server_dbname().to_string(),
        primary_host: db.host.clone(),
        primary_port: db.port,
    }
}

impl Proxy {
    /// The pools for (database, user): looked up. Only a database served through the
    /// wildcard entry, or a user found through `auth_query`, is built here, on its first
    /// login (see the module docs); a configured (database, user)'s pools exist from start
    /// or from the RELOAD that added them.
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
        let configured = config.user(&user.config.name).is_some();
        // a looked-up user whose database no longer looks users up is gone (as a removed
        // [[users]] entry is); one that is now configured is served by its configured pools
        let looked_up = user.looked_up && !configured && config.auth_lookup(&db).is_some();
        if !(looked_up || (configured && config.is_wildcard_database(database))) {
            return None;
        }
        let tls = self.tls();
        let bp = Blueprint {
            config: &config,
            tls: &tls,
        };
        let topology = {
            let mut map = self.topologies.lock();
            match map.get(database) {
                Some(t) => t.clone(),
                None => {
                    let r = self.build_routing(&db, &bp);
                    self.listeners
                        .lock()
                        .insert(database.to_string(), r.listener);
                    map.insert(database.to_string(), r.topology.clone());
                    r.topology
                }
            }
        };
        let mut clusters = self.clusters.write();
        let cluster = clusters
            .entry(key.clone())
            .or_insert_with(|| {
                self.build_cluster(&key, &db, &user.config, looked_up, topology, &bp)
            })
            .clone();
        Some(cluster)
    }

    /// A database's routing state and its LISTEN connection; its replica monitor starts
    /// sampling now. EXPLAIN and the index advisor use their own connections as the same
    /// login.
    pub(super) fn build_routing(&self, db: &Database, bp: &Blueprint<'_>) -> Routing {
        let topology = Topology::new(
            &db.name,
            &db.replicas,
            bp.config.routing.clone(),
            self.metrics.clone(),
        );
        let login = side_login(db, bp.config);
        self.insight.register_database(
            &db.name,
            crate::insight::explain::ConnTarget {
                host: db.host.clone(),
                port: db.port,
                user: login.user.clone(),
                password: login.password.clone(),
                dbname: db.server_dbname().to_string(),
            },
        );
        let listener = Listener::new(&db.name, login.clone(), &topology, self.metrics.clone());
        spawn_monitor(&topology, login);
        Routing { topology, listener }
    }

    /// The pools of (database, user) over `topology`: no server is connected here; a pool
    /// with `min_pool_size` warms up in the background. A `looked_up` user (found through
    /// `auth_query`) logs in to servers as itself through a [`Passthrough`] that its logins
    /// fill, unless the database has a `server_user`.
    pub(super) fn build_cluster(
        &self,
        key: &PoolKey,
        db: &Database,
        user: &User,
        looked_up: bool,
        topology: Arc<Topology>,
        bp: &Blueprint<'_>,
    ) -> Arc<Cluster> {
        let config = bp.config;
        let settings = config.pool_settings(db, user);
        let (server_user, password) = server_login(db, user);
        let passthrough =
            (looked_up && db.server_user.is_none()).then(|| Arc::new(Passthrough::default()));
        let target = |host: &str, port: u16| ServerTarget {
            host: host.to_string(),
            port,
            user: server_user.clone(),
            password: password.clone(),
            passthrough: passthrough.clone(),
            database: db.server_dbname().to_string(),
            connect_timeout: config.pool.server_connect_timeout.0,
            tls: bp.tls.connector.clone().map(|c| (c, bp.tls.server_mode)),
            extra: Vec::new(),
        };
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
            passthrough,
            looked_up,
        })
    }

    /// Start: build every configured database's pools and monitors, then wait (at most
    /// twice `routing.health_check_timeout`) for each monitor's first sample, so the first
    /// read can go to a replica. A server that is down delays nothing past that bound: Pake
    /// starts, and serves once the server is up.
    pub async fn start_pools(&self) {
        let _one_at_a_time = self.reloading.lock().await;
        let config = self.config();
        let built = self.build(config, self.tls());
        let limit = built.config.routing.health_check_timeout.0 * 2;
        first_samples(&built.new_topologies(), limit).await;
        let report = self.swap_pools(&built);
        self.drain(report.drained);
    }

    /// The circuit breaker of a backend (one per host:port, shared by every pool).
    pub(super) fn breaker(
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
}

/// Wait for the first sample of every monitor, together, up to `limit`; how many sampled.
pub(super) async fn first_samples(topologies: &[Arc<Topology>], limit: Duration) -> usize {
    let waits = topologies.iter().map(|t| t.first_sample(limit));
    let sampled = futures_util::future::join_all(waits)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    if sampled < topologies.len() {
        tracing::warn!(
            waited = ?limit,
            unsampled = topologies.len() - sampled,
            "replica monitors without a first sample yet: reads stay on the primary until they have one"
        );
    }
    sampled
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
