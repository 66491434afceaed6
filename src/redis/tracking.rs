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
//!
//! Each stream's task runs on one of the Redis reactor threads, the nodes dealt out in
//! turn, not on the main runtime: a session's write-through to a stream on its own thread
//! is a local hand-over both ways, and no third set of threads wakes for every write
//! (measured: CPU per operation on redis-getset 14.3 → 11.8 µs, context switches per
//! operation 0.22 → 0.08). One connection per node, not one per thread: with NOLOOP, each
//! connection hears of Pake's writes made on the others, so a sibling's invalidation would
//! undo most write-through fills.

use super::backend::link::{Link, Target};
use super::backend::{Backend, Primary};
use super::client_tracking::ClientTracking;
use super::config::{RedisConfig, TrackingProtocol};
use super::error::Error;
use super::l1::{Ticket, L1, SLOTS};
use super::metrics::RedisMetrics;
use super::resp::encode::Proto;
use super::writethrough::{pttl, CommandIds, Plan, Ttl};
use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use redis_protocol::resp3::types::BytesFrame;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Writes queued for one node's tracking connection before sessions fall back to the pools.
const WRITE_QUEUE: usize = 1024;
/// Commands in flight on one tracking connection before the queue is left waiting.
const MAX_IN_FLIGHT: usize = 4096;

/// A planned write ([`super::writethrough`]) for the tracking connection of its node.
pub struct WriteReq {
    /// The write as the client sent it, then `PTTL key` when the plan asks for it.
    pub bytes: Bytes,
    pub plan: Plan,
    pub db: u8,
    /// The client's protocol: fills are cached under it.
    pub proto: Proto,
    pub sent: Instant,
    /// The client whose write this is (its `CLIENT TRACKING` hears of it from here).
    pub origin: u64,
    /// The write's reply, exactly as Redis sent it (RESP3).
    pub reply: oneshot::Sender<Bytes>,
}

/// What sessions queue for one node's tracking connection.
enum Queued {
    Write(WriteReq),
    /// A `PING`: its reply comes after every invalidation Redis queued for the connection
    /// before it, all applied by then ([`Tracking::heard`]).
    Barrier(oneshot::Sender<()>),
}

/// Where sessions queue writes for one node's tracking connection.
struct Writer {
    tx: mpsc::Sender<Queued>,
    db: u8,
    /// The node's slots, flushed when a barrier cannot be queued.
    slots: Vec<(u16, u16)>,
}

/// What is in flight on a tracking connection, in order.
enum InFlight {
    Ping,
    /// One `PING` for every barrier queued before it was sent.
    Barrier(Vec<oneshot::Sender<()>>),
    Write(Box<WriteReq>),
    /// The write was answered (`first`); its PTTL is next. `tickets` when it was accepted.
    Ttl {
        w: Box<WriteReq>,
        first: Bytes,
        tickets: Option<Vec<Option<Ticket>>>,
    },
}

/// The running tracking streams, kept in step with the topology.
pub struct Tracking {
    backend: Arc<Backend>,
    l1: Arc<L1>,
    metrics: Arc<RedisMetrics>,
    protocol: TrackingProtocol,
    heartbeat: Duration,
    max_lag: Duration,
    nodes: Mutex<HashMap<String, NodeHandle>>,
    /// Per slot, the armed node's write queue (RESP3 tracking only).
    writers: Box<[ArcSwapOption<Writer>]>,
    ids: CommandIds,
    /// The Redis reactor threads' runtimes, node streams spread over them in turn (none:
    /// on the runtime that starts them). A session's write-through to a stream on its own
    /// thread is handed over without waking another thread, there and back.
    reactors: Vec<tokio::runtime::Handle>,
    next_reactor: std::sync::atomic::AtomicUsize,
    /// What Pake's own clients track (`CLIENT TRACKING`): told what the streams hear.
    pub clients: Arc<ClientTracking>,
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
        reactors: Vec<tokio::runtime::Handle>,
    ) -> Arc<Tracking> {
        let client_metrics = metrics.client_tracking.clone();
        let t = Arc::new(Tracking {
            backend,
            l1,
            metrics,
            protocol: cfg.tracking_protocol,
            heartbeat: cfg.tracking_heartbeat.0,
            max_lag: cfg.tracking_max_lag.0,
            nodes: Mutex::new(HashMap::new()),
            writers: (0..SLOTS).map(|_| ArcSwapOption::empty()).collect(),
            ids: CommandIds::lookup(),
            reactors,
            next_reactor: Default::default(),
            clients: Arc::new(ClientTracking::new(
                super::client_tracking::TABLE_MAX_BYTES,
                client_metrics,
            )),
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
        self.release(&h.slots, reason);
    }

    /// A node's stream is gone for good: no more writes queued for its slots, and no fills
    /// from them (disarming flushes what they cached).
    fn release(&self, slots: &[(u16, u16)], reason: &str) {
        self.publish(slots, None, None);
        self.l1.set_armed(slots, false, reason);
        self.clients.flush_all();
    }

    /// Queue a planned write for the tracking connection of `slot`'s node; `false` when
    /// there is none (not armed, RESP2 tracking, another database) or its queue is full.
    pub fn submit(&self, slot: u16, req: WriteReq) -> bool {
        let guard = self.writers[usize::from(slot) % SLOTS].load();
        match guard.as_ref() {
            Some(w) if w.db == req.db => w.tx.try_send(Queued::Write(req)).is_ok(),
            _ => false,
        }
    }

    /// Resolves once every invalidation the node of `slot` (every node: `None`) queued
    /// before now has been applied to the L1 and told to Pake's tracking clients.
    ///
    /// For a write that may change keys it does not name (a script's undeclared keys, a
    /// STORE destination, a flush inside a script): Redis queues their invalidations while
    /// the write runs, or in that event-loop cycle's `beforeSleep` (BCAST), so before it
    /// reads a `PING` sent once the write's reply has arrived; the `PING`'s reply on the
    /// stream therefore follows them. The write's reply waits for it, so no read after the
    /// reply finds the L1 from before. Where no barrier can be queued (RESP2 tracking, a
    /// full queue) the node's slots (RESP2: everything) are flushed instead; a node not
    /// armed has nothing cached. A stream that ends before answering disarms and flushes.
    pub fn heard(&self, slot: Option<u16>) -> impl std::future::Future<Output = ()> {
        let mut waits = Vec::new();
        if self.protocol == TrackingProtocol::Resp2 {
            self.l1.flush_all("unlisted_write");
            self.clients.flush_all();
        } else {
            // one slot per node: a writer serves all of its node's slots
            let slots: Vec<u16> = match slot {
                Some(s) => vec![s],
                None => (self.backend.primaries().iter())
                    .filter_map(|p| p.slots.first().map(|&(start, _)| start))
                    .collect(),
            };
            let mut writers: Vec<Arc<Writer>> = Vec::new();
            for s in slots {
                if let Some(w) = self.writers[usize::from(s) % SLOTS].load().as_ref() {
                    if !writers.iter().any(|o| Arc::ptr_eq(o, w)) {
                        writers.push(w.clone());
                    }
                }
            }
            for w in writers {
                let (tx, rx) = oneshot::channel();
                match w.tx.try_send(Queued::Barrier(tx)) {
                    Ok(()) => waits.push(rx),
                    Err(_) => {
                        self.l1.flush_slots(&w.slots, "unlisted_write");
                        self.clients.flush_all();
                    }
                }
            }
        }
        async move {
            for rx in waits {
                // closed: the stream ended, and disarmed (flushed) its slots first
                let _ = rx.await;
            }
        }
    }

    /// Point `slots` at `writer`; with `only_if`, only slots still pointing at that one (a
    /// stream that ended must not unpublish its successor).
    fn publish(
        &self,
        slots: &[(u16, u16)],
        writer: Option<&Arc<Writer>>,
        only_if: Option<&Arc<Writer>>,
    ) {
        for &(start, end) in slots {
            for s in start..=end.min(SLOTS as u16 - 1) {
                let cell = &self.writers[usize::from(s)];
                match only_if {
                    Some(old) => {
                        let cur = cell.load();
                        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, old)) {
                            cell.compare_and_swap(&*cur, writer.cloned());
                        }
                    }
                    None => cell.store(writer.cloned()),
                }
            }
        }
    }

    fn spawn_node(self: &Arc<Self>, p: Primary) -> NodeHandle {
        let stopped = Arc::new(Mutex::new(false));
        let run = self.clone().run_node(p.clone(), stopped.clone());
        let turn = self
            .next_reactor
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let task = match self.reactors.get(turn % self.reactors.len().max(1)) {
            Some(reactor) => reactor.spawn(run),
            None => tokio::spawn(run),
        };
        NodeHandle {
            slots: p.slots,
            stopped,
            task,
        }
    }

    /// Arm, pump invalidations, and on any failure flush and re-arm, until stopped.
    async fn run_node(self: Arc<Self>, p: Primary, stopped: Arc<Mutex<bool>>) {
        // a stream dropped without being stopped (its reactor thread ended at the end of a
        // drain) disarms its slots on the way out
        let _orphaned = Orphaned {
            tracking: self.clone(),
            slots: p.slots.clone(),
            stopped: stopped.clone(),
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.arm(&p.addr).await {
                Ok((mut stream, db)) => {
                    let (writer, rx) = match self.protocol {
                        TrackingProtocol::Resp3 => {
                            let (tx, rx) = mpsc::channel(WRITE_QUEUE);
                            let slots = p.slots.clone();
                            (Some(Arc::new(Writer { tx, db, slots })), Some(rx))
                        }
                        TrackingProtocol::Resp2 => (None, None),
                    };
                    {
                        let stopped = stopped.lock();
                        if *stopped {
                            return;
                        }
                        self.l1.set_armed(&p.slots, true, "armed");
                        self.publish(&p.slots, writer.as_ref(), None);
                    }
                    // a client may have read from this node while nothing heard its writes
                    self.clients.flush_all();
                    // counted while armed, also when the task is aborted (topology change)
                    let armed = GaugeGuard::inc(&self.metrics.tracking_connections);
                    backoff = Duration::from_millis(50);
                    tracing::debug!(node = %p.addr, "tracking armed");
                    let ended = self.pump(&mut stream, &p, rx).await;
                    if let Some(w) = &writer {
                        self.publish(&p.slots, None, Some(w));
                    }
                    drop(armed);
                    let reason = match &ended {
                        Ended::Lost(_) => "tracking_lost",
                        Ended::Lagging(_) => "tracking_lag",
                    };
                    tracing::info!(node = %p.addr, %ended, "tracking stream ended: node flushed");
                    self.l1.set_armed(&p.slots, false, reason);
                    self.clients.flush_all();
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

    /// Open the node's tracking connection(s) with BCAST on; also the database it selected.
    /// In RESP3 the connection also carries planned writes, so NOLOOP: Redis leaves out the
    /// keys this connection itself changed last (see [`super::writethrough`]).
    async fn arm(&self, addr: &str) -> Result<(Stream, u8), Error> {
        let key = self.backend.default_key(Proto::Resp3);
        let mut target: Target = self.backend.target(addr.to_string(), &key);
        if self.backend.cluster {
            target.db = 0;
        }
        let db = target.db;
        match self.protocol {
            TrackingProtocol::Resp3 => {
                let mut link = Link::connect(&target).await?;
                link.call_ok(&[b"CLIENT", b"SETNAME", b"pake-tracking"])
                    .await?;
                link.call_ok(&[b"CLIENT", b"TRACKING", b"ON", b"BCAST", b"NOLOOP"])
                    .await?;
                let stream = Stream {
                    link,
                    redirect: None,
                };
                Ok((stream, db))
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
                let stream = Stream {
                    link: sub,
                    redirect: Some(redirect),
                };
                Ok((stream, db))
            }
        }
    }

    /// Apply invalidations (and, in RESP3, carry planned writes) until the stream fails or
    /// lags.
    async fn pump(&self, s: &mut Stream, p: &Primary, rx: Option<mpsc::Receiver<Queued>>) -> Ended {
        let ping = super::backend::link::command(&[b"PING"]);
        let in_order = self.protocol == TrackingProtocol::Resp3;
        let mut st = PumpState {
            fifo: VecDeque::new(),
            out: BytesMut::new(),
            ping_sent: None,
            next_ping: Instant::now() + self.heartbeat,
            rx,
            barrier_unsent: false,
        };
        loop {
            if let Some(sent) = st.ping_sent {
                if sent.elapsed() > self.max_lag {
                    return Ended::Lagging(sent.elapsed());
                }
            }
            if st.ping_sent.is_none() && Instant::now() >= st.next_ping {
                st.out.extend_from_slice(&ping);
                st.ping_sent = Some(Instant::now());
                if in_order {
                    st.fifo.push_back(InFlight::Ping);
                }
            }
            st.take_queued();
            if !st.out.is_empty() {
                // every write queued since the last wake-up leaves in one send
                if let Err(e) = s.link.send(&st.out).await {
                    return Ended::Lost(e);
                }
                st.out.clear();
                st.barrier_unsent = false;
            }
            let wait = match st.ping_sent {
                Some(sent) => (sent + self.max_lag).saturating_duration_since(Instant::now()),
                None => st.next_ping.saturating_duration_since(Instant::now()),
            };
            let room = st.fifo.len() < MAX_IN_FLIGHT;
            match s.next_event(wait, st.rx.as_mut().filter(|_| room)).await {
                Ok(Event::Frame(f)) => {
                    if let Err(e) = self.on_frame(&mut st, f, p, in_order) {
                        return Ended::Lost(e);
                    }
                }
                Ok(Event::Queued(q)) => st.queue(q),
                Ok(Event::Idle) => {}
                Ok(Event::Closed) => st.rx = None,
                Err(e) => return Ended::Lost(e),
            }
        }
    }

    /// One frame from the stream: an invalidation push, or (RESP3) the reply to what is
    /// first in flight. Frames are handled one at a time, in the order Redis sent them.
    fn on_frame(
        &self,
        st: &mut PumpState,
        frame: Bytes,
        p: &Primary,
        in_order: bool,
    ) -> Result<(), Error> {
        if in_order && frame.first() != Some(&b'>') {
            match st.fifo.pop_front() {
                Some(InFlight::Ping) => st.pong(self),
                Some(InFlight::Barrier(heard)) => {
                    heard.into_iter().for_each(|h| {
                        let _ = h.send(());
                    });
                }
                Some(InFlight::Write(w)) => {
                    if let Some(next) = self.write_replied(w, frame) {
                        st.fifo.push_front(next);
                    }
                }
                Some(InFlight::Ttl { w, first, tickets }) => {
                    if let (Some(tickets), Some(ttl)) = (tickets, pttl(&frame)) {
                        w.plan
                            .fill(&self.l1, &tickets, ttl, w.sent, w.db, w.proto, self.ids);
                    }
                    let _ = w.reply.send(first);
                }
                None => {
                    let msg = format!("{}: a reply with nothing in flight", p.addr);
                    return Err(Error::LinkLost(msg));
                }
            }
            return Ok(());
        }
        if let Message::Pong = self.apply(&frame, p) {
            st.pong(self);
        }
        Ok(())
    }

    /// A planned write was answered: when it did what was planned, bump its keys and take
    /// the fill tickets now, before the next frame is read (see [`super::writethrough`]).
    fn write_replied(&self, w: Box<WriteReq>, reply: Bytes) -> Option<InFlight> {
        if self.clients.active() {
            // NOLOOP: Redis does not echo this write to the stream; Pake's clients hear of
            // it here, before its writer has the reply
            self.clients.invalidate(&w.plan.keys, Some(w.origin));
        }
        let tickets = w
            .plan
            .accepts(&reply)
            .then(|| w.plan.acknowledged(&self.l1));
        let ttl = match w.plan.ttl {
            Ttl::AskRedis => {
                return Some(InFlight::Ttl {
                    w,
                    first: reply,
                    tickets,
                })
            }
            Ttl::Fixed(d) => Some(d),
            Ttl::Cleared => None,
        };
        if let Some(tickets) = tickets {
            w.plan
                .fill(&self.l1, &tickets, ttl, w.sent, w.db, w.proto, self.ids);
        }
        let _ = w.reply.send(reply);
        None
    }

    /// Apply one message from a tracking stream to the L1.
    fn apply(&self, frame: &Bytes, p: &Primary) -> Message {
        let proto = match self.protocol {
            TrackingProtocol::Resp3 => Proto::Resp3,
            TrackingProtocol::Resp2 => Proto::Resp2,
        };
        let decoded = super::resp::decode_frame(frame, proto);
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
                if self.clients.active() {
                    let keys: Vec<Bytes> = data.iter().filter_map(frame_bytes).collect();
                    self.clients.invalidate(&keys, None);
                }
            }
            Some(BytesFrame::Null) | None => {
                self.l1.flush_slots(&p.slots, "flushall");
                self.clients.flush_all();
            }
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

/// Disarms a node's slots when its stream's task is dropped without [`Tracking::stop_node`]
/// (which marks it stopped first, and then does the same): its invalidations stop there.
struct Orphaned {
    tracking: Arc<Tracking>,
    slots: Vec<(u16, u16)>,
    stopped: Arc<Mutex<bool>>,
}

impl Drop for Orphaned {
    fn drop(&mut self) {
        let mut stopped = self.stopped.lock();
        if !*stopped {
            *stopped = true;
            self.tracking.release(&self.slots, "stopped");
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
    /// The next frame, a write to send, or `Idle` (more bytes read, or `wait` passed).
    async fn next_event(
        &mut self,
        wait: Duration,
        rx: Option<&mut mpsc::Receiver<Queued>>,
    ) -> Result<Event, Error> {
        let Stream { link, redirect } = self;
        if let Some(f) = link.buffered_frame()? {
            return Ok(Event::Frame(f));
        }
        let redirect_closed = async {
            match redirect.as_mut() {
                Some(r) => r.fill().await,
                None => std::future::pending().await,
            }
        };
        let queued = async {
            match rx {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = link.fill() => r.map(|_| Event::Idle),
            r = redirect_closed => match r {
                Err(e) => Err(e),
                Ok(()) => Ok(Event::Idle), // stray bytes on the redirecting connection: ignore
            },
            w = queued => Ok(w.map_or(Event::Closed, Event::Queued)),
            _ = tokio::time::sleep(wait) => Ok(Event::Idle),
        }
    }
}

/// What woke a pump.
enum Event {
    Frame(Bytes),
    Queued(Queued),
    Idle,
    /// Every sender is gone: no more writes.
    Closed,
}

/// A pump's writes in flight (in order), the bytes to send next, and its heartbeat.
struct PumpState {
    fifo: VecDeque<InFlight>,
    out: BytesMut,
    ping_sent: Option<Instant>,
    next_ping: Instant,
    rx: Option<mpsc::Receiver<Queued>>,
    /// The last thing in flight is a barrier whose `PING` is still in `out`.
    barrier_unsent: bool,
}

impl PumpState {
    fn queue(&mut self, q: Queued) {
        let w = match q {
            Queued::Write(w) => w,
            Queued::Barrier(heard) => {
                // a PING not sent yet follows this barrier's request too: it serves both
                if let (true, Some(InFlight::Barrier(all))) =
                    (self.barrier_unsent, self.fifo.back_mut())
                {
                    all.push(heard);
                    return;
                }
                self.out
                    .extend_from_slice(&super::backend::link::command(&[b"PING"]));
                self.fifo.push_back(InFlight::Barrier(vec![heard]));
                self.barrier_unsent = true;
                return;
            }
        };
        self.barrier_unsent = false;
        self.out.extend_from_slice(&w.bytes);
        if let (Ttl::AskRedis, Some(key)) = (w.plan.ttl, w.plan.keys.first()) {
            self.out
                .extend_from_slice(&super::backend::link::command(&[b"PTTL", key]));
        }
        self.fifo.push_back(InFlight::Write(Box::new(w)));
    }

    /// Everything already queued, while there is room in flight.
    fn take_queued(&mut self) {
        while self.fifo.len() < MAX_IN_FLIGHT {
            match self.rx.as_mut().map(|rx| rx.try_recv()) {
                Some(Ok(w)) => self.queue(w),
                _ => break,
            }
        }
    }

    fn pong(&mut self, t: &Tracking) {
        if let Some(sent) = self.ping_sent.take() {
            t.metrics.tracking_lag.observe(sent.elapsed().as_secs_f64());
        }
        self.next_ping = Instant::now() + t.heartbeat;
    }
}
