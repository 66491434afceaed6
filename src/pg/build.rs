//! Building a (database, user)'s pools, the circuit breakers of their backends and each
//! database's replica monitor.

use super::cluster::Cluster;
use super::pool::{Pool, PoolKey};
use super::proxy::{Proxy, UserEntry};
use super::route::topology::{spawn_monitor, MonitorLogin};
use super::route::Topology;
use super::server::ServerTarget;
use crate::config::Config;
use std::sync::{Arc, Weak};

impl Proxy {
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
        let target = |host: &str, port: u16| ServerTarget {
            host: host.to_string(),
            port,
            user: server_user.clone(),
            password: password.clone(),
            database: db.server_dbname().to_string(),
            connect_timeout: config.pool.server_connect_timeout.0,
            tls: {
                let tls = self.tls.load();
                tls.connector.clone().map(|c| (c, tls.server_mode))
            },
        };
        let topology = self.topology(db, &config, &server_user, password.clone());
        // EXPLAIN and the index advisor use their own connections, as this pool's user
        self.insight.register_database(
            &db.name,
            crate::insight::explain::ConnTarget {
                host: db.host.clone(),
                port: db.port,
                user: server_user.clone(),
                password: password.clone(),
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
                })
            })
            .clone();
        Some(cluster)
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
