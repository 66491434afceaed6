//! One client's session after login: the request path.
//!
//! A request (one Query, or the extended-protocol messages up to Sync) goes through named
//! steps, one file each, in this order:
//! 1. [`request`]: take whole client messages from the buffer; without a server, answer what
//!    needs none (Terminate, a lone Sync, `DEALLOCATE`/`DISCARD ALL` in transaction mode) and
//!    wait until a request is buffered;
//! 2. [`classify`]: analyse the request once into a value (per statement: shape id, class,
//!    session effect, routing hint, trace parent), read by every later step;
//! 3. [`route`]: primary or replica, or answer it here (a deferred `BEGIN`, `SET pake.route`);
//! 4. [`attach`] (checkout): check a server out of the pool, bring its session parameters in
//!    line, arm cancellation;
//! 5. [`forward`]: one handler per message type, rewriting prepared-statement names and
//!    recording the replies owed ([`crate::pg::server::replies`]);
//! 6. [`response`]: match server messages against the replies owed, forward, swallow or
//!    synthesise, and track ReadyForQuery;
//! 7. account: statements to insight (`record`), transactions to the OTLP exporter when it
//!    is on (`trace`);
//! 8. [`attach`] (release): at a transaction boundary (transaction mode) hand the server
//!    back — after a reset if the client left session state on it.
//!
//! I/O is full duplex (a `select!` over both sockets and both directions), so a client that
//! pipelines a large batch while the server streams results cannot deadlock the proxy.

pub mod attach;
pub mod classify;
pub mod forward;
mod frame;
mod identity;
mod inflight;
mod listen;
mod own_names;
mod record;
mod refusal;
pub mod request;
pub mod response;
pub mod route;
mod state;
mod trace;
mod unnamed;

use super::cancel::CancelSlot;
use super::cluster::{Cluster, Target};
use super::error::Error;
use super::login::LoggedIn;
use super::params::{ClientParams, PendingSettings};
use super::pool::Pool;
use super::prepared::ClientStatements;
use super::proxy::{Phase, Proxy};
use super::server::Server;
use super::spare;
use super::stream::ClientStream;
use crate::config::PoolMode;
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::io::poll_read_buf;

/// Stop reading a peer while this much is waiting to be written to the other side.
const HIGH_WATER: usize = 256 * 1024;
/// Read size for socket reads.
const READ_CHUNK: usize = 16 * 1024;
/// Buffers above this size are given back when the session goes idle.
use super::server::KEEP_BUFFER;
/// While draining, a client between transactions is told to go once it has been quiet this
/// long. Closing it the moment its transaction ends would race its next request (which is
/// then lost); a client that reconnects per transaction never waits this long.
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Counters accumulated locally and flushed to the pool's metrics once per transaction.
#[derive(Default)]
struct Tally {
    queries: u64,
    transactions: u64,
    received: u64,
    sent: u64,
}

pub struct Session {
    pub id: u64,
    proxy: Arc<Proxy>,
    cluster: Arc<Cluster>,
    /// The primary's pool: settings, client counts.
    pool: Arc<Pool>,
    /// Where the attached server came from.
    server_target: Target,
    /// Routing state: transaction, `SET pake.route`, read-your-writes.
    routing: route::RouteState,
    client: ClientStream,
    /// A TLS client stream has ciphertext to flush after the last write.
    client_flush: bool,
    /// Bytes from the client not yet handled.
    crbuf: BytesMut,
    /// Bytes for the client not yet written.
    cwbuf: BytesMut,
    server: Option<Box<Server>>,
    statements: ClientStatements,
    params: ClientParams,
    /// Setting changes of the open transaction, recorded when it commits.
    pending_settings: PendingSettings,
    /// State that keeps this client on its server (transaction mode).
    pins: super::sql::pins::Pins,
    cancel: Arc<CancelSlot>,
    mode: PoolMode,
    max_message: usize,
    /// On tokio's clock, as every deadline derived from it (paused in unit tests).
    last_client_activity: tokio::time::Instant,
    /// After a failed request: drop extended-protocol messages until the next Sync.
    skip_to_sync: bool,
    /// Transaction mode: the client's last unnamed Parse, for a Bind that comes in a later
    /// request (on another server); empty when there is none; at most `max_message_size`.
    unnamed_parse: BytesMut,
    phase: watch::Receiver<Phase>,
    tally: Tally,
    cluster_gen: u64,
    /// When the attached server was checked out.
    attached_at: Instant,
    /// Insight is on: statements are tracked and recorded.
    insight_on: bool,
    /// (the parameters' signature, insight's split hash of database, user and application
    /// then): the hash is taken again only when the client's parameters change.
    split: (u64, u64),
    /// Client statements sent and not yet completed, in order.
    inflight: inflight::Inflights,
    /// The statement of the last Bind (for its Executes) and of the last unnamed Parse.
    portal: Option<record::StatementRef>,
    unnamed: Option<record::StatementRef>,
    /// Transaction mode: analyses of the interned statements this client binds, so a Bind
    /// does not normalise the text again.
    analyzed: std::collections::HashMap<crate::pg::prepared::StatementId, classify::Analysis>,
    /// The request being started or forwarded, analysed ([`classify`]).
    request: classify::Request,
    /// Transactions this client has finished (groups statements for N+1 detection).
    tx_seq: u64,
    /// Pool wait of the last checkout, reported with the next statement.
    wait_to_report: std::time::Duration,
    /// Completions found while reading the server, in order (reused buffer).
    finished: Vec<record::Finished>,
    /// Trace export's state when it is on (taken again after a RELOAD).
    otlp: Option<Box<trace::Otlp>>,
    /// Transaction mode: the channels this client LISTENs on through Pake (boxed: few do).
    listen: Option<Box<crate::pg::notify::Subscriber>>,
    /// The database's listening connection (told which server works for this client while
    /// anyone listens, so notifications name their sender by Pake's pid).
    notify: Option<Arc<crate::pg::notify::Listener>>,
    /// The attached server ran a statement that may notify (`NOTIFY`, `pg_notify`): it goes
    /// back to the pool only once the listener has its notifications (see `release_if_done`).
    may_notify: bool,
    /// The idle or drain deadline's timer, made on first use and reset after (see `wait_io`).
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// What few sessions need, made when one does ([`Rare`]).
    rare: Option<Box<Rare>>,
}

/// The parts of a session few clients ever use, on the heap once one does: every idle
/// client carries a `Session`, and these would add 136 bytes to each.
#[derive(Default)]
struct Rare {
    /// The process budget held while a large message is read into `crbuf`.
    large: Option<crate::limits::Charge>,
    /// Named statements that change settings (noted when bound); bounded.
    setting_statements: std::collections::HashSet<crate::pg::prepared::StatementId>,
    /// The user's entry when `auth_query` found it (it has no `[[users]]` entry to reload).
    looked_up: Option<Arc<super::proxy::UserEntry>>,
    /// An injected bandwidth cap (bytes per second) for the current request.
    bandwidth: Option<u64>,
    /// Session mode: the client's named statements (transaction mode has `statements`).
    named: std::collections::HashMap<Box<[u8]>, record::StatementRef>,
    /// The unnamed statement's text when it changes settings through parameters
    /// (`set_config($1, $2, false)`): its settings are noted when it is bound.
    unnamed_setting: Option<Arc<str>>,
    /// Session mode: the client's statements that call `pg_terminate_backend`, by name (the
    /// unnamed one under the empty name), with their Parse definition (transaction mode
    /// finds them in `statements` and `unnamed_parse`); bounded ([`identity`]).
    terminate_statements: std::collections::HashMap<Box<[u8]>, Box<[u8]>>,
}

/// What the loop should do next.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// What woke the loop.
enum Event {
    ClientRead(usize),
    ServerRead(usize),
    Wrote,
    /// Bytes written to the client.
    WroteClient(usize),
    Deadline,
    /// The client's cancel slot woke it: `pg_terminate_backend` of its pid, or the proxy's
    /// phase changed.
    Attention,
    /// Notifications are waiting for the client.
    Notified,
}

impl Session {
    pub fn new(
        id: u64,
        proxy: Arc<Proxy>,
        client: ClientStream,
        cluster: Arc<Cluster>,
        login: LoggedIn,
    ) -> Session {
        let config = proxy.config();
        Session {
            id,
            mode: cluster.primary.mode(),
            pool: cluster.primary.clone(),
            cluster,
            server_target: Target::Primary,
            routing: route::RouteState::default(),
            client,
            client_flush: false,
            crbuf: BytesMut::new(),
            cwbuf: BytesMut::new(),
            server: None,
            statements: ClientStatements::default(),
            params: login.params,
            pending_settings: PendingSettings::default(),
            pins: super::sql::pins::Pins::default(),
            cancel: login.cancel,
            max_message: config.general.max_message_size.0 as usize,
            last_client_activity: tokio::time::Instant::now(),
            skip_to_sync: false,
            unnamed_parse: BytesMut::new(),
            phase: proxy.phase(),
            tally: Tally::default(),
            cluster_gen: proxy.generation(),
            attached_at: Instant::now(),
            insight_on: proxy.insight.config().enabled,
            inflight: inflight::Inflights::default(),
            split: (0, 0),
            portal: None,
            unnamed: None,
            analyzed: std::collections::HashMap::new(),
            request: classify::Request::default(),
            tx_seq: 0,
            wait_to_report: std::time::Duration::ZERO,
            finished: Vec::new(),
            otlp: trace::Otlp::renew(None, proxy.otlp()),
            listen: None,
            notify: proxy.listener(&login.startup.database),
            may_notify: false,
            timer: None,
            rare: login.user.looked_up.then(|| {
                Box::new(Rare {
                    looked_up: Some(login.user.clone()),
                    ..Rare::default()
                })
            }),
            proxy,
        }
    }

    /// Serve the client until it leaves or fails; always cleans up the server and key.
    pub async fn run(mut self: Box<Self>) -> Result<(), Error> {
        self.pool
            .clients
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = self.serve().await;
        // boxed like the request's start, with the outcome (96 bytes): the farewell runs
        // once and needs no room in the task while the client is idle
        Box::pin(self.close(result)).await
    }

    /// The session ended with `result`: say goodbye, clean up the server and the key.
    async fn close(mut self: Box<Self>, result: Result<(), Error>) -> Result<(), Error> {
        self.finish(&result).await;
        self.pool
            .clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.proxy.cancel.unregister(self.cancel.pid);
        result
    }

    pub(super) async fn serve(&mut self) -> Result<(), Error> {
        loop {
            if self.pump_client().await? == Flow::Exit {
                return Ok(());
            }
            if let Some(held) = self.release_if_done() {
                // boxed: few clients listen, and this state would be part of every session
                Box::pin(self.release_after_notifications(held)).await?;
            }
            if self.drained() {
                // drain: a quiet client is told to go at its transaction boundary
                self.flush_client().await?;
                return Err(Error::Shutdown);
            }
            let between = self.server.as_ref().is_none_or(|s| s.is_idle());
            if between && self.crbuf.is_empty() && self.cwbuf.is_empty() {
                self.shrink_buffers();
            }
            // before the request's bytes go out, and before the client can see its end
            let running = self.server.as_ref().is_some_and(|s| !s.replies.is_empty());
            self.cancel.set_running(running);
            let event = self.wait_io().await?;
            if let (Event::WroteClient(n), Some(bps)) =
                (&event, self.rare.as_ref().and_then(|r| r.bandwidth))
            {
                // an injected bandwidth cap: pace what reaches the client
                let pause = std::time::Duration::from_secs_f64(*n as f64 / bps.max(1) as f64);
                tokio::time::sleep(pause).await;
            }
            self.on_event(event)?;
        }
    }

    fn on_event(&mut self, event: Event) -> Result<(), Error> {
        match event {
            Event::ClientRead(0) => Err(Error::ClientIo(std::io::ErrorKind::UnexpectedEof.into())),
            Event::ClientRead(n) => {
                self.tally.received += n as u64;
                self.last_client_activity = tokio::time::Instant::now();
                Ok(())
            }
            Event::ServerRead(0) => Err(Error::ServerLost(super::server::ServerError::Closed)),
            Event::ServerRead(_) => self.on_server_input(),
            Event::Wrote | Event::WroteClient(_) => Ok(()),
            Event::Deadline if self.drained() => Err(Error::Shutdown),
            Event::Deadline => match self.idle_deadline() {
                Some(t) if t <= tokio::time::Instant::now() => Err(self.timeout_error()),
                _ => Ok(()), // woke for the drain a moment early: wait again
            },
            Event::Attention if self.cancel.is_terminated() => Err(Error::Terminated),
            Event::Attention => match *self.phase.borrow() {
                Phase::Closing => Err(Error::Shutdown),
                _ => Ok(()),
            },
            Event::Notified => self.deliver_notifications(),
        }
    }

    /// The rate limits of this client's user and address.
    fn admit_request(&self) -> Result<(), Error> {
        if !self.proxy.rate_limits_on() {
            return Ok(());
        }
        let Some(user) = self.user_entry() else {
            return Ok(());
        };
        self.proxy.admit_request(&user, self.cancel.info.addr.ip())
    }

    /// Who logged in (kept once, in the cancel slot `SHOW CLIENTS` reads).
    fn user(&self) -> &str {
        &self.cancel.info.user
    }

    /// The database logged into: which pools to pick up after a RELOAD.
    fn database(&self) -> &str {
        &self.cancel.info.database
    }

    /// The user's current entry: its `[[users]]` one, or the `auth_query` one from login.
    fn user_entry(&self) -> Option<Arc<super::proxy::UserEntry>> {
        self.proxy
            .user(self.user())
            .or_else(|| self.rare.as_ref()?.looked_up.clone())
    }

    /// When the client has been quiet too long, with or without an open transaction.
    /// Draining, between transactions, and quiet for `DRAIN_IDLE` (or the drain ran out).
    fn drained(&self) -> bool {
        self.server.is_none()
            && match *self.phase.borrow() {
                Phase::Running => false,
                Phase::Draining => self.last_client_activity.elapsed() >= DRAIN_IDLE,
                Phase::Closing => true,
            }
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        let idle = self.idle_deadline();
        if self.server.is_none() && *self.phase.borrow() == Phase::Draining {
            let go = self.last_client_activity + DRAIN_IDLE;
            return Some(idle.map_or(go, |t| t.min(go)));
        }
        idle
    }

    fn idle_deadline(&self) -> Option<tokio::time::Instant> {
        let d = &self.pool.settings().defaults;
        match &self.server {
            Some(s) if s.replies.is_empty() && s.tx_status != b'I' => d
                .idle_transaction_timeout
                .enabled()
                .map(|t| self.last_client_activity + t),
            // a pinned client between transactions is idle like any other
            Some(s) if s.replies.is_empty() && self.pinned() => d
                .client_idle_timeout
                .enabled()
                .map(|t| self.last_client_activity + t),
            Some(_) => None,
            None => d
                .client_idle_timeout
                .enabled()
                .map(|t| self.last_client_activity + t),
        }
    }

    fn timeout_error(&self) -> Error {
        let d = &self.pool.settings().defaults;
        match &self.server {
            Some(s) if s.tx_status != b'I' => Error::IdleInTransaction(d.idle_transaction_timeout),
            _ => Error::ClientIdle(d.client_idle_timeout),
        }
    }

    /// Wait for the next I/O event: writes first (client, then server), then server reads,
    /// then client reads, then the idle deadline and the proxy's phase. One `poll_fn` polls
    /// every direction of both connections, plain or TLS, with no lock or task in between.
    async fn wait_io(&mut self) -> Result<Event, Error> {
        self.charge_large_message()?;
        let deadline = self.deadline();
        if let Some(at) = deadline {
            match &mut self.timer {
                Some(t) if t.deadline() == at => {}
                Some(t) => t.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let Session {
            timer,
            client,
            crbuf,
            cwbuf,
            server,
            tally,
            client_flush,
            cancel,
            listen,
            rare,
            ..
        } = self;
        // between transactions, notifications for a listening client wake the loop
        let inbox = listen
            .as_ref()
            .filter(|_| server.is_none())
            .map(|s| s.inbox.clone());
        // boxed, as the timer is kept boxed: this future's state is part of every idle
        // client's task, and most clients neither listen nor have a deadline
        let mut notified = inbox.as_ref().map(|i| Box::pin(i.wake.notified()));
        let client_tls = client.is_tls();
        let (client_blocked, may_release) = make_room(client_tls, crbuf, server.as_deref_mut());
        let attention = cancel.attention();
        tokio::pin!(attention);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = poll_write_side(cx, client, cwbuf, client_tls, client_flush) {
                return Poll::Ready(
                    r.map(|n| {
                        tally.sent += n as u64;
                        Event::WroteClient(n)
                    })
                    .map_err(Error::ClientIo),
                );
            }
            if let Some(srv) = server.as_deref_mut() {
                if let Poll::Ready(r) = poll_server(cx, srv, cwbuf.len() < HIGH_WATER) {
                    return Poll::Ready(r);
                }
            }
            if !client_blocked {
                if let Poll::Ready(r) = poll_client_read(cx, client, crbuf, cwbuf, may_release) {
                    return Poll::Ready(r);
                }
                if crbuf.capacity() == 0 {
                    // the read buffer went back (an idle client): a large message's charge
                    // to the process budget goes with it, now, not at the next event
                    if let Some(r) = rare.as_deref_mut() {
                        r.large = None;
                    }
                }
            }
            if let (Some(_), Some(t)) = (deadline, timer.as_mut()) {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Event::Deadline));
                }
            }
            if attention.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(Event::Attention));
            }
            if let (true, Some(n)) = (cwbuf.len() < HIGH_WATER, notified.as_mut()) {
                if n.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Event::Notified));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Write everything pending for the client.
    async fn flush_client(&mut self) -> Result<(), Error> {
        if !self.cwbuf.is_empty() {
            self.client
                .write_all(&self.cwbuf)
                .await
                .map_err(Error::ClientIo)?;
            self.client.flush().await.map_err(Error::ClientIo)?;
            self.tally.sent += self.cwbuf.len() as u64;
            self.cwbuf.clear();
        }
        Ok(())
    }

    /// A message larger than [`HIGH_WATER`] is read whole before it is handled (smaller
    /// ones are bounded per client by backpressure): first it is charged to the process
    /// budget (`general.clients_max_memory`), and past it this client is refused with 53200
    /// while the others go on. The charge is given back with the buffer.
    fn charge_large_message(&mut self) -> Result<(), Error> {
        let need = frame_need(&self.crbuf);
        if need <= HIGH_WATER
            || need > self.max_message // refused as oversized (08P01) when handled
            || self.large().is_some_and(|c| c.bytes() >= need)
        {
            return Ok(());
        }
        self.drop_large();
        match self.proxy.memory.charge(need) {
            Some(c) => {
                self.rare().large = Some(c);
                Ok(())
            }
            None => Err(Error::ClientsMemory {
                need,
                limit: self.proxy.memory.limit(),
            }),
        }
    }

    fn large(&self) -> Option<&crate::limits::Charge> {
        self.rare.as_ref()?.large.as_ref()
    }

    fn drop_large(&mut self) {
        if let Some(r) = &mut self.rare {
            r.large = None;
        }
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Give back large buffers when the client is idle between transactions.
    fn shrink_buffers(&mut self) {
        if self.crbuf.is_empty() && self.crbuf.try_reclaim(KEEP_BUFFER + 1) {
            self.crbuf = BytesMut::new();
        }
        if self.crbuf.is_empty() && self.crbuf.capacity() <= KEEP_BUFFER {
            // no large buffer is held (given back here or by an idle read): nor its charge
            self.drop_large();
        }
        crate::limits::shrink_idle(&mut self.cwbuf, KEEP_BUFFER, 0);
        // what the last request needed: thousands of idle clients keep none of it
        self.request.release();
        self.inflight.release();
        if self.finished.is_empty() {
            self.finished = Vec::new();
        }
        // session mode between transactions: the server it keeps, too
        if let Some(server) = &mut self.server {
            server.shrink_buffers();
        }
    }
}

/// The server side: write what is pending, then read (unless the client is behind).
/// Read room for the wait ahead: whether the client's reads are paused (the server, or the
/// request buffer, is full) and whether an idle client may give its buffers back.
fn make_room(client_tls: bool, crbuf: &mut BytesMut, server: Option<&mut Server>) -> (bool, bool) {
    let client_blocked = server.as_ref().is_some_and(|s| s.wbuf.len() >= HIGH_WATER)
        || crbuf.len() >= HIGH_WATER && crbuf.len() >= frame_need(crbuf);
    // With nothing buffered and no server, wait for readability without holding a
    // read buffer: idle clients cost no buffer memory (plain TCP; TLS keeps its own).
    let lazy_read = crbuf.capacity() == 0 && !client_tls;
    // A client between transactions whose next request is not already here gives its
    // buffers back (see `poll_client_read`), so thousands of idle clients hold no buffer
    // memory.
    let may_release = server.is_none() && !client_tls;
    if !lazy_read && crbuf.capacity() - crbuf.len() < 1024 {
        crbuf.reserve(READ_CHUNK.max(frame_need(crbuf).saturating_sub(crbuf.len())));
    }
    if let Some(srv) = server {
        if srv.rbuf.capacity() == 0 {
            // its buffer went to the client with the last reply (see `hand_over`)
            srv.rbuf = spare::take(READ_CHUNK);
        } else if srv.rbuf.capacity() - srv.rbuf.len() < 1024 {
            srv.rbuf.reserve(READ_CHUNK);
        }
    }
    (client_blocked, may_release)
}

fn poll_server(cx: &mut Context<'_>, srv: &mut Server, read: bool) -> Poll<Result<Event, Error>> {
    let tls = srv.stream.is_tls();
    if let Poll::Ready(r) = poll_write_side(
        cx,
        &mut srv.stream,
        &mut srv.wbuf,
        tls,
        &mut srv.needs_flush,
    ) {
        return Poll::Ready(
            r.map(|_| Event::Wrote)
                .map_err(|e| Error::ServerLost(e.into())),
        );
    }
    if read {
        if let Poll::Ready(r) = poll_read_buf(Pin::new(&mut srv.stream), cx, &mut srv.rbuf) {
            return Poll::Ready(
                r.map(Event::ServerRead)
                    .map_err(|e| Error::ServerLost(e.into())),
            );
        }
    }
    Poll::Pending
}

/// Read from the client. A plain-TCP client whose buffers were given back is first
/// waited on for readability, and gets a buffer only once it has sent something.
fn poll_client_read(
    cx: &mut Context<'_>,
    client: &mut ClientStream,
    crbuf: &mut BytesMut,
    cwbuf: &mut BytesMut,
    may_release: bool,
) -> Poll<Result<Event, Error>> {
    if crbuf.capacity() == 0 && !client.is_tls() {
        // released while idle: take a buffer once the client has sent something
        match client.tcp().map(|tcp| tcp.poll_read_ready(cx)) {
            Some(Poll::Ready(Ok(()))) | None => *crbuf = spare::take(READ_CHUNK),
            Some(Poll::Ready(Err(e))) => return Poll::Ready(Err(Error::ClientIo(e))),
            Some(Poll::Pending) => return Poll::Pending,
        }
    }
    if let Poll::Ready(r) = poll_read_buf(Pin::new(&mut *client), cx, crbuf) {
        return Poll::Ready(r.map(Event::ClientRead).map_err(Error::ClientIo));
    }
    if may_release && crbuf.is_empty() && cwbuf.is_empty() {
        // Between transactions with no request waiting: give both buffers back to the
        // thread's spares. The read above registered for readiness; the next poll takes a
        // buffer again when the client speaks.
        spare::give(crbuf);
        spare::give(cwbuf);
    }
    Poll::Pending
}

/// Write what `buf` holds (one write), or flush a TLS stream after its last write.
/// `Ready(Ok(n))`: `n` bytes left `buf`; `Pending`: nothing to do or the socket is full.
fn poll_write_side<S: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    stream: &mut S,
    buf: &mut BytesMut,
    tls: bool,
    needs_flush: &mut bool,
) -> Poll<std::io::Result<usize>> {
    if !buf.is_empty() {
        return match Pin::new(&mut *stream).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                *needs_flush = tls;
                Poll::Ready(Ok(n))
            }
            other => other,
        };
    }
    if *needs_flush {
        return match Pin::new(&mut *stream).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                *needs_flush = false;
                Poll::Ready(Ok(0))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        };
    }
    Poll::Pending
}

/// Bytes needed to complete the frame at the head of `buf` (its length once the header is in).
fn frame_need(buf: &BytesMut) -> usize {
    match super::wire::frame_header(buf, usize::MAX) {
        Ok(Some((_, total))) => total,
        _ => super::wire::HEADER_LEN,
    }
}
