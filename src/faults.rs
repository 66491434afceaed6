//! Fault injection, the way Toxiproxy or Envoy's fault filter do it, so teams can test their
//! services through Pake against a slow or failing database.
//!
//! Faults are added through the admin API (authenticated, and refused unless
//! `general.fault_injection = true`): added latency, an error (a SQLSTATE for Postgres, a
//! `-ERR` for Redis), a connection reset, or a bandwidth cap — scoped to a pool, a backend, a
//! Redis command or a statement fingerprint, for a share of requests, until they expire.
//! Nothing is ever injected unless asked for, and with no fault active the request path pays
//! one relaxed atomic load.

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a fault does to the requests it hits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// Delay the request by this many milliseconds before it is forwarded.
    Latency { millis: u64 },
    /// Answer with an error instead of forwarding: `sqlstate` for Postgres (default 58000,
    /// system_error), `redis_error` for Redis (default `ERR injected fault`).
    Error {
        #[serde(default)]
        sqlstate: Option<String>,
        #[serde(default)]
        redis_error: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
    /// Close the client connection abruptly (no error message).
    Reset,
    /// Deliver responses no faster than this many bytes per second.
    Bandwidth { bytes_per_second: u64 },
}

/// Which requests a fault applies to; every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// A Postgres pool, `database/user`.
    #[serde(default)]
    pub pool: Option<String>,
    /// A backend, `host:port` (a Postgres primary or replica, a Redis node).
    #[serde(default)]
    pub backend: Option<String>,
    /// A Redis command name (`GET`, `HSET`…), case-insensitive.
    #[serde(default)]
    pub redis_command: Option<String>,
    /// A statement fingerprint (hex id) or a fragment of the normalised statement text.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// A fault as the API accepts it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub kind: FaultKind,
    #[serde(default)]
    pub scope: Scope,
    /// Share of matching requests hit, 0 to 1 (default 1).
    #[serde(default = "one")]
    pub share: f64,
    /// Seconds until the fault expires by itself (default 60).
    #[serde(default = "sixty")]
    pub duration_seconds: u64,
}

fn one() -> f64 {
    1.0
}

fn sixty() -> u64 {
    60
}

/// An active fault.
#[derive(Debug)]
pub struct Fault {
    pub id: u64,
    pub spec: FaultSpec,
    pub expires_at_ms: u64,
    pub hits: AtomicU64,
}

/// A fault as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaultView {
    pub id: u64,
    // the spec's fields, spelled out: FaultSpec refuses unknown fields, so a flattened
    // schema would forbid the ones below
    pub kind: FaultKind,
    pub scope: Scope,
    pub share: f64,
    pub duration_seconds: u64,
    /// Seconds left before it expires.
    pub expires_in_seconds: u64,
    /// Requests it has hit so far.
    pub hits: u64,
}

/// What a request looks like to the matcher.
#[derive(Debug, Default, Clone, Copy)]
pub struct Target<'a> {
    pub pool: Option<&'a str>,
    pub backend: Option<&'a str>,
    pub redis_command: Option<&'a str>,
    pub fingerprint: Option<u64>,
    pub statement: Option<&'a str>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultError {
    #[error("fault injection is disabled: set general.fault_injection = true")]
    Disabled,
    #[error("invalid fault: {0}")]
    Invalid(String),
    #[error("no fault with id {0}")]
    NotFound(u64),
}

/// The registry of active faults.
#[derive(Default)]
pub struct Faults {
    enabled: AtomicBool,
    active: ArcSwap<Vec<Arc<Fault>>>,
    any: AtomicBool,
    next_id: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Faults {
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
        if !on {
            self.active.store(Arc::new(Vec::new()));
            self.any.store(false, Ordering::Relaxed);
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn add(&self, spec: FaultSpec) -> Result<FaultView, FaultError> {
        if !self.enabled() {
            return Err(FaultError::Disabled);
        }
        validate(&spec)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let fault = Arc::new(Fault {
            id,
            expires_at_ms: now_ms() + spec.duration_seconds * 1000,
            spec,
            hits: AtomicU64::new(0),
        });
        let mut list: Vec<Arc<Fault>> = self.live();
        list.push(fault.clone());
        self.active.store(Arc::new(list));
        self.any.store(true, Ordering::Relaxed);
        tracing::warn!(id, fault = ?fault.spec, "fault injected");
        Ok(view(&fault))
    }

    pub fn remove(&self, id: u64) -> Result<(), FaultError> {
        if !self.enabled() {
            return Err(FaultError::Disabled);
        }
        let list = self.live();
        if !list.iter().any(|f| f.id == id) {
            return Err(FaultError::NotFound(id));
        }
        let kept: Vec<_> = list.into_iter().filter(|f| f.id != id).collect();
        self.any.store(!kept.is_empty(), Ordering::Relaxed);
        self.active.store(Arc::new(kept));
        Ok(())
    }

    fn live(&self) -> Vec<Arc<Fault>> {
        let now = now_ms();
        self.active
            .load()
            .iter()
            .filter(|f| f.expires_at_ms > now)
            .cloned()
            .collect()
    }

    pub fn list(&self) -> Vec<FaultView> {
        self.live().iter().map(|f| view(f)).collect()
    }

    /// No fault is active (one relaxed load: the request path's only cost).
    pub fn list_is_empty(&self) -> bool {
        !self.any.load(Ordering::Relaxed)
    }

    /// The fault that hits this request, if any (cheap when none is active).
    pub fn pick(&self, t: &Target<'_>) -> Option<Arc<Fault>> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let now = now_ms();
        let active = self.active.load();
        let fault = active
            .iter()
            .find(|f| f.expires_at_ms > now && matches(&f.spec.scope, t))?;
        if fault.spec.share < 1.0 && rand::random::<f64>() >= fault.spec.share {
            return None;
        }
        fault.hits.fetch_add(1, Ordering::Relaxed);
        Some(fault.clone())
    }
}

fn view(f: &Fault) -> FaultView {
    FaultView {
        id: f.id,
        kind: f.spec.kind.clone(),
        scope: f.spec.scope.clone(),
        share: f.spec.share,
        duration_seconds: f.spec.duration_seconds,
        expires_in_seconds: f.expires_at_ms.saturating_sub(now_ms()) / 1000,
        hits: f.hits.load(Ordering::Relaxed),
    }
}

fn validate(spec: &FaultSpec) -> Result<(), FaultError> {
    if !(0.0..=1.0).contains(&spec.share) {
        return Err(FaultError::Invalid("share must be between 0 and 1".into()));
    }
    if spec.duration_seconds == 0 {
        return Err(FaultError::Invalid(
            "duration_seconds must be at least 1".into(),
        ));
    }
    match &spec.kind {
        FaultKind::Error {
            sqlstate: Some(code),
            ..
        } if code.len() != 5 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) => Err(
            FaultError::Invalid(format!("sqlstate {code:?} is not five characters")),
        ),
        FaultKind::Bandwidth {
            bytes_per_second: 0,
        } => Err(FaultError::Invalid(
            "bytes_per_second must be more than 0".into(),
        )),
        _ => Ok(()),
    }
}

fn matches(s: &Scope, t: &Target<'_>) -> bool {
    let eq = |want: &Option<String>, have: Option<&str>| {
        want.as_deref()
            .is_none_or(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w)))
    };
    let fp = s.fingerprint.as_deref().is_none_or(|w| {
        let by_id = t
            .fingerprint
            .is_some_and(|id| format!("{id:016x}") == w.to_ascii_lowercase());
        let by_text = t
            .statement
            .is_some_and(|text| text.to_ascii_lowercase().contains(&w.to_ascii_lowercase()));
        by_id || by_text
    });
    eq(&s.pool, t.pool) && eq(&s.backend, t.backend) && eq(&s.redis_command, t.redis_command) && fp
}

impl FaultKind {
    /// The delay a latency fault adds.
    pub fn latency(&self) -> Option<Duration> {
        match self {
            FaultKind::Latency { millis } => Some(Duration::from_millis(*millis)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: FaultKind, scope: Scope) -> FaultSpec {
        FaultSpec {
            kind,
            scope,
            share: 1.0,
            duration_seconds: 60,
        }
    }

    #[test]
    fn nothing_unless_enabled_and_asked() {
        let f = Faults::default();
        assert!(f.pick(&Target::default()).is_none());
        assert_eq!(
            f.add(spec(FaultKind::Reset, Scope::default())).unwrap_err(),
            FaultError::Disabled
        );
        f.set_enabled(true);
        assert!(f.pick(&Target::default()).is_none());
        f.add(spec(FaultKind::Reset, Scope::default())).unwrap();
        assert!(f.pick(&Target::default()).is_some());
    }

    #[test]
    fn scopes_match_only_their_requests() {
        let f = Faults::default();
        f.set_enabled(true);
        let v = f
            .add(spec(
                FaultKind::Latency { millis: 5 },
                Scope {
                    pool: Some("app/alice".into()),
                    fingerprint: Some("from orders".into()),
                    ..Scope::default()
                },
            ))
            .unwrap();
        let hit = Target {
            pool: Some("app/alice"),
            statement: Some("select * from orders where id = ?"),
            ..Target::default()
        };
        assert!(f.pick(&hit).is_some());
        assert!(f
            .pick(&Target {
                pool: Some("app/bob"),
                ..hit
            })
            .is_none());
        assert!(f
            .pick(&Target {
                statement: Some("select 1"),
                ..hit
            })
            .is_none());
        assert_eq!(f.list()[0].hits, 1);
        f.remove(v.id).unwrap();
        assert!(f.pick(&hit).is_none());
        assert_eq!(f.remove(v.id).unwrap_err(), FaultError::NotFound(v.id));
    }

    #[test]
    fn share_and_validation() {
        let f = Faults::default();
        f.set_enabled(true);
        let mut s = spec(FaultKind::Reset, Scope::default());
        s.share = 0.3;
        f.add(s).unwrap();
        let hits = (0..10_000)
            .filter(|_| f.pick(&Target::default()).is_some())
            .count();
        assert!((2500..3500).contains(&hits), "{hits}");
        let mut bad = spec(FaultKind::Reset, Scope::default());
        bad.share = 2.0;
        assert!(f.add(bad).is_err());
        let bad = spec(
            FaultKind::Error {
                sqlstate: Some("oops".into()),
                redis_error: None,
                message: None,
            },
            Scope::default(),
        );
        assert!(f.add(bad).is_err());
    }
}
