//! RELOAD and SIGHUP: read the configuration again, validate it, and apply it without
//! dropping anyone.

use super::proxy::{any_rate_limit, build_users, Proxy};
use crate::config::Config;
use std::sync::atomic::Ordering;
use std::sync::Arc;

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

impl Proxy {
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
            let (Some(db), Some(user)) = (db.as_deref(), new.user(&key.user)) else {
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
                && old
                    .user(&key.user)
                    .map(|u| (&u.password, &u.server_password))
                    == Some((&user.password, &user.server_password))
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
