//! Server-assisted invalidation: one tracking stream per primary, run by Pake itself over
//! raw RESP (`redis-protocol`), not through fred. fred's tracking support falls short for a
//! shared cache: it drops NULL (flush) invalidations on RESP3, arms BCAST on a single
//! cluster node, passes invalidations through a small lossy broadcast channel, and does not
//! re-arm after a reconnect. Here every primary gets its own connection in BCAST mode, each
//! message is applied to the L1 before the next is read, and any doubt flushes:
//!
//! * the connection drops or fails to arm → the node's slots are disarmed and flushed;
//! * a heartbeat PING is not answered within `tracking_max_lag` → same (invalidations may be
//!   late), then reconnect;
//! * a NULL invalidation (FLUSHALL/FLUSHDB) → the node's slots are flushed;
//! * the slot map changes (MOVED, failover, resharding) → the affected nodes are restarted,
//!   which flushes their old slots and re-arms for the new ones;
//! * Sentinel names a new primary → the failover follower stops the old stream (flushing
//!   everything) before pools move, and the new primary's stream arms after (see
//!   [`super::failover`]).
//!
//! A slot is *armed* only once `CLIENT TRACKING ON` has been acknowledged, so the L1 never
//! fills from a node whose writes it would not hear about.

use super::backend::link::{Link, Target};
use super::backend::{Backend, Primary};
use super::config::{RedisConfig, TrackingProtocol};
use super::error::Error;
use super::l1::L1;
use super::metrics::RedisMetrics;
use super::resp::encode::Proto;
use bytes::Bytes;
use parking_lot::Mutex;
use redis_protocol::resp3::types::BytesFrame;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The running tracking streams, kept in step with the topology.
pub struct Tracking {
    backend: Arc<Backend>,
    l1: Arc<L1>,
    metrics: Arc<RedisMetrics>,
    protocol: TrackingProtocol,
    heartbeat: Duration,
    max_lag: Duration,
    nodes: Mutex<HashMap<String, NodeHandle>>,
}

struct NodeHandle {
    slots: Vec<(u16, u16)>,
    /// `true` once stopped; taken while arming so a stopped task can never arm again.
    stopped: Arc<Mutex<bool>>,
    task: tokio::task::JoinHandle<()>,
}

/// How a tracking stream ended.
enum Ended {
    Lost(Error),
    Lagging(Duration),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Lost(e) => write!(f, "lost: {e}"),
            Ended::Lagging(d) => write!(f, "PING unanswered for {d:?}"),
        }
    }
}

impl Tracking {
    pub fn start(
        cfg: &RedisConfig,
        backend: Arc<Backend>,
        l1: Arc<L1>,
        metrics: Arc<RedisMetrics>,
    ) -> Arc<Tracking> {
        let t = Arc::new(Tracking {
            backend,
            l1,
            metrics,
            protocol: cfg.tracking_protocol,
            heartbeat: cfg.tracking_heartbeat.0,
            max_lag: cfg.tracking_max_lag.0,
            nodes: Mutex::new(HashMap::new()),
        });
        t.sync_topology();
        let weak = Arc::downgrade(&t);
        tokio::spawn(async move {
            // fred updates its slot map on MOVED and reconnects; this catches the rest
            // (a failover with no traffic to the moved slots) with a CLUSTER SLOTS every 5 s
            for tick in 1u64.. {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(t) = weak.upgrade() else { return };
                if t.backend.cluster && tick % 10 == 0 {
                    t.backend.refresh().await;
                }
                t.sync_topology();
            }
        });
        t
    }

    /// Start, restart or stop node streams so there is exactly one per primary, covering
    /// the slots that primary serves now.
    pub fn sync_topology(self: &Arc<Self>) {
        // read under the lock: a primary switch (begin_switch, then this) must not be undone
        // by a concurrent sync that read the old primary just before
        let mut nodes = self.nodes.lock();
        let primaries = self.backend.primaries();
        let stale: Vec<String> = nodes
            .iter()
            .filter(|(addr, h)| {
                !primaries
                    .iter()
                    .any(|p| &p.addr == *addr && p.slots == h.slots)
            })
            .map(|(addr, _)| addr.clone())
            .collect();
        for addr in stale {
            if let Some(h) = nodes.remove(&addr) {
                tracing::info!(node = %addr, "topology changed: tracking stream restarted");
                self.stop_node(h, "topology");
            }
        }
        for p in primaries {
            if let std::collections::hash_map::Entry::Vacant(slot) = nodes.entry(p.addr.clone()) {
                slot.insert(self.spawn_node(p));
            }
        }
    }

    fn stop_node(&self, h: NodeHandle, reason: &str) {
        let mut stopped = h.stopped.lock();
        *stopped = true;
        h.task.abort();
        self.l1.set_armed(&h.slots, false, reason);
    }

    fn spawn_node(self: &Arc<Self>, p: Primary) -> NodeHandle {
        let stopped = Arc::new(Mutex::new(false));
        let task = tokio::spawn(self.clone().run_node(p.clone(), stopped.clone()));
        NodeHandle {
            slots: p.slots,
            stopped,
            task,
        }
    }

    /// Arm, pump invalidations, and on any failure flush and re-arm, until stopped.
    async fn run_node(self: Arc<Self>, p: Primary, stopped: Arc<Mutex<bool>>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.arm(&p.addr).await {
                Ok(mut stream) => {
                    {
                        let stopped = stopped.lock();
                        if *stopped {
                            return;
                        }
                        self.l1.set_armed(&p.slots, true, "armed");
                    }
                    // counted while armed, also when the task is aborted (topology change)
                    let armed = GaugeGuard::inc(&self.metrics.tracking_connections);
                    backoff = Duration::from_millis(50);
                    tracing::debug!(node = %p.addr, "tracking armed");
                    let ended = self.pump(&mut stream, &p).await;
                    drop(armed);
                    let reason = match &ended {
                        Ended::Lost(_) => "tracking_lost",
                        Ended::Lagging(_) => "tracking_lag",
                    };
                    tracing::info!(node = %p.addr, %ended, "tracking stream ended: node flushed");
                    self.l1.set_armed(&p.slots, false, reason);
                    // a primary that drops its connections may have been demoted
                    self.backend.suspect_primary();
                }
                Err(e) => {
                    tracing::debug!(node = %p.addr, error = %e, "cannot arm tracking");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Open the node's tracking connection(s) with BCAST on.
    async fn arm(&self, addr: &str) -> Result<Stream, Error> {
        let key = self.backend.default_key(Proto::Resp3);
        let mut target: Target = self.backend.target(addr.to_string(), &key);
        target.db = 0;
        match self.protocol {
            TrackingProtocol::Resp3 => {
                let mut link = Link::connect(&target).await?;
                link.call_ok(&[b"CLIENT", b"SETNAME", b"pake-tracking"])
                    .await?;
                link.call_ok(&[b"CLIENT", b"TRACKING", b"ON", b"BCAST"])
                    .await?;
                Ok(Stream {
                    link,
                    redirect: None,
                })
            }
            TrackingProtocol::Resp2 => {
                target.proto = Proto::Resp2;
                let mut sub = Link::connect(&target).await?;
                let id = sub.call_ok(&[b"CLIENT", b"ID"]).await?;
                let id = id.get(1..).unwrap_or_default().trim_ascii_end().to_vec();
                sub.call_ok(&[b"CLIENT", b"SETNAME", b"pake-tracking"])
                    .await?;
                sub.call_ok(&[b"SUBSCRIBE", b"__redis__:invalidate"])
                    .await?;
                let mut redirect = Link::connect(&target).await?;
                redirect
                    .call_ok(&[b"CLIENT", b"TRACKING", b"ON", b"BCAST", b"REDIRECT", &id])
                    .await?;
                Ok(Stream {
                    link: sub,
                    redirect: Some(redirect),
                })
            }
        }
    }

    /// Apply invalidations until the stream fails or lags.
    async fn pump(&self, s: &mut Stream, p: &Primary) -> Ended {
        let ping = super::backend::link::command(&[b"PING"]);
        let mut ping_sent: Option<Instant> = None;
        let mut next_ping = Instant::now() + self.heartbeat;
        loop {
            if let Some(sent) = ping_sent {
                if sent.elapsed() > self.max_lag {
                    return Ended::Lagging(sent.elapsed());
                }
            }
            if ping_sent.is_none() && Instant::now() >= next_ping {
                if let Err(e) = s.link.send(&ping).await {
                    return Ended::Lost(e);
                }
                ping_sent = Some(Instant::now());
            }
            let wait = match ping_sent {
                Some(sent) => (sent + self.max_lag).saturating_duration_since(Instant::now()),
                None => next_ping.saturating_duration_since(Instant::now()),
            };
            let frame = match s.next_frame(wait).await {
                Ok(Some(f)) => f,
                Ok(None) => continue, // timer
                Err(e) => return Ended::Lost(e),
            };
            match self.apply(&frame, p) {
                Message::Pong => {
                    if let Some(sent) = ping_sent.take() {
                        self.metrics
                            .tracking_lag
                            .observe(sent.elapsed().as_secs_f64());
                    }
                    next_ping = Instant::now() + self.heartbeat;
                }
                Message::Invalidation | Message::Other => {}
            }
        }
    }

    /// Apply one message from a tracking stream to the L1.
    fn apply(&self, frame: &Bytes, p: &Primary) -> Message {
        let decoded = match self.protocol {
            TrackingProtocol::Resp3 => redis_protocol::resp3::decode::complete::decode_bytes(frame)
                .ok()
                .flatten()
                .map(|(f, _)| f),
            TrackingProtocol::Resp2 => redis_protocol::resp2::decode::decode_bytes(frame)
                .ok()
                .flatten()
                .map(|(f, _)| f.into_resp3()),
        };
        let Some(frame) = decoded else {
            tracing::trace!(?frame, "undecodable tracking message");
            return Message::Other;
        };
        tracing::trace!(?frame, "tracking message");
        let mut items = match frame {
            BytesFrame::Push { data, .. } | BytesFrame::Array { data, .. } => data,
            BytesFrame::SimpleString { data, .. } if data.eq_ignore_ascii_case(b"PONG") => {
                return Message::Pong
            }
            _ => return Message::Other,
        };
        // redis-protocol lifts a RESP2 pub/sub message to a push led by "pubsub"
        if items.first().and_then(frame_bytes).as_deref() == Some(b"pubsub") {
            items.remove(0);
        }
        let kind = items.first().and_then(frame_bytes);
        match kind.as_deref() {
            Some(b"pong") => Message::Pong,
            // RESP3: [invalidate, keys|null]; RESP2: [message, __redis__:invalidate, keys|null]
            Some(b"invalidate") => self.invalidate(items.get(1), p),
            Some(b"message") => self.invalidate(items.get(2), p),
            _ => Message::Other,
        }
    }

    fn invalidate(&self, keys: Option<&BytesFrame>, p: &Primary) -> Message {
        match keys {
            Some(BytesFrame::Array { data, .. }) => {
                for k in data {
                    if let Some(k) = frame_bytes(k) {
                        self.l1.invalidate_key(&k);
                    }
                }
            }
            Some(BytesFrame::Null) | None => self.l1.flush_slots(&p.slots, "flushall"),
            Some(_) => {}
        }
        Message::Invalidation
    }

    /// Stop every stream (shutdown).
    pub fn stop(&self) {
        for (_, h) in self.nodes.lock().drain() {
            self.stop_node(h, "shutdown");
        }
    }
}

/// One unit of a gauge, given back on drop.
struct GaugeGuard(prometheus::IntGauge);

impl GaugeGuard {
    fn inc(g: &prometheus::IntGauge) -> GaugeGuard {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

enum Message {
    Pong,
    Invalidation,
    Other,
}

fn frame_bytes(f: &BytesFrame) -> Option<Bytes> {
    match f {
        BytesFrame::BlobString { data, .. } | BytesFrame::SimpleString { data, .. } => {
            Some(data.clone())
        }
        _ => None,
    }
}

/// A node's tracking connection (and, in RESP2 mode, the connection whose tracking is
/// redirected to it: if that one closes, Redis stops sending invalidations).
struct Stream {
    link: Link,
    redirect: Option<Link>,
}

impl Stream {
    /// The next frame, or `None` when `wait` passes first.
    async fn next_frame(&mut self, wait: Duration) -> Result<Option<Bytes>, Error> {
        let Stream { link, redirect } = self;
        if let Some(f) = link.buffered_frame()? {
            return Ok(Some(f));
        }
        let redirect_closed = async {
            match redirect.as_mut() {
                Some(r) => r.fill().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = link.fill() => r.map(|_| None),
            r = redirect_closed => match r {
                Err(e) => Err(e),
                Ok(()) => Ok(None), // stray bytes on the redirecting connection: ignore
            },
            _ = tokio::time::sleep(wait) => Ok(None),
        }
    }
}
