//! One Redis client's session: the request path.
//!
//! The loop reads as named steps, one file each:
//! 1. [`crate::redis::resp::take_request`]: take whole commands off the read buffer (limits
//!    checked before anything is reserved);
//! 2. [`dispatch`]: look the command up in the table and decide: answer locally, serve from
//!    the L1, or start it on the shared path ([`shared`]) — a future queued in order;
//! 3. commands that change the session or need a dedicated connection (HELLO, AUTH, SELECT,
//!    blocking commands, EXEC/WATCH, SUBSCRIBE) are *barriers*: earlier replies are drained
//!    first, then they run alone ([`local`], [`pinned`]);
//! 4. replies are written in request order as their futures complete.
//!
//! Pipelined commands all go through one route per node — the thread's multiplexed link to
//! it, or the one fred client this session is assigned — so Redis executes them in the
//! order sent (a cluster session changes routes only with nothing in flight, and re-sends
//! redirected commands in order: [`order`]); while one of this session's writes is in
//! flight, its reads bypass the L1 (a pipelined `SET k; GET k` never reads the old `k`). A
//! write sent through a tracking connection for write-through is a fence: it goes only when
//! nothing else is in flight, and nothing follows it until it is answered.
//!
//! The client is plain TCP or TLS ([`ClientStream`]); one poll drives its writes, TLS
//! flushes, finished replies and reads, so neither kind needs a split stream.
//!
//! When the backend rebuilds its pools (a Sentinel failover), the session rebinds before its
//! next batch of commands; a subscribed client is disconnected, to resubscribe on the new
//! primary.

pub mod client;
pub mod dispatch;
pub mod fanout;
mod held;
pub mod local;
mod mget;
pub mod order;
pub mod pinned;
mod pipe;
pub mod redirect;
mod rescue;
pub mod scan;
pub mod shared;
pub mod spread;
pub mod tracking;
pub mod writes;

use super::backend::link::Link;
use super::backend::PoolKey;
use super::budget::{Lease, Meter, Over};
use super::error::Error;
use super::resp::{self, encode, encode::Proto, Request};
use super::Service;
use crate::pg::stream::ClientStream;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

/// Most commands in flight per client before reading pauses.
const MAX_PENDING: usize = 1024;
/// Stop reading while this much is waiting to be written to the client.
const HIGH_WATER: usize = 256 * 1024;
/// Buffers above this size are given back when the session goes idle.
const KEEP_BUFFER: usize = 64 * 1024;
/// Most commands dispatched in one wake-up: a client pipelining without pause yields to
/// the other clients of its worker between batches.
const DISPATCH_PER_WAKE: usize = 128;

/// A reply that is ready, and whether its command was a write of this session.
pub struct Done {
    pub reply: Bytes,
    pub write: bool,
}

/// A finished reply and the share of the reply budget it holds until it reaches the write
/// buffer.
pub struct Held {
    done: Done,
    _lease: Lease,
}

/// The `-ERR` a client gets in place of a reply past its reply budget.
fn over_budget(out: &mut BytesMut, over: Over) {
    let e = Error::ReplyBudget {
        command: "this command",
        over,
    };
    encode::error(out, &e.reply());
}

/// Write a reply that nothing pending precedes (an L1 hit or a local answer) straight to
/// the write buffer, held to the same reply budget: charged to the write buffer's lease,
/// which holds it from here on.
fn write_reply(wbuf: &mut BytesMut, wlease: &mut Lease, reply: &[u8]) {
    match wlease.set(wbuf.len() + reply.len()) {
        Ok(()) => wbuf.extend_from_slice(reply),
        Err(over) => {
            over_budget(wbuf, over);
            wlease.force(wbuf.len());
        }
    }
}

/// Charge a finished reply to the client's reply meter; past the budget the reply is
/// dropped and the client gets `-ERR` in its place.
fn admit(done: Done, meter: &Meter) -> Held {
    let mut lease = meter.lease();
    match lease.set(done.reply.len()) {
        Ok(()) => Held {
            done,
            _lease: lease,
        },
        Err(over) => {
            let mut out = BytesMut::new();
            over_budget(&mut out, over);
            Held {
                done: Done {
                    reply: out.freeze(),
                    write: done.write,
                },
                _lease: lease,
            }
        }
    }
}

/// What the session knows about its client.
#[derive(Debug, Clone)]
pub struct ClientState {
    pub proto: Proto,
    pub db: u8,
    /// `(user, password)` once AUTH succeeded.
    pub auth: Option<(String, String)>,
    pub user_id: u32,
    pub name: Option<Bytes>,
}

impl ClientState {
    pub fn pool_key(&self) -> PoolKey {
        PoolKey {
            auth: self.auth.clone(),
            db: self.db,
            proto: self.proto,
        }
    }
}

/// What the loop does after a barrier command.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Subscribed: from now on the client is piped to its dedicated link.
    Pipe,
    /// Reply written; close the connection.
    Close,
}

pub struct Session {
    pub id: u64,
    svc: Arc<Service>,
    client: ClientStream,
    /// TLS records written but maybe not yet on the socket: flush before going idle.
    unflushed: bool,
    rbuf: BytesMut,
    /// Where the scan of a command still arriving in `rbuf` stopped.
    scanner: resp::Scanner,
    wbuf: BytesMut,
    /// The last [`Session::take_requests`] stopped at an incomplete command (so reading
    /// more is the only way on), not at a limit with whole commands still buffered.
    partial: bool,
    /// `CLIENT REPLY`: whose replies the client gets.
    reply_mode: ReplyMode,
    /// The command being dispatched (or the deferred one, while it runs) gets no reply.
    silent: bool,
    /// The deferred command was sent under `CLIENT REPLY OFF/SKIP`.
    deferred_silent: bool,
    /// `rbuf`'s bytes on the client's request meter.
    rlease: Lease,
    /// `wbuf`'s bytes on the client's reply meter.
    wlease: Lease,
    /// The reply meter, charged by each finished reply until it is in `wbuf`.
    replies: Meter,
    pending: FuturesOrdered<BoxFuture<'static, Held>>,
    /// This session's writes in flight, and the keys they may change.
    writes: writes::InFlight,
    pub state: ClientState,
    /// The fred client all of this session's shared-path commands go through.
    fred: Option<fred::clients::Client>,
    /// The thread's multiplexed link for this session's pool key (standalone server or
    /// Sentinel primary; a cluster session has `nodes`).
    mux: Option<Arc<crate::redis::backend::mux::Mux>>,
    /// A cluster's slot map and this thread's links to its primaries for the pool key.
    nodes: Option<Arc<crate::redis::backend::slots::NodeLinks>>,
    /// The order this cluster session's redirected commands are sent again in.
    order: Option<Arc<order::Order>>,
    /// The backend generation `fred` (and `replica`) came from.
    pool_gen: u64,
    /// A replica's client for key reads (`read_from_replicas`), when one is reachable.
    replica: Option<fred::clients::Client>,
    /// MULTI in progress: commands queued until EXEC.
    tx: Option<pinned::Tx>,
    /// Dedicated link (blocking commands, WATCH/EXEC, pub/sub), kept for reuse.
    link: Option<Link>,
    /// Slot the WATCHed keys hash to (`Some(None)`: watching keyless).
    watch_slot: Option<Option<u16>>,
    /// A barrier command waiting for earlier replies to drain.
    deferred: Option<Request>,
    /// The deferred command opens a subscription that publishes wait for, or is a blocking
    /// command that writes wait for until it is sent ([`crate::redis::pubsub`]).
    opening: Option<crate::redis::pubsub::Ticket>,
    /// A write went through a tracking connection (write-through): nothing more is sent
    /// until it is answered, so this client's commands reach Redis in the order sent.
    fence: bool,
    close_after: bool,
    /// The client half-closed (read EOF) with replies still owed: they are written, as
    /// Redis writes the replies of what it read before the EOF, then the session ends.
    eof: bool,
    /// A blocking command waits on the dedicated link (a client EOF ends it).
    blocked: bool,
    /// Ready once the service drains. One future for the session's life: its place among
    /// the drain signal's waiters is taken once, not at every wait for I/O.
    closing: Closing,
    /// An injected fault asked to drop the connection without a reply.
    reset_now: bool,
    /// An injected bandwidth cap (bytes per second) on replies.
    bandwidth: Option<u64>,
    /// This connection in the registry CLIENT LIST/KILL and MONITOR use.
    reg: super::clients::Registration,
    /// `CLIENT TRACKING` is on.
    tracking: Option<tracking::Tracked>,
}

impl Session {
    /// `closing`: turns true when the session must finish (the service drains).
    pub fn new(
        id: u64,
        svc: Arc<Service>,
        client: ClientStream,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> Session {
        let state = ClientState {
            proto: Proto::Resp2,
            db: svc.backend.default_db(),
            auth: None,
            user_id: 0,
            name: None,
        };
        let tcp = client.tcp();
        let reg = svc.registry.register(
            id,
            tcp.and_then(|t| t.peer_addr().ok()),
            tcp.and_then(|t| t.local_addr().ok()),
        );
        let (requests, replies) = svc.meters();
        Session {
            id,
            reg,
            partial: false,
            rlease: requests.lease(),
            wlease: replies.lease(),
            replies,
            closing: Box::pin(until_closing(closing)),
            svc,
            client,
            unflushed: false,
            rbuf: BytesMut::new(),
            scanner: resp::Scanner::default(),
            wbuf: BytesMut::new(),
            pending: FuturesOrdered::new(),
            writes: writes::InFlight::default(),
            state,
            fred: None,
            mux: None,
            nodes: None,
            order: None,
            pool_gen: 0,
            replica: None,
            tx: None,
            link: None,
            opening: None,
            watch_slot: None,
            deferred: None,
            reply_mode: ReplyMode::On,
            silent: false,
            deferred_silent: false,
            fence: false,
            close_after: false,
            eof: false,
            blocked: false,
            reset_now: false,
            bandwidth: None,
            tracking: None,
        }
    }

    pub async fn run(mut self) {
        match self.serve().await {
            Ok(()) => {}
            Err(Error::ClientIo(_)) => {}
            Err(e) => {
                tracing::debug!(error = %e, "redis session ended");
                let mut out = BytesMut::new();
                encode::error(&mut out, &e.reply());
                let wbuf = std::mem::take(&mut self.wbuf);
                let _ = self.write_out(&wbuf).await;
                let _ = self.write_out(&out).await;
            }
        }
        // give the budget back before the socket closes: a client that sees the close
        // and comes straight back finds its bytes free, not still held by this session
        self.rbuf = BytesMut::new();
        self.wbuf = BytesMut::new();
        self.rlease.force(0);
        self.wlease.force(0);
    }

    async fn serve(&mut self) -> Result<(), Error> {
        self.bind_pool().await?;
        loop {
            if self.pool_gen != self.svc.backend.generation() {
                // the backend moved (a new primary): no command may reach the old pools
                self.bind_pool().await?;
            }
            if self.take_requests() {
                // more whole commands are buffered: let the worker's other clients run
                tokio::task::yield_now().await;
                continue;
            }
            if self.reset_now {
                // an injected reset: the connection goes without a word
                return Ok(());
            }
            if self.deferred.is_some() && self.pending.is_empty() {
                if let Some(req) = self.deferred.take() {
                    self.silent = std::mem::take(&mut self.deferred_silent);
                    let flow = self.barrier(req).await;
                    self.silent = false;
                    match flow? {
                        Flow::Continue => {}
                        Flow::Close => self.close_after = true,
                        Flow::Pipe => return self.pipe().await,
                    }
                }
                continue;
            }
            if self.close_after && self.pending.is_empty() {
                let wbuf = std::mem::take(&mut self.wbuf);
                self.write_out(&wbuf).await?;
                let _ = self.client.shutdown().await;
                return Ok(());
            }
            if self.eof
                && self.pending.is_empty()
                && self.deferred.is_none()
                && (self.partial || self.rbuf.is_empty())
            {
                // everything read before the EOF is answered
                let wbuf = std::mem::take(&mut self.wbuf);
                self.write_out(&wbuf).await?;
                return Ok(());
            }
            if self.pending.is_empty() && self.rbuf.is_empty() && self.wbuf.is_empty() {
                self.shrink_buffers();
            }
            if !self.wait_io().await? {
                return Ok(());
            }
        }
    }

    /// Parse and dispatch whatever whole commands are buffered, at most
    /// [`DISPATCH_PER_WAKE`]; `true` when that cap stopped it with more to do.
    fn take_requests(&mut self) -> bool {
        self.partial = false;
        let mut dispatched = 0;
        while self.deferred.is_none()
            && !self.close_after
            && self.pending.len() < MAX_PENDING
            && self.wbuf.len() < HIGH_WATER
        {
            if self.fence {
                if !self.pending.is_empty() {
                    break;
                }
                self.fence = false;
            }
            if self.slots_moved() {
                // a new slot map: switch to it only with nothing in flight (see
                // `Ctx::over_links`): a command routed by the new map must not reach a node
                // before an earlier one of this client, still on its way by the old route
                if !self.pending.is_empty() {
                    break;
                }
                self.nodes = Some(self.svc.backend.node_links(&self.state.pool_key()));
            }
            if dispatched == DISPATCH_PER_WAKE {
                self.rlease.force(self.rbuf.len());
                return true;
            }
            match resp::take_request_resuming(&mut self.rbuf, &mut self.scanner, &self.svc.limits) {
                Ok(Some(req)) => {
                    dispatched += 1;
                    self.dispatch_replying(req)
                }
                Ok(None) => {
                    self.partial = true;
                    break;
                }
                Err(e) => {
                    let e = Error::Frame(e);
                    tracing::debug!(error = %e, "closing a client that sent a bad frame");
                    self.push_error(&e);
                    self.close_after = true;
                }
            }
        }
        self.rlease.force(self.rbuf.len());
        false
    }

    /// Dispatch one command, its reply dropped under `CLIENT REPLY OFF` (or the one after
    /// `SKIP`): it runs as any other, the client just never reads its answer.
    fn dispatch_replying(&mut self, req: Request) {
        let answered = self.reply_mode == ReplyMode::On
            || client::answers_regardless(&req.args)
            || client::is_subscription(&req.args);
        if answered {
            return self.dispatch(req);
        }
        if self.reply_mode == ReplyMode::Skip {
            self.reply_mode = ReplyMode::On;
        }
        // a reply written straight away (an L1 hit, an error) is taken back; one to come is
        // queued empty (`push_reply`, `push_future`)
        let mark = self.wbuf.len();
        self.silent = true;
        self.dispatch(req);
        self.silent = false;
        self.deferred_silent = self.deferred.is_some();
        self.wbuf.truncate(mark);
        self.wlease.force(self.wbuf.len());
    }

    /// The cluster's slot map has a newer version than the one this session routes by.
    fn slots_moved(&self) -> bool {
        self.nodes
            .as_ref()
            .is_some_and(|n| n.version() != self.svc.backend.slot_version())
    }

    /// One round of I/O; `false` when the client has gone.
    async fn wait_io(&mut self) -> Result<bool, Error> {
        // whole commands waiting behind backpressure stop the reading; an incomplete one
        // may grow up to the request budget (checked below, once the bytes are in)
        let can_read = self.wbuf.len() < HIGH_WATER
            && self.pending.len() < MAX_PENDING
            && (self.rbuf.len() < HIGH_WATER || self.partial);
        let owed = !self.pending.is_empty() || !self.wbuf.is_empty() || self.deferred.is_some();
        let self_eof = self.eof;
        let self_partial = self.partial;
        let Session {
            client,
            unflushed,
            rbuf,
            wbuf,
            wlease,
            pending,
            writes,
            closing,
            close_after,
            bandwidth,
            eof,
            reg,
            replies,
            state,
            ..
        } = self;
        let push = Push {
            inbox: reg.entry.inbox.armed().then_some(&reg.entry.inbox),
            replies,
            proto: state.proto,
        };
        if can_read {
            reserve(rbuf);
        }
        let read = can_read && !*close_after && !self_eof;
        let io = std::future::poll_fn(|cx| {
            poll_io(
                cx, client, unflushed, wbuf, wlease, pending, writes, rbuf, read, &push,
            )
        });
        tokio::select! {
            biased;
            r = io => match r.map_err(Error::ClientIo)? {
                Io::Wrote(n) => {
                    if let Some(bps) = *bandwidth {
                        // an injected bandwidth cap: pace what reaches the client
                        tokio::time::sleep(std::time::Duration::from_secs_f64(n as f64 / bps.max(1) as f64)).await;
                    }
                }
                Io::Read(0) if !owed && (rbuf.is_empty() || self_partial) => return Ok(false),
                Io::Read(0) => *eof = true,
                Io::Read(_) => {
                    if let Err(over) = self.rlease.set(self.rbuf.len()) {
                        return Err(Error::RequestBudget(over));
                    }
                }
                Io::Flushed | Io::Collected => {}
            },
            () = closing => return Err(Error::Shutdown),
        }
        Ok(true)
    }

    /// Write `bytes` to the client now (and flush: TLS may hold the last record).
    async fn write_out(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.client
            .write_all(bytes)
            .await
            .map_err(Error::ClientIo)?;
        self.client.flush().await.map_err(Error::ClientIo)?;
        self.unflushed = false;
        Ok(())
    }

    /// Queue a reply behind the ones still pending (or write it straight away).
    fn push_reply(&mut self, reply: Bytes) {
        if self.silent {
            return;
        }
        if self.pending.is_empty() {
            write_reply(&mut self.wbuf, &mut self.wlease, &reply);
        } else {
            let held = admit(
                Done {
                    reply,
                    write: false,
                },
                &self.replies,
            );
            self.pending.push_back(Box::pin(std::future::ready(held)));
        }
    }

    fn push_error(&mut self, e: &Error) {
        let mut out = BytesMut::new();
        encode::error(&mut out, &e.reply());
        self.push_reply(out.freeze());
    }

    /// Queue a command's reply-to-be; `write`: what it may change, when it is a write.
    fn push_future(
        &mut self,
        fut: impl Future<Output = Done> + Send + 'static,
        write: Option<writes::Reach>,
    ) {
        if let Some(reach) = write {
            self.writes.started(reach);
        }
        let meter = self.replies.clone();
        let silent = self.silent;
        self.pending.push_back(Box::pin(fut.map(move |mut done| {
            if silent {
                done.reply = Bytes::new();
            }
            admit(done, &meter)
        })));
    }

    /// Point the session at the pool of its (user, db, protocol).
    async fn bind_pool(&mut self) -> Result<(), Error> {
        self.bind(&self.state.pool_key()).await
    }

    /// Take a client from `key`'s pool (and a replica's, when reads may go there).
    async fn bind(&mut self, key: &PoolKey) -> Result<(), Error> {
        let backend = self.svc.backend.clone();
        // read first: a pool fetched after a rebuild then carries at worst an older number,
        // which only causes one more rebind
        let generation = backend.generation();
        let pool = backend.pool(key).await?;
        let clients = pool.clients();
        self.fred = clients
            .get(self.id as usize % clients.len().max(1))
            .cloned();
        self.mux = backend.mux(key);
        self.nodes = backend.cluster.then(|| backend.node_links(key));
        if backend.cluster && self.order.is_none() {
            self.order = Some(Arc::default());
        }
        self.replica = match self.svc.config.read_from_replicas {
            true => backend.replica_client(key, self.id as usize).await,
            false => None,
        };
        self.pool_gen = generation;
        Ok(())
    }

    fn shrink_buffers(&mut self) {
        crate::limits::shrink_idle(&mut self.rbuf, KEEP_BUFFER, 0);
        crate::limits::shrink_idle(&mut self.wbuf, KEEP_BUFFER, 0);
    }
}

/// Room for the next read.
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(16 * 1024);
    }
}

/// `CLIENT REPLY` of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    /// The next command's reply is dropped.
    Skip,
}

/// [`Session::closing`].
type Closing = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Ready when `closing` turns true or its sender is gone.
async fn until_closing(mut closing: tokio::sync::watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// What the I/O step needs for `CLIENT TRACKING`: the connection's inbox, once anything may
/// post to it.
struct Push<'a> {
    inbox: Option<&'a super::client_tracking::Inbox>,
    replies: &'a Meter,
    proto: Proto,
}

/// What one round of client I/O did.
enum Io {
    Wrote(usize),
    /// TLS records buffered by rustls reached the socket.
    Flushed,
    /// Finished replies were queued for the client (the write must wait for the socket).
    Collected,
    /// Bytes read from the client (0: it hung up).
    Read(usize),
}

/// Poll, in this order, every reply that is ready (in request order, into the write
/// buffer), writing the buffer (then flushing TLS), and reading more requests. Replies are
/// gathered before writing so a pipeline's answers — L1 hits are ready at once — leave in
/// one write, not one syscall each. One poll over the whole stream: a TLS stream cannot be
/// split into halves that borrow it separately.
#[allow(clippy::too_many_arguments)]
fn poll_io(
    cx: &mut Context<'_>,
    client: &mut ClientStream,
    unflushed: &mut bool,
    wbuf: &mut BytesMut,
    wlease: &mut Lease,
    pending: &mut FuturesOrdered<BoxFuture<'static, Held>>,
    writes: &mut writes::InFlight,
    rbuf: &mut BytesMut,
    read: bool,
    push: &Push<'_>,
) -> Poll<std::io::Result<Io>> {
    let mut collected = false;
    if let Some(inbox) = push.inbox {
        // invalidations heard so far go behind every reply still owed: a read sent before
        // the write was heard may carry the old value, and the client must drop it after
        let mut out = BytesMut::new();
        if inbox.drain(cx, &mut out, push.proto, false) {
            if pending.is_empty() {
                write_reply(wbuf, wlease, &out);
                collected = true;
            } else {
                let done = Done {
                    reply: out.freeze(),
                    write: false,
                };
                pending.push_back(Box::pin(std::future::ready(admit(done, push.replies))));
            }
        }
    }
    while !pending.is_empty() && wbuf.len() < HIGH_WATER {
        match pending.poll_next_unpin(cx) {
            Poll::Ready(Some(held)) => {
                if held.done.write {
                    writes.finished();
                }
                wbuf.extend_from_slice(&held.done.reply);
                // the bytes move from the reply's lease to the write buffer's
                wlease.force(wbuf.len());
                collected = true;
            }
            _ => break,
        }
    }
    if !wbuf.is_empty() {
        if let Poll::Ready(r) = Pin::new(&mut *client).poll_write(cx, wbuf) {
            let n = r?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            wbuf.advance(n);
            wlease.force(wbuf.len());
            *unflushed = client.is_tls();
            return Poll::Ready(Ok(Io::Wrote(n)));
        }
    } else if *unflushed {
        if let Poll::Ready(r) = Pin::new(&mut *client).poll_flush(cx) {
            r?;
            *unflushed = false;
            return Poll::Ready(Ok(Io::Flushed));
        }
    }
    if collected {
        return Poll::Ready(Ok(Io::Collected));
    }
    if read {
        if let Poll::Ready(r) = poll_read_buf(Pin::new(&mut *client), cx, rbuf) {
            return Poll::Ready(r.map(Io::Read));
        }
    }
    Poll::Pending
}
