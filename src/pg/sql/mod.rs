//! Statement analysis on the request path, done once per statement *shape*.
//!
//! Every Query and Parse text is normalised (one lexer pass, see [`normalize`]) and hashed;
//! the analysis of that shape is cached under the hash, first in a per-thread map (no lock,
//! no shared cache line on the hot path) and behind it in a process-wide sharded map, so each
//! shape is analysed once per process. The router (replica routing) and the insight collector
//! (fingerprints) add their results to [`StatementInfo`].

pub mod effects;
pub mod lexer;
pub mod normalize;

pub use effects::SessionEffect;
pub use normalize::{Hints, Normalized, RouteHint};

use crate::pg::route::classify::{self, Classification};
use parking_lot::RwLock;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// What Pake knows about one statement shape.
#[derive(Debug)]
pub struct StatementInfo {
    /// The normalised text (literals as `?`).
    pub normalized: Box<str>,
    /// How running it changes the server session beyond the transaction.
    pub session: SessionEffect,
    /// Read-only or not, for replica routing.
    pub route: Classification,
    /// The query-insight fingerprint (constants, parameters and list lengths merged).
    pub fingerprint: crate::insight::fingerprint::Fingerprint,
}

impl StatementInfo {
    /// Analyse a shape from the raw text of its first occurrence (parsed once, here).
    fn analyze(raw: &str, normalized: &str) -> StatementInfo {
        // parsed once per shape; the router and the fingerprint share the AST
        let ast = classify::parse(raw);
        StatementInfo {
            normalized: normalized.into(),
            session: effects::session_effect(normalized),
            route: classify::classify(ast.as_deref()),
            fingerprint: crate::insight::fingerprint::fingerprint(raw, ast.as_deref()),
        }
    }
}

/// Shards of the process-wide cache.
const SHARDS: usize = 16;
/// Entries per shard (and per thread-local map) before it is cleared.
const SHARD_CAP: usize = 4096;
const LOCAL_CAP: usize = 8192;

/// The process-wide cache of analysed shapes.
pub struct Analyzer {
    shards: Vec<RwLock<HashMap<u64, Arc<StatementInfo>>>>,
    /// Distinguishes analysers in the thread-local maps (tests build several).
    id: u64,
}

impl Default for Analyzer {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static SCRATCH: RefCell<String> = RefCell::new(String::with_capacity(256));
    static LOCAL: RefCell<HashMap<(u64, u64), Arc<StatementInfo>>> = RefCell::new(HashMap::new());
}

impl Analyzer {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Analyzer {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Normalise `sql`, find (or compute) the analysis of its shape, and hand both to `f`.
    pub fn with<R>(&self, sql: &str, f: impl FnOnce(&Normalized, &StatementInfo) -> R) -> R {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let norm = normalize::normalize_into(sql, &mut scratch);
            let key = (self.id, norm.hash);
            // a hit in this thread's map is used in place: no reference count is touched,
            // so threads running the same statement share no written cache line
            let looked = LOCAL.with(|l| match l.borrow().get(&key) {
                Some(info) => Ok(f(&norm, info)),
                None => Err(f),
            });
            let f = match looked {
                Ok(r) => return r,
                Err(f) => f,
            };
            let info = self.shared(norm.hash, sql, &scratch);
            LOCAL.with(|l| {
                let mut l = l.borrow_mut();
                if l.len() >= LOCAL_CAP {
                    l.clear();
                }
                l.insert(key, info.clone());
            });
            f(&norm, &info)
        })
    }

    /// The analysis cached under `hash`, if it is still cached (no reference count taken:
    /// a hit in this thread's map is used in place).
    pub fn with_hash<R>(&self, hash: u64, f: impl FnOnce(&StatementInfo) -> R) -> Option<R> {
        let mut f = Some(f);
        let local = LOCAL.with(|l| {
            let map = l.borrow();
            let info = map.get(&(self.id, hash))?;
            f.take().map(|f| f(info))
        });
        if local.is_some() {
            return local;
        }
        let info = self.shards[(hash as usize) % SHARDS]
            .read()
            .get(&hash)?
            .clone();
        f.take().map(|f| f(&info))
    }

    /// Analysis of `sql` as an owned value (cold paths and tests).
    pub fn analyze(&self, sql: &str) -> (Normalized, Arc<StatementInfo>) {
        let (text, norm) = normalize::normalize(sql);
        let info = self.shared(norm.hash, sql, &text);
        (norm, info)
    }

    fn shared(&self, hash: u64, raw: &str, normalized: &str) -> Arc<StatementInfo> {
        let shard = &self.shards[(hash as usize) % SHARDS];
        if let Some(info) = shard.read().get(&hash) {
            return info.clone();
        }
        let info = Arc::new(StatementInfo::analyze(raw, normalized));
        let mut map = shard.write();
        if map.len() >= SHARD_CAP {
            map.clear();
        }
        map.entry(hash).or_insert(info).clone()
    }

    /// Shapes cached process-wide.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_analysis_per_shape() {
        let a = Analyzer::new();
        for id in 0..100 {
            let dirty = a.with(&format!("select * from t where id = {id}"), |_, i| {
                i.session.dirties()
            });
            assert!(!dirty);
        }
        assert_eq!(a.len(), 1);
        assert!(a.with("SET search_path = x", |_, i| i.session.dirties()));
        assert_eq!(a.len(), 2);
    }
}
