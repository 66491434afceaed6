//! Databases served through the wildcard `[[databases]] name = "*"` entry (PgBouncer's
//! fallback): any name without an entry of its own gets pools on the wildcard's server, and
//! how many such databases have pools at once is bounded.

use super::cluster::Cluster;
use super::error::Error;
use super::pool::PoolKey;
use super::proxy::Proxy;
use std::collections::HashMap;
use std::sync::Arc;

impl Proxy {
    /// Room for the pools of `database` when it is served through the wildcard entry: at
    /// most `general.max_wildcard_databases` such databases have pools at once; when full,
    /// the pools of wildcard databases no client uses are dropped first.
    pub fn admit_database(&self, database: &str) -> Result<(), Error> {
        let config = self.config();
        if !config.is_wildcard_database(database) {
            return Ok(());
        }
        let max = config.general.max_wildcard_databases;
        let mut clusters = self.clusters.write();
        let wildcard = |clusters: &HashMap<PoolKey, Arc<Cluster>>| {
            let mut names: Vec<&str> = clusters
                .keys()
                .map(|k| k.database.as_str())
                .filter(|d| config.is_wildcard_database(d))
                .collect();
            names.sort_unstable();
            names.dedup();
            (names.contains(&database), names.len())
        };
        let (known, count) = wildcard(&clusters);
        if known || count < max {
            return Ok(());
        }
        // drop the pools of idle wildcard databases (no client, no server checked out)
        let busy: std::collections::HashSet<String> = clusters
            .iter()
            .filter(|(_, c)| {
                c.pools()
                    .any(|p| p.counts().clients + p.counts().active > 0)
            })
            .map(|(k, _)| k.database.clone())
            .collect();
        clusters.retain(|k, c| {
            let drop = config.is_wildcard_database(&k.database) && !busy.contains(&k.database);
            if drop {
                tracing::info!(pool = %k, "idle wildcard database pool dropped");
                c.pools().for_each(|p| p.close());
            }
            !drop
        });
        self.topologies.lock().retain(|name, _| {
            clusters.keys().any(|k| k.database == *name) || config.database(name).is_some()
        });
        if wildcard(&clusters).1 < max {
            return Ok(());
        }
        Err(Error::TooManyDatabases(max))
    }
}
