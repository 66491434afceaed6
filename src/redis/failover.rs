//! Following a primary that Redis Sentinel moves: one task per sentinel listens for
//! the steps of a promotion and for `+switch-master`. A promotion moves Pake to the
//! replica as soon as it says `role:master` itself (asked every 10 ms from the moment the
//! leader selects it, not when the leader notices, up to a second later); sentinels still naming the old primary are
//! not followed back to it until `+switch-master` confirms the move ([`PROMOTION_HOLD`] at
//! most: their config epoch can be bumped before the switch, so it cannot tell). Otherwise
//! the follower asks all the sentinels ([`Sentinels::resolve`]) when one of them speaks, when the data path sees a sign of a move (READONLY replies, lost
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

use super::backend::link::Link;
use super::backend::sentinel::{Resolved, Sentinels};
use super::backend::Backend;
use super::metrics::RedisMetrics;
use super::resp::encode::Proto;
use super::tracking::Tracking;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long answers naming the primary a promotion left are ignored, waiting for the
/// sentinels to announce the switch (they do when the failover ends, well within this).
const PROMOTION_HOLD: Duration = Duration::from_secs(30);

/// How long a replica being promoted is watched for becoming a primary.
const PROMOTION_WAIT: Duration = Duration::from_secs(5);

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
    /// The replica a promotion step named, not yet acted on, and its own wake-up (a
    /// promotion does not wait out the pause between checks).
    promoted: Arc<Mutex<Option<String>>>,
    urgent: Arc<Notify>,
    /// The primary a promotion moved away from, and when.
    left: Mutex<Option<(String, Instant)>>,
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
            promoted: Arc::new(Mutex::new(None)),
            urgent: Arc::new(Notify::new()),
            left: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        let mut tasks = Vec::new();
        for addr in sentinels.addrs() {
            tasks.push(tokio::spawn(watch(
                sentinels.clone(),
                addr.clone(),
                f.wake.clone(),
                f.promoted.clone(),
                f.urgent.clone(),
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
                _ = self.urgent.notified() => {}
                _ = self.backend.suspected() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
            let promoted = self.promoted.lock().take();
            if let Some(addr) = promoted {
                self.promote(addr).await;
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
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.urgent.notified() => self.urgent.notify_one(),
            }
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
            *self.left.lock() = None;
            self.epoch.fetch_max(found.epoch, SeqCst);
            self.backend.set_replicas(replicas);
            return;
        }
        let held = matches!(&*self.left.lock(),
            Some((old, at)) if *old == found.primary && at.elapsed() < PROMOTION_HOLD);
        if held {
            tracing::debug!(primary = %found.primary, "sentinels not switched yet: the promoted replica stays primary");
            return;
        }
        if found.epoch < self.epoch.load(SeqCst) {
            tracing::debug!(primary = %found.primary, epoch = found.epoch, "older sentinel answer ignored");
            return;
        }
        self.switch(&current, found, replicas).await;
    }

    /// Follow a promotion: the sentinels still name the old primary (they switch at the end
    /// of the failover), so the replica itself is asked until it says it is a primary
    /// ([`PROMOTION_WAIT`] at most: a failover can be aborted before the promotion), and
    /// the old primary is held off until they switch.
    async fn promote(&self, addr: String) {
        let current = self.backend.seed();
        if addr == current {
            return;
        }
        if !self.wait_master(&addr).await {
            tracing::info!(replica = %addr, "the replica being promoted did not become primary; staying with the sentinels' answer");
            return;
        }
        let found = Resolved {
            primary: addr,
            epoch: self.epoch.load(SeqCst),
            // reads stay on the primary until the sentinels list the replicas again
            replicas: Vec::new(),
        };
        *self.left.lock() = Some((current.clone(), Instant::now()));
        self.switch(&current, found, Vec::new()).await;
    }

    /// Ask `addr` its `ROLE` every 10 ms until it is a primary (true) or [`PROMOTION_WAIT`]
    /// passes (false).
    async fn wait_master(&self, addr: &str) -> bool {
        let deadline = Instant::now() + PROMOTION_WAIT;
        let target = self
            .backend
            .target(addr.to_string(), &self.backend.default_key(Proto::Resp2));
        let timeout = self.backend.command_timeout();
        let mut link = None;
        while Instant::now() < deadline {
            if link.is_none() {
                link = tokio::time::timeout(timeout, Link::connect(&target))
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            if let Some(l) = link.as_mut() {
                match tokio::time::timeout(timeout, l.call(&[b"ROLE"])).await {
                    Ok(Ok(reply)) if reply.starts_with(b"*3\r\n$6\r\nmaster\r\n") => return true,
                    Ok(Ok(_)) => {}
                    _ => link = None,
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
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

/// Keep a subscription open on one sentinel, re-subscribing after a drop.
async fn watch(
    sentinels: Sentinels,
    addr: String,
    wake: Arc<Notify>,
    promoted: Arc<Mutex<Option<String>>>,
    urgent: Arc<Notify>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let began = Instant::now();
        let on_event = |p: Option<String>| match p {
            Some(p) => {
                *promoted.lock() = Some(p);
                urgent.notify_one()
            }
            None => wake.notify_one(),
        };
        let e = sentinels.watch(&addr, &on_event).await;
        tracing::debug!(sentinel = %addr, error = %e, "sentinel subscription lost; retrying");
        if began.elapsed() > Duration::from_secs(5) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
