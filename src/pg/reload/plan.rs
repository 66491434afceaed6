//! The typed difference between what runs and a configuration: which databases get a new
//! routing state (and replica monitor), and which (database, user) pools are built, kept
//! with their new settings in place, or drained. Pure: computed from the running and the new
//! configuration and the names of what runs, so it is unit-tested without servers.
//!
//! The pools of users found through `auth_query` (no `[[users]]` entry) are never built here
//! (only a login brings their secret): they are kept while their database is served and still
//! looks users up, drained as removed otherwise, and replaced (rebuilt at their next use) when
//! their database's servers change.

use crate::config::{Config, User, WILDCARD_DATABASE};
use crate::pg::build::{server_login, side_login};
use crate::pg::pool::PoolKey;
use std::collections::HashSet;

/// Why a running pool is drained (idle servers closed now, servers in use at release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Its database or user is gone from the configuration (for a user found through
    /// `auth_query`: its database no longer looks users up): new logins are refused, and its
    /// clients are told so at their next transaction.
    Removed,
    /// Its servers, credentials, replicas or routing changed: new transactions use new
    /// pools (built now; for a database served through the wildcard entry or a user found
    /// through `auth_query`, at its next use).
    Replaced,
}

/// What applying a configuration does to the pools, step by step.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Databases whose routing state and replica monitor are built: new, or changed.
    pub build_routing: Vec<String>,
    /// Databases whose running routing state goes: removed, or replaced by a build.
    pub drop_routing: Vec<String>,
    /// Configured (database, user) pairs whose pools are built: new, or replacing old ones.
    pub build: Vec<PoolKey>,
    /// Running pools that stay and take the new sizes and timeouts in place.
    pub keep: Vec<PoolKey>,
    /// Running pools that are drained, and why.
    pub drain: Vec<(PoolKey, Drain)>,
}

/// Every (database, user) pair the configuration names: its own databases (not the
/// wildcard entry, whose names come from clients) for every user.
pub fn configured_pairs(config: &Config) -> Vec<PoolKey> {
    let dbs = config
        .databases
        .iter()
        .filter(|d| d.name != WILDCARD_DATABASE);
    dbs.flat_map(|d| {
        config.users.iter().map(|u| PoolKey {
            database: d.name.clone(),
            user: u.name.clone(),
        })
    })
    .collect()
}

/// What a database's routing state depends on: its servers, replicas, the routing and TLS
/// settings, and the side connections' login. `None` when the name is not served.
fn routing_identity(config: &Config, name: &str) -> Option<String> {
    let db = config.resolve_database(name)?;
    let db = db.as_ref();
    Some(format!(
        "{}|{}|{}|{:?}|{:?}|{}|{}|{}|{:?}",
        db.host,
        db.port,
        db.server_dbname(),
        db.server_user,
        db.server_password,
        toml::to_string(&db.replicas).unwrap_or_default(),
        toml::to_string(&config.routing).unwrap_or_default(),
        toml::to_string(&config.tls).unwrap_or_default(),
        side_login(db, config),
    ))
}

/// Which user a running pool serves under `config` (none when its database is not served):
/// its `[[users]]` entry; else, for a user
/// found through `auth_query` (`looked_up`), one with no settings of its own while the
/// database still looks users up; else none (the user is gone).
fn pool_user(config: &Config, key: &PoolKey, looked_up: bool) -> Option<User> {
    let db = config.resolve_database(&key.database)?;
    if let Some(user) = config.user(&key.user) {
        return Some(user.clone());
    }
    (looked_up && config.auth_lookup(&db).is_some()).then(|| User::named(&key.user))
}

/// What a pool's servers depend on beyond its database's routing state: the login.
fn pool_identity(
    config: &Config,
    key: &PoolKey,
    looked_up: bool,
) -> Option<(String, Option<String>)> {
    let db = config.resolve_database(&key.database)?;
    let user = pool_user(config, key, looked_up)?;
    Some(server_login(db.as_ref(), &user))
}

/// The plan that takes what runs (`running` pools, `routed` databases, under `old`) to `new`.
/// `looked_up`: the running pools of users found through `auth_query`. At start nothing runs,
/// so every configured pair is built.
pub fn plan(
    old: &Config,
    new: &Config,
    running: &[PoolKey],
    looked_up: &[PoolKey],
    routed: &[String],
) -> Plan {
    let mut plan = Plan::default();
    let mut gone: HashSet<&str> = HashSet::new();
    for name in routed {
        let now = routing_identity(new, name);
        if now.is_none() || now != routing_identity(old, name) {
            plan.drop_routing.push(name.clone());
            gone.insert(name);
        }
    }
    for d in new.databases.iter().filter(|d| d.name != WILDCARD_DATABASE) {
        if !routed.contains(&d.name) || gone.contains(d.name.as_str()) {
            plan.build_routing.push(d.name.clone());
        }
    }
    let wanted = configured_pairs(new);
    for key in running {
        let found = looked_up.contains(key);
        if pool_user(new, key, found).is_none() {
            plan.drain.push((key.clone(), Drain::Removed));
        } else if gone.contains(key.database.as_str())
            || pool_identity(old, key, found) != pool_identity(new, key, found)
        {
            plan.drain.push((key.clone(), Drain::Replaced));
            if wanted.contains(key) {
                plan.build.push(key.clone());
            }
        } else {
            plan.keep.push(key.clone());
        }
    }
    plan.build
        .extend(wanted.into_iter().filter(|k| !running.contains(k)));
    plan
}
