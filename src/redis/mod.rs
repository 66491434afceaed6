//! The Redis proxy: RESP2/RESP3 clients in front, Redis standalone or Cluster behind, and
//! a coherent in-process L1 cache for hot reads.
//!
//! ```text
//! client --RESP--> listener -> session --(command table)--+--> L1 hit: answered in process
//!                                                         +--> shared path: fred pool (slot-routed)
//!                                                         +--> dedicated link: blocking, MULTI/WATCH, pub/sub
//! Redis primaries --CLIENT TRACKING (BCAST)--> tracking --invalidate/flush--> L1
//! ```
//!
//! * [`resp`]: sans-IO framing with limits checked before allocation, and reply encoding;
//! * [`commands`]: the command table every decision comes from;
//! * [`session`]: one client's loop (pipelining answered in order);
//! * [`l1`] and [`tracking`]: the cache and what keeps it coherent;
//! * [`backend`]: fred pools, topology, and raw links to single nodes;
//! * [`failover`]: following a primary that Redis Sentinel moves.

pub mod backend;
pub mod budget;
pub mod client_tracking;
pub mod clients;
pub mod commands;
pub mod config;
pub mod error;
pub mod failover;
pub mod l1;
pub mod listener;
pub mod metrics;
pub mod pause;
pub mod pubsub;
pub mod resp;
pub mod session;
pub mod tracking;
pub mod writethrough;

/// A command's arguments from words, for unit tests.
#[cfg(test)]
pub(crate) fn test_args(words: &[&str]) -> Vec<bytes::Bytes> {
    words
        .iter()
        .map(|w| bytes::Bytes::from(w.to_string()))
        .collect()
}

use backend::Backend;
use config::RedisConfig;
use error::Error;
use l1::L1;
use metrics::RedisMetrics;
use parking_lot::Mutex;
use resp::Limits;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tracking::Tracking;

/// Everything the Redis sessions share.
pub struct Service {
    pub config: RedisConfig,
    pub backend: Arc<Backend>,
    pub l1: Option<Arc<L1>>,
    pub tracking: Option<Arc<Tracking>>,
    /// Follows Sentinel failovers (when the primary is found through Sentinel).
    pub failover: Option<Arc<failover::Failover>>,
    pub metrics: Arc<RedisMetrics>,
    pub limits: Limits,
    /// TLS for clients (`client_tls_sslmode` other than `disable`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    clients: AtomicUsize,
    next_id: AtomicU64,
    /// ACL user names interned to small ids for cache keys.
    users: Mutex<HashMap<String, u32>>,
    closing: tokio::sync::watch::Sender<bool>,
    /// Injected faults (admin API), shared with the Postgres side.
    pub faults: Arc<crate::faults::Faults>,
    /// Pake's client connections (CLIENT LIST/KILL) and MONITORs.
    pub registry: Arc<clients::Registry>,
    /// What all clients together may hold for requests and replies (`clients_max_memory`).
    pub budget: Arc<budget::Budget>,
    /// Commands per client address (`rate_limit_per_address`).
    pub rate: crate::limits::RateLimiter,
    /// Fails shared-path commands fast while Redis keeps failing (`circuit_breaker_*`).
    pub breaker: Option<crate::limits::Breaker>,
    /// A client must log in before its commands run (`require_client_auth`).
    pub auth_required: bool,
    /// Subscriptions being opened, which publishes read after them wait for.
    pub subscriptions: Arc<pubsub::Openings>,
    /// Blocking commands being opened, which writes and blocking commands read after them
    /// wait for ([`pubsub`]).
    pub blocking: Arc<pubsub::Openings>,
    /// A `CLIENT PAUSE` sent through Pake, while in effect ([`pause`]).
    pub pauses: Arc<pause::Pauses>,
}

/// Bytes a MONITOR may fall behind before Pake drops it.
const MONITOR_BUDGET: usize = 4 << 20;

impl Service {
    /// Connect to Redis (failing when it cannot be reached) and start tracking, its streams
    /// spread over `reactors` (the Redis reactor threads' runtimes; none: this runtime).
    pub async fn start(
        config: RedisConfig,
        registry: &prometheus::Registry,
        faults: Arc<crate::faults::Faults>,
        reactors: Vec<tokio::runtime::Handle>,
    ) -> Result<Arc<Service>, Error> {
        let metrics = RedisMetrics::new(registry);
        let tls = client_tls(&config)?;
        let backend = Backend::connect(&config).await?;
        let (l1, tracking) = if config.l1 {
            let l1 = L1::new(
                config.l1_max_bytes.0,
                config.l1_max_entry_size.0 as usize,
                config.l1_max_ttl.0,
                metrics.clone(),
            );
            let tracking = Tracking::start(
                &config,
                backend.clone(),
                l1.clone(),
                metrics.clone(),
                reactors,
            );
            (Some(l1), Some(tracking))
        } else {
            (None, None)
        };
        let failover = failover::Failover::start(
            backend.clone(),
            tracking.clone(),
            metrics.clone(),
            config.read_from_replicas,
            config.sentinel_check_interval.0,
        );
        let limits = Limits {
            max_bulk_len: config.max_bulk_len.0 as usize,
            max_depth: config.max_nesting,
            ..Limits::default()
        };
        let budget = budget::Budget::new(config.clients_max_memory.0 as usize);
        let breaker = (config.circuit_breaker_failures > 0).then(|| {
            crate::limits::Breaker::new(
                "redis".into(),
                config.circuit_breaker_failures,
                config.circuit_breaker_cooldown.0,
                metrics.circuit_state.clone(),
                metrics.circuit_opened.clone(),
            )
        });
        let auth_required = config
            .require_client_auth
            .unwrap_or_else(|| backend.has_password());
        let pauses = Arc::new(pause::Pauses::new(config.max_held_writes));
        Ok(Arc::new(Service {
            auth_required,
            budget,
            rate: crate::limits::RateLimiter::default(),
            breaker,
            config,
            backend,
            l1,
            tracking,
            failover,
            metrics,
            limits,
            tls,
            clients: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            users: Mutex::new(HashMap::new()),
            closing: tokio::sync::watch::channel(false).0,
            faults,
            registry: clients::Registry::new(MONITOR_BUDGET),
            subscriptions: Arc::default(),
            blocking: Arc::default(),
            pauses,
        }))
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The id of an ACL user name (0 is the URL's identity).
    pub fn user_id(&self, name: Option<&str>) -> u32 {
        let Some(name) = name else { return 0 };
        let mut users = self.users.lock();
        let next = users.len() as u32 + 1;
        *users.entry(name.to_string()).or_insert(next)
    }

    /// Count a client in; `None` when `max_clients` is reached.
    pub fn admit(self: &Arc<Self>) -> Option<ClientGuard> {
        let n = self.clients.fetch_add(1, Ordering::AcqRel);
        let guard = ClientGuard { svc: self.clone() };
        if n >= self.config.max_clients {
            return None;
        }
        self.metrics.client_connections.inc();
        Some(guard)
    }

    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// One command from `addr`: `false` when it is over `rate_limit_per_address`.
    pub fn within_rate(&self, addr: Option<std::net::SocketAddr>) -> bool {
        let rate = self.config.rate_limit_per_address;
        let Some(addr) = addr.filter(|_| rate > 0.0) else {
            return true;
        };
        let burst = (rate * self.config.rate_limit_burst.0.as_secs_f64()).max(1.0);
        let ok = self.rate.take_addr(addr.ip(), rate, burst);
        if !ok {
            self.metrics.rate_limited.inc();
        }
        ok
    }

    /// A new client's request and reply meters, charging the process budget.
    pub fn meters(&self) -> (budget::Meter, budget::Meter) {
        let limit = |b: crate::config::Bytes| usize::try_from(b.0).unwrap_or(usize::MAX);
        let meter = |what: budget::What, max| {
            budget::Meter::new(what, limit(max), self.budget.clone())
                .counted(self.metrics.budget_counters(what.key()))
        };
        (
            meter(budget::What::Request, self.config.client_max_request_bytes),
            meter(budget::What::Reply, self.config.client_max_reply_bytes),
        )
    }

    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Stop accepting and ask every session to finish; then stop tracking and close pools.
    /// A reload's `[redis]` section: the L1's entry-size and TTL limits apply at once; any
    /// other change is reported as needing a restart (connections, listeners, tracking and
    /// the L1's byte budget are built at startup). One line per change, for `RELOAD`/SIGHUP.
    pub fn reload(&self, old: Option<&RedisConfig>, new: Option<&RedisConfig>) -> Vec<String> {
        let (Some(old), Some(new)) = (old, new) else {
            return match (old, new) {
                (None, None) => Vec::new(),
                _ => vec!["[redis] added or removed: takes effect after a restart".into()],
            };
        };
        let mut report = Vec::new();
        let live = ["l1_max_entry_size", "l1_max_ttl"];
        if let Some(l1) = self.l1.as_ref().filter(|_| new.l1) {
            if (old.l1_max_entry_size.0, old.l1_max_ttl.0)
                != (new.l1_max_entry_size.0, new.l1_max_ttl.0)
            {
                l1.set_limits(new.l1_max_entry_size.0 as usize, new.l1_max_ttl.0);
                report.push(format!(
                    "redis: L1 limits now l1_max_entry_size = {:?}, l1_max_ttl = {:?}",
                    new.l1_max_entry_size, new.l1_max_ttl.0
                ));
            }
        }
        let table = |c: &RedisConfig| match toml::Value::try_from(c) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        let (a, b) = (table(old), table(new));
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if a.get(k) != b.get(k) && (self.l1.is_none() || !live.contains(&k.as_str())) {
                report.push(format!("redis.{k} changed: takes effect after a restart"));
            }
        }
        report
    }

    pub async fn drain(&self, timeout: std::time::Duration) {
        self.closing.send_replace(true);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.client_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if let Some(f) = &self.failover {
            f.stop();
        }
        if let Some(t) = &self.tracking {
            t.stop();
        }
        self.backend.close().await;
    }
}

/// The acceptor for the listener, from the `client_tls_*` keys (`None` when disabled).
fn client_tls(config: &RedisConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, Error> {
    if config.client_tls_sslmode == config::ClientTlsMode::Disable {
        return Ok(None);
    }
    match (&config.client_tls_cert_file, &config.client_tls_key_file) {
        (Some(cert), Some(key)) => crate::tls::acceptor(cert, key)
            .map(Some)
            .map_err(|e| Error::Tls(format!("redis.client_tls_cert_file/client_tls_key_file: {e}"))),
        _ => Err(Error::Tls(
            "redis.client_tls_cert_file and client_tls_key_file are required when client_tls_sslmode is not disable".into(),
        )),
    }
}

/// Releases a client's place in `max_clients` when dropped.
pub struct ClientGuard {
    svc: Arc<Service>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        if self.svc.clients.fetch_sub(1, Ordering::AcqRel) <= self.svc.config.max_clients {
            self.svc.metrics.client_connections.dec();
        }
    }
}
