//! Following a primary that Redis Sentinel moves: one task per sentinel listens for
//! `+switch-master`, and a follower asks all the sentinels ([`Sentinels::resolve`]) when one
//! of them speaks, when the data path sees a sign of a move (READONLY replies, lost
//! connections, a dropped tracking stream), and every `sentinel_check_interval` in case an
//! event was missed.
//!
//! A switch runs in this order, so the L1 never serves an entry the new primary's
//! invalidations would not cover:
//! 1. the backend reports no primary, and tracking stops the old primary's stream, which
//!    disarms and flushes the whole L1 (one primary covers every slot): no hit, no fill;
//! 2. every pool is rebuilt on the new primary and the generation bumped, so sessions rebind
//!    before their next command; an L1 ticket taken by a session still on the old generation
//!    is not trusted;
//! 3. tracking arms on the new primary; fills resume once `CLIENT TRACKING` is acknowledged.

use super::backend::sentinel::{Resolved, Sentinels};
use super::backend::Backend;
use super::metrics::RedisMetrics;
use super::tracking::Tracking;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub struct Failover {
    backend: Arc<Backend>,
    tracking: Option<Arc<Tracking>>,
    metrics: Arc<RedisMetrics>,
    read_from_replicas: bool,
    interval: Duration,
    /// The sentinels' config epoch of the primary Pake follows; answers with an older epoch
    /// come from a sentinel that has not heard of the last failover, and are ignored.
    epoch: AtomicU64,
    /// No sentinel answered at the last check (logged once per outage, not per check).
    blind: AtomicBool,
    wake: Arc<Notify>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Failover {
    /// Start watching, when the backend found its primary through Sentinel.
    pub fn start(
        backend: Arc<Backend>,
        tracking: Option<Arc<Tracking>>,
        metrics: Arc<RedisMetrics>,
        read_from_replicas: bool,
        interval: Duration,
    ) -> Option<Arc<Failover>> {
        let sentinels = backend.sentinels.clone()?;
        let f = Arc::new(Failover {
            backend,
            tracking,
            metrics,
            read_from_replicas,
            interval,
            epoch: AtomicU64::new(0),
            blind: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let mut tasks = Vec::new();
        for addr in sentinels.addrs() {
            tasks.push(tokio::spawn(watch(
                sentinels.clone(),
                addr.clone(),
                f.wake.clone(),
            )));
        }
        tasks.push(tokio::spawn(f.clone().follow(sentinels)));
        *f.tasks.lock() = tasks;
        Some(f)
    }

    async fn follow(self: Arc<Self>, sentinels: Sentinels) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.backend.suspected() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
            match sentinels.resolve().await {
                Ok(found) => {
                    if self.blind.swap(false, SeqCst) {
                        tracing::info!("a sentinel answers again");
                    }
                    self.apply(found).await;
                }
                Err(e) => {
                    if !self.blind.swap(true, SeqCst) {
                        tracing::warn!(error = %e, "no sentinel answers: a failover now would not be followed");
                    }
                }
            }
            // a burst of events (several sentinels, every failing command of every session
            // while the primary is down) makes one check per 100 ms at most
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn apply(&self, found: Resolved) {
        let replicas = if self.read_from_replicas {
            found.replicas.clone()
        } else {
            Vec::new()
        };
        let current = self.backend.seed();
        if found.primary == current {
            self.epoch.fetch_max(found.epoch, SeqCst);
            self.backend.set_replicas(replicas);
            return;
        }
        if found.epoch < self.epoch.load(SeqCst) {
            tracing::debug!(primary = %found.primary, epoch = found.epoch, "older sentinel answer ignored");
            return;
        }
        self.switch(&current, found, replicas).await;
    }

    /// Move everything to `found.primary` (the order is the module's doc).
    async fn switch(&self, old: &str, found: Resolved, replicas: Vec<String>) {
        let started = Instant::now();
        self.backend.begin_switch();
        if let Some(t) = &self.tracking {
            t.sync_topology();
        }
        self.backend.repoint(&found.primary, replicas).await;
        if let Some(t) = &self.tracking {
            t.sync_topology();
        }
        self.epoch.store(found.epoch, SeqCst);
        self.metrics.failovers.inc();
        tracing::warn!(
            old = %old,
            new = %found.primary,
            epoch = found.epoch,
            took = ?started.elapsed(),
            "Redis primary switched (Sentinel): L1 flushed, pools and tracking moved to the new primary"
        );
    }

    /// Stop watching (shutdown).
    pub fn stop(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

/// Keep a `+switch-master` subscription open on one sentinel, re-subscribing after a drop.
async fn watch(sentinels: Sentinels, addr: String, wake: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let began = Instant::now();
        let on_event = || wake.notify_one();
        let e = sentinels.watch(&addr, &on_event).await;
        tracing::debug!(sentinel = %addr, error = %e, "sentinel subscription lost; retrying");
        if began.elapsed() > Duration::from_secs(5) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
