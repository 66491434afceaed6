//! The shared path: commands sent through the session's fred client, routed by the slot
//! the command table gives, with the L1 in front of cacheable reads.
//!
//! * cacheable reads: L1 hit → answered in process; miss → a ticket is taken *before* the
//!   request is sent, the reply (with the key's PTTL) fills the L1 only if the ticket is
//!   still valid;
//! * MGET: per key through the L1 ([`super::mget`]);
//! * MSET, DEL, UNLINK, EXISTS, TOUCH split by slot, and broadcast commands (FLUSHALL,
//!   DBSIZE, KEYS, SCRIPT…) sent to every primary: [`super::spread`];
//! * writes: their keys are invalidated locally once Redis answered, before the reply is
//!   queued for the client; a write whose new value is known goes through its node's
//!   tracking connection instead and refills the L1 (write-through, see
//!   [`crate::redis::writethrough`] for why that never serves a replaced value);
//! * with `read_from_replicas`, read-only key commands that do not fill the L1 go to the
//!   session's replica client (the primary when it is not connected);
//! * a READONLY reply or a lost connection tells the Sentinel follower to look for a new
//!   primary; an L1 ticket is trusted only while the session's pools are the backend's
//!   current ones (a switch bumps the generation after flushing).

use super::dispatch::{common_slot, keys_of};
use super::order::Order;
use super::redirect::{retry_elsewhere, with_host_of, Redirect};
use super::writes::Reach;
use super::{Done, Session};
use crate::redis::backend::mux::Mux;
use crate::redis::backend::slots::NodeLinks;
use crate::redis::commands::{Kind, Merge, Spec, CACHE, FLUSH, READ, UNLISTED, WRITE};
use crate::redis::error::Error;
use crate::redis::l1::{CacheKey, Ticket, L1};
use crate::redis::pause::Sent;
use crate::redis::resp::{encode, encode::Proto, Request};
use crate::redis::Service;
use bytes::{Bytes, BytesMut};
use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Value};
use redis_protocol::resp3::types::BytesFrame;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) type Reply = Result<BytesFrame, Error>;

/// What a shared-path future needs, cloned out of the session.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) svc: Arc<Service>,
    pub(super) client: Client,
    /// The thread's multiplexed link to the server ([`crate::redis::backend::mux`]), when
    /// the command goes to the standalone server or primary; `None`: through `nodes` or
    /// `client`.
    pub(super) mux: Option<Arc<Mux>>,
    /// A cluster's slot map and the thread's link to each primary: a command whose slot the
    /// map knows goes on its primary's link; `None` (or a slot the map lacks): through fred.
    pub(super) nodes: Option<Arc<NodeLinks>>,
    /// The order redirected commands are sent again in (cluster sessions).
    pub(super) order: Option<Arc<Order>>,
    pub(super) proto: Proto,
    /// The backend generation `client` belongs to.
    generation: u64,
}

/// What the L1 said about a command, before it takes the shared path.
enum Lookup {
    /// Answered: the cached reply is in the write buffer.
    Written,
    /// The cached reply, to queue behind the replies still pending.
    Hit(Bytes),
    /// Cacheable, not cached (or no longer valid): the reply may fill under this key.
    Miss(CacheKey),
    /// Not an L1 read.
    Uncached,
}

/// Where a command's reply came from: a link (raw, in the client's protocol) or fred.
enum Via {
    Link(Bytes),
    Fred(BytesFrame),
}

impl Ctx {
    /// One command to the node serving `slot`, through the breaker: refused at once while
    /// it is open, and each answer (or failure to get one) reported to it.
    pub(super) async fn send(
        &self,
        name: &'static str,
        args: &[Bytes],
        slot: Option<u16>,
    ) -> Reply {
        let Some(mux) = self.link_for(slot) else {
            return self.through_fred(name, args, slot).await;
        };
        match self.over_links(mux, name, args, slot).await? {
            // the link speaks the client's protocol
            Via::Link(raw) => crate::redis::resp::decode_frame(&raw, self.proto)
                .ok_or_else(|| Error::Backend("a reply that could not be decoded".into())),
            Via::Fred(frame) => Ok(frame),
        }
    }

    /// [`Ctx::send`] for a reply the client gets as it is: the bytes Redis sent (in the
    /// client's protocol) through the multiplexed link, or fred's frame encoded again.
    pub(super) async fn send_raw(
        &self,
        name: &'static str,
        args: &[Bytes],
        slot: Option<u16>,
    ) -> Result<Bytes, Error> {
        let frame = match self.link_for(slot) {
            Some(mux) => match self.over_links(mux, name, args, slot).await? {
                Via::Link(raw) => return Ok(raw),
                Via::Fred(frame) => frame,
            },
            None => self.through_fred(name, args, slot).await?,
        };
        let mut out = BytesMut::new();
        encode::frame(&mut out, &frame, self.proto);
        Ok(out.freeze())
    }

    /// The link a command for `slot` goes on, if any.
    fn link_for(&self, slot: Option<u16>) -> Option<&Arc<Mux>> {
        match &self.mux {
            Some(mux) => Some(mux),
            None => self.nodes.as_ref()?.for_slot(slot),
        }
    }

    /// Send on `mux` and follow a cluster's redirections: on the link of the node they name
    /// (ASK with ASKING first), or through fred (TRYAGAIN, CLUSTERDOWN, a node the map does
    /// not know, more than [`MAX_LINK_HOPS`]). A redirection never reaches the client from
    /// here; each one asks for a slot-map resync (bounded:
    /// [`crate::redis::backend::Backend::resync_soon`]).
    ///
    /// Why a later command of this client cannot overtake a redirected one where the
    /// client could see it:
    /// * MOVED, ASK, TRYAGAIN and CLUSTERDOWN all mean the node did not run the command;
    /// * a later command for the same key, routed by the same map, goes to the same node
    ///   behind it on the same link. A node that redirected a slot (MOVED, CLUSTERDOWN) or a
    ///   key (ASK: the key has left it, and does not come back during the migration)
    ///   redirects the later command too, so that one is sent again as well; it waits for
    ///   its turn ([`super::order`]) until every earlier command has its final answer, so
    ///   the re-sends reach Redis in the order the client sent them;
    /// * a session starts routing by a newer map only when nothing of it is in flight
    ///   (`Session::take_requests`), these re-sends included, so no command routed by the
    ///   new map can reach the new owner while an earlier one is still on its way.
    async fn over_links(
        &self,
        mux: &Mux,
        name: &'static str,
        args: &[Bytes],
        slot: Option<u16>,
    ) -> Result<Via, Error> {
        // taken in the same poll as the command is queued: in the order of the link
        let ticket = self.order.as_ref().map(|o| o.take());
        let raw = self.through_mux(mux, name, args, false).await?;
        if Redirect::parse(&raw).is_none() {
            return Ok(Via::Link(raw));
        }
        // boxed, like fred: the rare path is not carried by every command's future
        let from = mux.addr().to_string();
        Box::pin(self.redirected(raw, from, ticket, name, args, slot)).await
    }

    /// [`Ctx::over_links`] once the first reply was a redirection.
    async fn redirected(
        &self,
        mut raw: Bytes,
        mut from: String,
        ticket: Option<super::order::Ticket>,
        name: &'static str,
        args: &[Bytes],
        slot: Option<u16>,
    ) -> Result<Via, Error> {
        for hop in 0..=MAX_LINK_HOPS {
            let Some(redirect) = Redirect::parse(&raw) else {
                return Ok(Via::Link(raw));
            };
            self.svc.metrics.link_redirects.inc();
            self.svc.backend.resync_soon();
            if let Some(t) = &ticket {
                t.turn().await;
            }
            let target = match &redirect {
                Redirect::Moved(to) | Redirect::Ask(to) if hop < MAX_LINK_HOPS => {
                    let to = with_host_of(to, &from);
                    let link = self.nodes.as_ref().and_then(|n| n.by_addr(&to)).cloned();
                    link.map(|l| (l, to))
                }
                _ => None,
            };
            let Some((link, to)) = target else {
                // fred retries it (and connects to a node the map does not know yet); the
                // ticket is held until it answers
                return Ok(Via::Fred(self.through_fred(name, args, slot).await?));
            };
            let asking = matches!(redirect, Redirect::Ask(_));
            raw = self.through_mux(&link, name, args, asking).await?;
            from = to;
        }
        Ok(Via::Link(raw))
    }

    /// Queue on the link at once (this runs in the future's first poll, so commands keep
    /// the order the session dispatched them in), then wait for the reply.
    pub(super) async fn through_mux(
        &self,
        mux: &Mux,
        name: &'static str,
        args: &[Bytes],
        asking: bool,
    ) -> Result<Bytes, Error> {
        self.admit()?;
        self.svc.metrics.link_commands.inc();
        let queued = match asking {
            false => mux.submit(name.as_bytes(), args),
            true => mux.submit_asking(name.as_bytes(), args),
        };
        let reply = match queued {
            Ok(rx) => crate::redis::backend::mux::reply(rx).await,
            Err(e) => Err(e),
        };
        if reply.is_err() {
            // a cluster node lost or refusing: fred may know of a failover before the map
            self.svc.backend.resync_soon();
        }
        self.settle(reply.as_ref().err());
        reply
    }

    /// Boxed: fred's future is kilobytes, and every future of the link path, which almost
    /// every command takes, would otherwise carry room for it (and be copied whole into
    /// its box when queued).
    fn through_fred<'a>(
        &'a self,
        name: &'static str,
        args: &'a [Bytes],
        slot: Option<u16>,
    ) -> futures_util::future::BoxFuture<'a, Reply> {
        Box::pin(async move {
            self.admit()?;
            let reply = send(&self.client, name, args, slot).await;
            self.settle(reply.as_ref().err());
            reply
        })
    }

    /// Refused at once while the breaker is open.
    fn admit(&self) -> Result<(), Error> {
        if let Some(breaker) = &self.svc.breaker {
            if let crate::limits::Admit::Refuse(wait) = breaker.admit() {
                let retry_ms = wait.as_millis() as u64;
                return Err(Error::CircuitOpen { retry_ms });
            }
        }
        Ok(())
    }

    /// Each answer (or failure to get one) reported to the breaker.
    fn settle(&self, error: Option<&Error>) {
        if let Some(breaker) = &self.svc.breaker {
            match error {
                Some(e) if e.source() == crate::redis::error::Source::Backend => {
                    breaker.on_failure()
                }
                _ => breaker.on_success(),
            }
        }
    }

    /// An L1 ticket for `key`, only while `client` is from the backend's current pools: a
    /// primary switch flushes and disarms, moves the pools, then re-arms, so a ticket taken
    /// after the re-arm by a client of the old pools would vouch for the old primary's data.
    pub(super) fn ticket(&self, l1: &L1, slot: u16, key: &[u8]) -> Option<Ticket> {
        let t = l1.ticket(slot, key)?;
        (self.svc.backend.generation() == self.generation).then_some(t)
    }
}

/// Send one command through fred to the node serving `slot`.
async fn send(client: &Client, name: &'static str, args: &[Bytes], slot: Option<u16>) -> Reply {
    if !client.is_connected() {
        return Err(Error::Backend("not connected".into()));
    }
    let hash = slot.map_or(ClusterHash::Random, ClusterHash::Custom);
    let cmd = CustomCommand::new_static(name, hash, false);
    let values: Vec<Value> = args.iter().map(|a| Value::Bytes(a.clone())).collect();
    client
        .custom_raw(cmd, values)
        .await
        .map_err(|e| Error::from_fred(&e))
}

/// Encode a reply (or an error) for the client.
pub(super) fn encode_reply(ctx: &Ctx, reply: &Reply) -> Bytes {
    let mut out = BytesMut::new();
    match reply {
        Ok(frame) => {
            if is_readonly(frame) {
                // written to a node that is no longer the primary
                ctx.svc.backend.suspect_primary();
            }
            encode::frame(&mut out, frame, ctx.proto)
        }
        Err(e) => {
            if e.source() == crate::redis::error::Source::Backend {
                ctx.svc.backend.suspect_primary();
            }
            ctx.svc.metrics.backend_error(e.label());
            encode::error(&mut out, &e.reply());
        }
    }
    out.freeze()
}

/// [`encode_reply`] for a reply already in the client's protocol.
fn raw_reply(ctx: &Ctx, reply: Result<Bytes, Error>) -> Bytes {
    match reply {
        Ok(raw) => {
            if raw.starts_with(b"-READONLY") || raw.starts_with(b"!") && is_blob_readonly(&raw) {
                ctx.svc.backend.suspect_primary();
            }
            raw
        }
        Err(e) => encode_reply(ctx, &Err(e)),
    }
}

/// A RESP3 blob error whose text starts with READONLY.
fn is_blob_readonly(raw: &[u8]) -> bool {
    raw.splitn(2, |&b| b == b'\n')
        .nth(1)
        .is_some_and(|body| body.starts_with(b"READONLY"))
}

/// An error reply, in either protocol.
fn raw_is_error(raw: &[u8]) -> bool {
    matches!(raw.first(), Some(b'-' | b'!'))
}

fn is_readonly(f: &BytesFrame) -> bool {
    match f {
        BytesFrame::SimpleError { data, .. } => data.starts_with("READONLY"),
        BytesFrame::BlobError { data, .. } => data.starts_with(b"READONLY"),
        _ => false,
    }
}

/// The key's remaining TTL from a PTTL reply (`None`: no TTL, or unknown).
pub(super) fn ttl_of(reply: &Reply) -> Option<Duration> {
    match reply {
        Ok(BytesFrame::Number { data, .. }) if *data >= 0 => {
            Some(Duration::from_millis(*data as u64))
        }
        _ => None,
    }
}

/// [`ttl_of`] for a raw `:N` reply.
fn raw_ttl(reply: &Result<Bytes, Error>) -> Option<Duration> {
    let raw = reply.as_ref().ok()?.strip_prefix(b":")?;
    let digits = raw.strip_suffix(b"\r\n")?;
    let ms: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

impl Session {
    pub(super) fn shared(&mut self, spec: &'static Spec, req: Request) {
        // a cacheable read of one key asks the L1 first: a hit needs nothing else of the
        // shared path (no context cloned out of the session, no key list)
        let cached = match self.l1_lookup(spec, &req.args) {
            hit @ (Lookup::Written | Lookup::Hit(_)) => {
                if let Some(h) = self.svc.metrics.latency(spec.id) {
                    h.observe(1e-6);
                }
                if let Lookup::Hit(reply) = hit {
                    self.push_reply(reply);
                }
                return;
            }
            Lookup::Miss(key) => Some(key),
            Lookup::Uncached => None,
        };
        let Some(client) = self.fred.clone() else {
            self.push_error(&Error::Backend("no backend pool".into()));
            return;
        };
        let mut ctx = Ctx {
            svc: self.svc.clone(),
            client,
            mux: self.mux.clone(),
            nodes: self.nodes.clone(),
            order: self.order.clone(),
            proto: self.state.proto,
            generation: self.pool_gen,
        };
        let cluster = self.svc.backend.cluster;
        let keys = keys_of(spec, &req.args);
        let reach = spec.is(WRITE).then(|| Reach::of(spec, &keys));
        let fenced = self.writes.fences(&keys);
        // a pause of every command holds reads too: the L1 answers none (crate::redis::pause)
        let l1 = (self.svc.l1.clone()).filter(|_| !fenced && !self.svc.pauses.all_held());
        if let Some(replica) = self.replica_for(spec, &keys, l1.is_some()) {
            ctx.client = replica;
            ctx.mux = None;
            ctx.nodes = None;
        }
        match spec.kind {
            Kind::Split(Merge::Concat) => return self.mget(ctx, spec, req, l1),
            // keys in one slot go as one command (and may write through)
            Kind::Split(merge) if cluster && common_slot(&keys).is_err() => {
                let fut = super::spread::split(ctx, spec, req, merge);
                return self.push_future(fut, reach);
            }
            // in effect from when it is sent, kept once accepted (crate::redis::pause)
            Kind::Client if super::client::is_pause(&req.args) => {
                let sent = self.svc.pauses.sending(&req.args);
                if cluster {
                    let fut = super::spread::pause(ctx, spec, req, sent);
                    return self.push_future(fut, reach);
                }
                return self.push_future(paused(ctx, spec, req, sent), reach);
            }
            Kind::Broadcast(merge) if cluster => {
                let fut = super::spread::broadcast(ctx, spec, req, merge);
                return self.push_future(fut, reach);
            }
            _ => {}
        }
        let slot = match common_slot(&keys) {
            Ok(s) => s,
            Err(e) if cluster => return self.push_error(&e),
            Err(_) => None,
        };
        if spec.is(WRITE) {
            match self.write_through(&ctx, spec, req, slot) {
                Ok(fut) => self.push_future(fut, reach),
                Err(req) => self.push_future(plain(ctx, spec, req, slot), reach),
            }
            return;
        }
        if let (Some(key), Some(l1), [redis_key]) = (cached, l1, &keys[..]) {
            let ticket = ctx.ticket(&l1, slot.unwrap_or(0), redis_key);
            let fut = cached_read(ctx, spec, req, slot, l1, key, ticket);
            return self.push_future(fut, None);
        }
        let fut = plain(ctx, spec, req, slot);
        self.push_future(fut, reach);
    }

    /// The L1's answer to a cacheable read of exactly one key, taken before anything else
    /// of the shared path is prepared. Not while one of this session's writes in flight may
    /// change the key (a pipelined `SET k; GET k` must not read the old `k`: see
    /// [`super::writes`]), not behind any command in flight unless
    /// `redis.l1_behind_inflight`, and not for MGET (its own path) or a cluster broadcast.
    fn l1_lookup(&mut self, spec: &Spec, args: &[Bytes]) -> Lookup {
        let Some(l1) = self.svc.l1.as_deref() else {
            return Lookup::Uncached;
        };
        let own_path = match spec.kind {
            Kind::Split(Merge::Concat) => true,
            Kind::Broadcast(_) => self.svc.backend.cluster,
            _ => false,
        };
        if !spec.is(CACHE) || own_path || !spec.one_key(args) || self.svc.pauses.all_held() {
            return Lookup::Uncached;
        }
        if !self.pending.is_empty() && !self.svc.config.l1_behind_inflight {
            // its reply waits behind an earlier one in flight anyway: a hit would save no
            // round trip, and forwarding it in the batch costs less than the lookup
            self.svc.metrics.l1_forwarded.inc();
            return Lookup::Uncached;
        }
        // the key positions are found only when a write is in flight at all
        if !self.writes.is_empty() && self.writes.fences(&keys_of(spec, args)) {
            return Lookup::Uncached;
        }
        let key = CacheKey::new(
            spec.id as u16,
            args.get(1..).unwrap_or_default(),
            self.state.db,
            self.state.user_id,
            self.state.proto,
        );
        // with nothing pending the reply goes straight from the cache to the write buffer
        let in_line = self.pending.is_empty();
        let (wbuf, wlease) = (&mut self.wbuf, &mut self.wlease);
        let hit = l1.read(&key, |reply| {
            if in_line {
                super::write_reply(wbuf, wlease, reply);
                Lookup::Written
            } else {
                Lookup::Hit(Bytes::copy_from_slice(reply))
            }
        });
        hit.unwrap_or(Lookup::Miss(key))
    }

    /// Send a write whose new value is known ([`crate::redis::writethrough`]) through its
    /// node's tracking connection, which refills the L1 once Redis acknowledges it. Only
    /// when nothing else of this session is in flight or buffered (a pipelined client keeps
    /// its batch on the pool), for the default login; the session then waits for the
    /// reply before its next command. The request is handed back when it cannot go.
    fn write_through(
        &mut self,
        ctx: &Ctx,
        spec: &'static Spec,
        req: Request,
        slot: Option<u16>,
    ) -> Result<impl std::future::Future<Output = Done> + Send + 'static, Request> {
        let Some(tracking) = self.svc.tracking.as_ref().filter(|_| self.svc.l1.is_some()) else {
            return Err(req);
        };
        let quiet = self.pending.is_empty() && self.rbuf.is_empty();
        let default_login = self.state.auth.is_none() && self.state.user_id == 0;
        let current = ctx.generation == self.svc.backend.generation();
        // a paused write must not hold the tracking connection (crate::redis::pause)
        if !quiet || !default_login || !current || self.svc.pauses.any() {
            return Err(req);
        }
        let Some(plan) = crate::redis::writethrough::plan(spec.name, &req.args) else {
            return Err(req);
        };
        let node_slot = match (self.svc.backend.cluster, slot) {
            (true, Some(s)) => s,
            (true, None) => return Err(req),
            (false, _) => 0,
        };
        let bytes = match req.inline {
            false => req.raw.clone(),
            true => {
                let args: Vec<&[u8]> = req.args.iter().map(|a| &a[..]).collect();
                crate::redis::backend::link::command(&args).freeze()
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let w = crate::redis::tracking::WriteReq {
            bytes,
            plan,
            db: self.state.db,
            proto: self.state.proto,
            sent: Instant::now(),
            origin: self.id,
            reply: tx,
        };
        if !tracking.submit(node_slot, w) {
            return Err(req);
        }
        self.fence = true;
        Ok(through_tracking(ctx.clone(), spec, req, slot, rx))
    }

    /// The replica client for a read-only key command that will not fill the L1, when
    /// `read_from_replicas` gave the session one and it is connected.
    fn replica_for(&self, spec: &Spec, keys: &[&Bytes], l1_on: bool) -> Option<Client> {
        let replica = self.replica.as_ref()?;
        let plain_read = spec.is(READ) && !spec.is(WRITE) && spec.kind == Kind::Plain;
        let fills_l1 = l1_on && spec.is(CACHE);
        (plain_read && !keys.is_empty() && !fills_l1 && replica.is_connected())
            .then(|| replica.clone())
    }
}

pub(super) fn observe(ctx: &Ctx, spec: &Spec, started: Instant) {
    if let Some(h) = ctx.svc.metrics.latency(spec.id) {
        h.observe(started.elapsed().as_secs_f64());
    }
}

/// After a write: its keys (or, for FLUSHALL and friends, everything) are invalidated.
pub(super) fn invalidate_written(svc: &Service, spec: &Spec, keys: &[Bytes]) {
    let Some(l1) = &svc.l1 else { return };
    if spec.is(FLUSH) {
        l1.flush_all("flushall");
    } else if spec.is(WRITE) {
        for k in keys {
            l1.invalidate_key(k);
        }
    }
}

/// `CLIENT PAUSE` to the one server; `sent` kept if Redis accepted it.
async fn paused(ctx: Ctx, spec: &'static Spec, req: Request, sent: Option<Sent>) -> Done {
    let done = plain(ctx, spec, req, None).await;
    if let Some(sent) = sent {
        sent.answered(done.reply.starts_with(b"+OK"));
    }
    done
}

async fn plain(ctx: Ctx, spec: &'static Spec, req: Request, slot: Option<u16>) -> Done {
    let started = Instant::now();
    let reply = ctx.send_raw(spec.name, &req.args[1..], slot).await;
    if spec.is(WRITE) || spec.is(FLUSH) {
        let keys: Vec<Bytes> = keys_of(spec, &req.args).into_iter().cloned().collect();
        invalidate_written(&ctx.svc, spec, &keys);
    }
    if let Some(heard) = super::writes::heard_after(&ctx.svc, spec.is(UNLISTED), slot) {
        heard.await;
    }
    observe(&ctx, spec, started);
    Done {
        reply: raw_reply(&ctx, reply),
        write: spec.is(WRITE),
    }
}

/// The reply of a write sent through a tracking connection. Redirections and refusals
/// that another route may not meet (MOVED, ASK, READONLY…) send it again through the pool.
async fn through_tracking(
    ctx: Ctx,
    spec: &'static Spec,
    req: Request,
    slot: Option<u16>,
    rx: tokio::sync::oneshot::Receiver<Bytes>,
) -> Done {
    let started = Instant::now();
    let reply = match rx.await {
        Ok(frame) if retry_elsewhere(&frame) => {
            if frame.starts_with(b"-READONLY") {
                ctx.svc.backend.suspect_primary();
            }
            return plain(ctx, spec, req, slot).await;
        }
        Ok(frame) if ctx.proto == Proto::Resp2 && &frame[..] == b"_\r\n" => {
            Bytes::from_static(b"$-1\r\n")
        }
        Ok(frame) => frame,
        Err(_) => {
            let e = Error::LinkLost(
                "the tracking connection closed before the write was answered (it may have been applied)".into(),
            );
            encode_reply(&ctx, &Err(e))
        }
    };
    observe(&ctx, spec, started);
    Done { reply, write: true }
}

/// Redirections a link may meet at most, for one command, before fred takes it.
const MAX_LINK_HOPS: usize = 2;

async fn cached_read(
    ctx: Ctx,
    spec: &'static Spec,
    req: Request,
    slot: Option<u16>,
    l1: Arc<L1>,
    key: CacheKey,
    ticket: Option<Ticket>,
) -> Done {
    let started = Instant::now();
    // one fill per key at a time: the other misses meanwhile are plain reads
    let claim = ticket.as_ref().and_then(|t| l1.claim_fill(t));
    let ticket = ticket.filter(|_| claim.is_some());
    let (reply, ttl) = match ticket {
        Some(_) => {
            // boxed: with both sends inline the future was 1,192 bytes, past what the
            // allocator's per-thread cache serves (1,032), and every miss paid the slow path
            let ttl = Box::pin(ctx.send_raw("PTTL", &req.args[1..2], slot));
            let (reply, ttl) =
                futures_util::join!(ctx.send_raw(spec.name, &req.args[1..], slot), ttl);
            (reply, raw_ttl(&ttl))
        }
        None => (ctx.send_raw(spec.name, &req.args[1..], slot).await, None),
    };
    let fill = ticket.filter(|_| reply.as_ref().is_ok_and(|r| !raw_is_error(r)));
    let bytes = raw_reply(&ctx, reply);
    if let Some(t) = fill {
        // a copy of its own: the reply may be a slice of the link's read buffer
        l1.insert(key, Bytes::copy_from_slice(&bytes), t, ttl);
    }
    drop(claim);
    observe(&ctx, spec, started);
    Done {
        reply: bytes,
        write: false,
    }
}

#[cfg(test)]
mod tests {
    /// The size of what an async fn of four or seven arguments returns: its future.
    fn future4<F, A, B, C, D, R>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D) -> R,
    {
        std::mem::size_of::<R>()
    }

    fn future7<F, A, B, C, D, E, G, H, R>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D, E, G, H) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// Every command's future is moved whole into its box when queued: fred's future and
    /// the redirection loop are boxed apart so the link path stays small (they made a GET
    /// miss 14.9 KB and a plain command 7.5 KB), and under glibc's per-thread cache limit
    /// (1,032 bytes), past which each allocation takes the slow path.
    #[test]
    fn the_link_path_futures_stay_small() {
        let (plain, cached) = (future4(super::plain), future7(super::cached_read));
        eprintln!("plain {plain} B, cached_read {cached} B");
        assert!(plain <= 1024, "plain: {plain} B");
        assert!(cached <= 1024, "cached_read: {cached} B");
    }
}
