//! RELOAD (console), SIGHUP and start: a configuration applied as a typed diff in named
//! steps, so a reload never drops anyone and a failed one changes nothing.
//!
//! 1. **validate** ([`Proxy::validate_source`]): read the file again, apply the same
//!    command-line flags, check every rule. Any problem ends the reload here.
//! 2. **build** ([`Proxy::build`]): compute the [`plan::Plan`], then build the routing state,
//!    replica monitors and pools of added or changed databases. Nothing serves them yet; the
//!    new monitors take their first sample (bounded) before the swap.
//! 3. **swap** ([`Proxy::swap_pools`], then the configuration): new pools in, kept pools take
//!    their new settings, removed ones out; then users, TLS, services and the configuration,
//!    and the generation that tells sessions to look their pools up again at their next
//!    transaction boundary.
//! 4. **drain** ([`Proxy::drain`]): old pools close their idle servers now and the servers in
//!    use when their transaction ends.

pub mod plan;
#[cfg(test)]
mod tests;

use super::build::{first_samples, Blueprint, Routing};
use super::cluster::Cluster;
use super::pool::PoolKey;
use super::proxy::{any_rate_limit, build_users, Proxy};
use super::route::Topology;
use crate::config::{Config, ConfigError, LoadError};
use plan::{Drain, Plan};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why a RELOAD changed nothing (SQLSTATE F0000 on the console).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("nothing to reload: Pake was not started with --config")]
    NoFile,
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0}")]
    Flags(ConfigError),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ConfigError>),
}

/// Step 2's output: a configuration with its new routing states and pools, not serving yet.
pub struct Built {
    pub config: Arc<Config>,
    tls: Arc<crate::tls::Tls>,
    plan: Plan,
    routing: Vec<(String, Routing)>,
    clusters: Vec<(PoolKey, Arc<Cluster>)>,
    /// The new certificates could not be loaded: the running ones stay.
    tls_problem: Option<String>,
}

impl Built {
    /// The routing states built for this configuration (their monitors run already).
    pub fn new_topologies(&self) -> Vec<Arc<Topology>> {
        self.routing
            .iter()
            .map(|(_, r)| r.topology.clone())
            .collect()
    }
}

/// Step 3's output: what the swap changed, and the pools taken out, to drain.
pub struct Swapped {
    pub report: Vec<String>,
    pub drained: Vec<Arc<Cluster>>,
}

impl Proxy {
    /// RELOAD / SIGHUP: validate → build → (first samples) → swap → drain. An `Err` changed
    /// nothing. Returns what changed.
    pub async fn reload(&self) -> Result<Vec<String>, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let new = self.validate_source()?;
        let (built, old) = self.prepare(new);
        let limit = built.config.routing.health_check_timeout.0 * 2;
        first_samples(&built.new_topologies(), limit).await;
        Ok(self.commit(built, &old))
    }

    /// Apply a configuration already validated (tests, and the steps of [`Proxy::reload`]
    /// without waiting for new monitors' first samples). Returns what changed.
    pub fn apply(&self, new: Config) -> Vec<String> {
        let (built, old) = self.prepare(new);
        self.commit(built, &old)
    }

    /// Step 1: read the file again and apply the same command-line flags on top; every rule
    /// is checked.
    pub fn validate_source(&self) -> Result<Config, ReloadError> {
        let source = self.source.lock().clone().ok_or(ReloadError::NoFile)?;
        let path = source.path.as_ref().ok_or(ReloadError::NoFile)?;
        let base = Config::load(path)?;
        let config = source.overrides.apply(base).map_err(ReloadError::Flags)?;
        config.validate().map_err(ReloadError::Invalid)?;
        Ok(config)
    }

    /// Step 2 with the new configuration's TLS (a certificate that cannot be loaded keeps
    /// the running ones, as a reload always did).
    fn prepare(&self, new: Config) -> (Built, Arc<Config>) {
        let old = self.config();
        let (tls, problem) = match crate::tls::Tls::build(&new.tls) {
            Ok(tls) => (Arc::new(tls), None),
            Err(e) => (self.tls(), Some(e.to_string())),
        };
        let mut built = self.build(Arc::new(new), tls);
        built.tls_problem = problem;
        (built, old)
    }

    /// Steps 3 and 4 after a build.
    fn commit(&self, built: Built, old: &Config) -> Vec<String> {
        let new = built.config.clone();
        let mut report = restart_only_changes(old, &new);
        // the pools first: a user or database the new configuration adds finds its pools
        let swapped = self.swap_pools(&built);
        self.users.store(Arc::new(build_users(&new)));
        report.extend(swapped.report);
        match &built.tls_problem {
            None => self.tls.store(built.tls.clone()),
            Some(e) => report.push(format!("tls: {e}; the previous certificates stay")),
        }
        self.swap_services(old, &new, &mut report);
        self.memory
            .set_limit(new.general.clients_max_memory.0 as usize);
        self.config.store(new);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.drain(swapped.drained);
        if report.is_empty() {
            report.push("configuration reloaded: no pool changed".into());
        }
        report
    }

    /// Step 2: plan against what runs, then build the routing states and pools the plan
    /// names. Nothing built here serves a client before [`Proxy::swap_pools`].
    pub fn build(&self, config: Arc<Config>, tls: Arc<crate::tls::Tls>) -> Built {
        let (running, looked_up) = {
            let clusters = self.clusters.read();
            let looked_up: Vec<PoolKey> = clusters
                .iter()
                .filter(|(_, c)| c.looked_up)
                .map(|(k, _)| k.clone())
                .collect();
            (clusters.keys().cloned().collect::<Vec<_>>(), looked_up)
        };
        let routed: Vec<String> = self.topologies.lock().keys().cloned().collect();
        let plan = plan::plan(&self.config(), &config, &running, &looked_up, &routed);
        let bp = Blueprint {
            config: &config,
            tls: &tls,
        };
        let routing: Vec<(String, Routing)> = plan
            .build_routing
            .iter()
            .filter_map(|name| {
                let db = config.database(name)?;
                Some((name.clone(), self.build_routing(db, &bp)))
            })
            .collect();
        let mut topologies: HashMap<String, Arc<Topology>> = self.topologies.lock().clone();
        for (name, r) in &routing {
            topologies.insert(name.clone(), r.topology.clone());
        }
        let clusters = plan
            .build
            .iter()
            .filter_map(|key| {
                let db = config.database(&key.database)?;
                let user = config.user(&key.user)?;
                let topology = topologies.get(&key.database)?.clone();
                Some((
                    key.clone(),
                    self.build_cluster(key, db, user, false, topology, &bp),
                ))
            })
            .collect();
        Built {
            config: config.clone(),
            tls,
            plan,
            routing,
            clusters,
            tls_problem: None,
        }
    }

    /// Step 3 for the pools: the built ones in, kept ones take their new settings, drained
    /// ones out (returned, for [`Proxy::drain`]). New pools go in before the users and the
    /// configuration that let clients ask for them.
    pub fn swap_pools(&self, built: &Built) -> Swapped {
        let mut report = Vec::new();
        {
            let mut topologies = self.topologies.lock();
            let mut listeners = self.listeners.lock();
            for name in &built.plan.drop_routing {
                topologies.remove(name);
                listeners.remove(name);
            }
            for (name, r) in &built.routing {
                topologies.insert(name.clone(), r.topology.clone());
                listeners.insert(name.clone(), r.listener.clone());
            }
        }
        let mut clusters = self.clusters.write();
        let mut drained = Vec::new();
        for (key, why) in &built.plan.drain {
            if let Some(old) = clusters.remove(key) {
                drained.push(old);
            }
            report.push(match why {
                Drain::Removed => {
                    format!("pool {key}: database or user removed (new logins refused)")
                }
                Drain::Replaced => {
                    format!("pool {key}: servers changed; new transactions use the new ones")
                }
            });
        }
        for key in &built.plan.keep {
            let (Some(cluster), Some(db)) = (
                clusters.get(key),
                built.config.resolve_database(&key.database),
            ) else {
                continue;
            };
            // a user found through auth_query has no entry: the pool defaults apply
            let user = built.config.user(&key.user).cloned();
            let user = user.unwrap_or_else(|| crate::config::User::named(&key.user));
            let settings = built.config.pool_settings(&db, &user);
            let before = cluster.primary.settings().size;
            if before != settings.size {
                report.push(format!(
                    "pool {key}: pool_size {before} -> {}",
                    settings.size
                ));
            }
            for p in cluster.pools() {
                p.update_settings(settings.clone());
            }
        }
        for (key, cluster) in &built.clusters {
            if !built.plan.drain.iter().any(|(k, _)| k == key) {
                report.push(format!("pool {key}: added"));
            }
            clusters.insert(key.clone(), cluster.clone());
        }
        Swapped { report, drained }
    }

    /// Step 4: close the old pools: idle servers now, servers in use when they come back.
    pub fn drain(&self, clusters: Vec<Arc<Cluster>>) {
        for cluster in clusters {
            for pool in cluster.pools() {
                pool.close();
            }
        }
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
}

/// Settings a running process cannot change: reported, applied at the next start.
pub(super) fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let g = (&old.general, &new.general);
    [
        ("general.pg_listen", g.0.pg_listen != g.1.pg_listen),
        ("general.admin_listen", g.0.admin_listen != g.1.admin_listen),
        ("general.workers", g.0.workers != g.1.workers),
        ("general.pg_threads", g.0.pg_threads != g.1.pg_threads),
        ("peering", old.peering != new.peering),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(name, _)| format!("{name} changed: takes effect after a restart"))
    .collect()
}
