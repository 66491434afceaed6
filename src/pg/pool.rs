//! A pool of server connections for one (database, user).
//!
//! Idle servers are a LIFO stack (the most recently used is the warmest). A client that finds
//! no idle server and no room to open one joins a FIFO queue and is handed the next server
//! checked in — or a *slot* to open a new one when a server is closed — so waiting is fair and
//! bounded by `query_wait_timeout`. The lock is held only to move a server between the stack,
//! the queue and the caller; connecting, closing and waking happen outside it.

use super::server::{Server, ServerError, ServerTarget};
use crate::config::{Dur, PoolMode, PoolSettings};
use crate::obs::metrics::PoolMetrics;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_postgres::error::SqlState;

/// Identifies a pool: the database name clients use and the client user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.database, self.user)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no server connection available within query_wait_timeout ({0}); pool {1} is busy")]
    Timeout(Dur, String),
    #[error(transparent)]
    Connect(#[from] ServerError),
    #[error("pool {0} is closed")]
    Closed(String),
    /// A CancelRequest arrived while the request waited for a server (the server's words).
    #[error("canceling statement due to user request")]
    Canceled,
    #[error("backend {backend} is failing: circuit breaker open, retry in {retry_in:?}")]
    CircuitOpen { backend: String, retry_in: Duration },
}

impl PoolError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, PoolError::Timeout(..))
    }

    /// The pool was closed (shutdown, or drained by a RELOAD).
    pub fn is_closed(&self) -> bool {
        matches!(self, PoolError::Closed(_))
    }

    /// The SQLSTATE a client is told: a refused server login keeps the server's own code.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            PoolError::Timeout(..) | PoolError::Canceled => SqlState::QUERY_CANCELED,
            PoolError::Closed(_) | PoolError::CircuitOpen { .. } => SqlState::CANNOT_CONNECT_NOW,
            PoolError::Connect(e) => e
                .server_code()
                .map(SqlState::from_code)
                .unwrap_or(SqlState::CONNECTION_FAILURE),
        }
    }

    /// Opening a new server connection failed (the server's fault, not the pool's).
    pub fn connect_failure(&self) -> Option<&ServerError> {
        match self {
            PoolError::Connect(e) => Some(e),
            _ => None,
        }
    }

    /// What the client can do about it.
    pub fn hint(&self) -> Option<&'static str> {
        self.is_timeout().then_some(
            "all server connections of the pool stayed busy; raise pool_size or query_wait_timeout",
        )
    }
}

/// What a waiting client is handed.
enum Grant {
    Server(Box<Server>),
    /// Room to open one more connection (already counted in `total`).
    Slot,
}

#[derive(Default)]
struct State {
    // Boxed: servers move between this stack and sessions as one pointer.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<Server>>,
    /// Open or opening connections, idle ones included.
    total: usize,
    /// Clients waiting for a server, with when they started waiting.
    waiters: VecDeque<(Instant, oneshot::Sender<Grant>)>,
    closed: bool,
}

/// An open server connection, for `SHOW SERVERS`.
#[derive(Debug, Clone)]
pub struct ServerRow {
    pub id: u64,
    pub addr: std::net::SocketAddr,
    pub local_addr: Option<std::net::SocketAddr>,
    pub backend_pid: i32,
    pub connected_at: std::time::SystemTime,
    pub idle: bool,
}

/// Reported server parameters (name, value).
pub type Params = Arc<Vec<(String, String)>>;

/// Counts for `SHOW POOLS` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub idle: usize,
    pub active: usize,
    pub waiting: usize,
    pub clients: usize,
}

pub struct Pool {
    pub key: PoolKey,
    /// `primary`, or the replica's `host:port`.
    pub target_name: String,
    /// Swapped by RELOAD (sizes, timeouts) without dropping anyone.
    settings: arc_swap::ArcSwap<PoolSettings>,
    target: ServerTarget,
    state: Mutex<State>,
    /// Reported parameters of the servers, for new clients' welcome.
    welcome: Mutex<Option<Params>>,
    /// What the servers answered for clients' startup settings (`super::login_params`).
    pub canonical: super::login_params::Canonical,
    pub metrics: PoolMetrics,
    /// Clients logged in to this pool.
    pub clients: AtomicUsize,
    last_error: Mutex<Option<String>>,
    /// Every open server, for `SHOW SERVERS` (touched on open and close only).
    rows: Mutex<std::collections::HashMap<u64, ServerRow>>,
    /// `PAUSE`: checkouts wait until `RESUME`.
    paused: std::sync::atomic::AtomicBool,
    resumed: tokio::sync::Notify,
    pub created: Instant,
    /// When [`Pool::free_database`] last ran, in nanoseconds after `created` (0: never):
    /// servers out of the pool then are closed when they come back.
    freed_at: AtomicU64,
    /// The backend's circuit breaker (shared by every pool towards it).
    breaker: Option<Arc<crate::pg::limits::Breaker>>,
    /// `min_pool_size` is kept warm: from the start when Pake has a password for the server,
    /// otherwise once a connection has worked. Pools are built for every configured user,
    /// and warming one whose login cannot work would trip the backend's breaker for all.
    warm: std::sync::atomic::AtomicBool,
}

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

/// A server idle longer than this gets a real liveness probe (one syscall) at checkout;
/// a shorter idle one is judged by what the reactor last saw of its socket. The reactor
/// can lag (a busy or descheduled thread has not polled since): a server terminated while
/// idle (pg_terminate_backend, idle_session_timeout) has its FATAL already in the socket,
/// and handed out on the cached view it would end the next client's session. A server back
/// for more than a few milliseconds is not on a hot path, so the syscall costs nothing that
/// matters; one reused within them was just answering.
const DEEP_CHECK_AFTER: Duration = Duration::from_millis(10);

impl Pool {
    pub fn new(
        key: PoolKey,
        target_name: String,
        settings: PoolSettings,
        target: ServerTarget,
        metrics: PoolMetrics,
        breaker: Option<Arc<crate::pg::limits::Breaker>>,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            warm: std::sync::atomic::AtomicBool::new(target.password.is_some()),
            key,
            target_name,
            settings: arc_swap::ArcSwap::from_pointee(settings),
            target,
            state: Mutex::new(State::default()),
            welcome: Mutex::new(None),
            canonical: Default::default(),
            metrics,
            clients: AtomicUsize::new(0),
            last_error: Mutex::new(None),
            rows: Mutex::new(std::collections::HashMap::new()),
            paused: std::sync::atomic::AtomicBool::new(false),
            resumed: tokio::sync::Notify::new(),
            created: Instant::now(),
            freed_at: AtomicU64::new(0),
            breaker,
        })
    }

    /// `PAUSE`: new checkouts wait until [`Pool::resume`].
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
        self.resumed.notify_waiters();
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    async fn wait_while_paused(&self) {
        while self.paused.load(Ordering::Acquire) {
            let resumed = self.resumed.notified();
            if !self.paused.load(Ordering::Acquire) {
                return;
            }
            resumed.await;
        }
    }

    /// Every open server with whether it is idle.
    pub fn server_rows(&self) -> Vec<ServerRow> {
        let idle: std::collections::HashSet<u64> =
            self.state.lock().idle.iter().map(|s| s.id).collect();
        let mut rows: Vec<ServerRow> = self
            .rows
            .lock()
            .values()
            .cloned()
            .map(|mut r| {
                r.idle = idle.contains(&r.id);
                r
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }

    /// The longest a queued client has been waiting.
    pub fn max_wait(&self) -> Duration {
        self.state
            .lock()
            .waiters
            .iter()
            .filter(|(_, w)| !w.is_closed())
            .map(|(at, _)| at.elapsed())
            .max()
            .unwrap_or_default()
    }

    fn forget(&self, id: u64) {
        self.rows.lock().remove(&id);
    }

    /// The current settings (cheap: no reference count on the hot path).
    pub fn settings(&self) -> arc_swap::Guard<Arc<PoolSettings>> {
        self.settings.load()
    }

    /// RELOAD: new sizes and timeouts apply to the next checkout; a larger pool hands room
    /// to waiting clients now, a smaller one shrinks as servers come back.
    pub fn update_settings(&self, settings: PoolSettings) {
        self.settings.store(Arc::new(settings));
        loop {
            {
                let mut st = self.state.lock();
                let has_waiter = st.waiters.iter().any(|(_, w)| !w.is_closed());
                if st.closed || !has_waiter || st.total >= self.settings().size {
                    break;
                }
                st.total += 1;
            }
            // a new slot for the first waiter
            self.give(None);
        }
    }

    pub fn mode(&self) -> PoolMode {
        self.settings().mode
    }

    pub fn target(&self) -> &ServerTarget {
        &self.target
    }

    /// Get a server: idle, new, or the next one freed, within `query_wait_timeout`.
    pub async fn checkout(&self) -> Result<Box<Server>, PoolError> {
        self.checkout_until(std::future::pending()).await
    }

    /// [`Pool::checkout`], or [`PoolError::Canceled`] if `stop` completes while waiting in
    /// the queue (a grant that arrived meanwhile is still taken).
    pub async fn checkout_until(
        &self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Box<Server>, PoolError> {
        tokio::pin!(stop);
        if self.paused.load(Ordering::Acquire) {
            self.wait_while_paused().await;
        }
        let started = Instant::now();
        let wait = self.settings().defaults.query_wait_timeout;
        let deadline = wait.enabled().map(|d| tokio::time::Instant::now() + d);
        loop {
            let grant = match self.take_or_queue()? {
                Ok(grant) => grant,
                // boxed: a session carries its checkout's future for life, the queue's
                // timers only while it waits
                Err(rx) => Box::pin(self.wait(rx, deadline, stop.as_mut())).await?,
            };
            match grant {
                Grant::Server(mut s) => {
                    let now = Instant::now();
                    if self.expired(&s, now) || !s.is_alive(DEEP_CHECK_AFTER) {
                        self.discard(s);
                        continue;
                    }
                    self.metrics
                        .checkout_wait
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(s);
                }
                Grant::Slot => match self.open().await {
                    Ok(s) => {
                        self.metrics
                            .checkout_wait
                            .observe(started.elapsed().as_secs_f64());
                        return Ok(s);
                    }
                    Err(e) => {
                        self.release_slot();
                        return Err(e);
                    }
                },
            }
        }
    }

    /// Wait in the queue: after `reserve_pool_timeout` a reserve slot may be taken; at the
    /// deadline (`query_wait_timeout`) give up.
    async fn wait(
        &self,
        mut rx: oneshot::Receiver<Grant>,
        deadline: Option<tokio::time::Instant>,
        mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<Grant, PoolError> {
        let settings = self.settings();
        let reserve = settings.defaults.reserve_pool_size;
        if reserve > 0 {
            let reserve_at = tokio::time::Instant::now() + settings.defaults.reserve_pool_timeout.0;
            if deadline.is_none_or(|d| reserve_at < d) {
                let waited = tokio::select! {
                    w = tokio::time::timeout_at(reserve_at, &mut rx) => w,
                    () = &mut stop => return self.stop_waiting(rx),
                };
                match waited {
                    Ok(Ok(grant)) => return Ok(grant),
                    Ok(Err(_)) => return Err(PoolError::Closed(self.key.to_string())),
                    Err(_) => {
                        if self.take_reserve(settings.size + reserve) {
                            return Ok(self.leave_queue(rx, Grant::Slot));
                        }
                    }
                }
            }
        }
        let until = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, &mut rx).await.ok(),
                None => Some((&mut rx).await),
            }
        };
        let got = tokio::select! {
            got = until => got,
            () = &mut stop => return self.stop_waiting(rx),
        };
        match got {
            Some(Ok(grant)) => Ok(grant),
            Some(Err(_)) => Err(PoolError::Closed(self.key.to_string())),
            None => {
                // Timed out: close the queue entry; a grant sent just before the close is
                // still ours.
                rx.close();
                match rx.try_recv() {
                    Ok(grant) => Ok(grant),
                    Err(_) => {
                        self.metrics.wait_timeouts.inc();
                        Err(PoolError::Timeout(
                            settings.defaults.query_wait_timeout,
                            self.key.to_string(),
                        ))
                    }
                }
            }
        }
    }

    /// The wait was canceled: close the queue entry; a grant sent just before the close is
    /// still ours.
    fn stop_waiting(&self, mut rx: oneshot::Receiver<Grant>) -> Result<Grant, PoolError> {
        rx.close();
        rx.try_recv().map_err(|_| PoolError::Canceled)
    }

    /// Count one more connection if the pool (reserve included) has room.
    fn take_reserve(&self, limit: usize) -> bool {
        let mut st = self.state.lock();
        if st.closed || st.total >= limit {
            return false;
        }
        st.total += 1;
        self.metrics.reserve_used.inc();
        true
    }

    /// Leave the queue holding `taken`; a grant that raced in is used instead, and `taken`
    /// (a slot) goes back.
    fn leave_queue(&self, mut rx: oneshot::Receiver<Grant>, taken: Grant) -> Grant {
        rx.close();
        match rx.try_recv() {
            Ok(grant) => {
                self.give(None);
                grant
            }
            Err(_) => taken,
        }
    }

    /// Keep `min_pool_size` connections open: open what is missing, in the background.
    pub fn ensure_min(self: &Arc<Self>) {
        let min = {
            let s = self.settings();
            s.defaults.min_pool_size.min(s.size)
        };
        if !self.warm.load(Ordering::Relaxed) {
            return;
        }
        loop {
            {
                let mut st = self.state.lock();
                if st.closed || st.total >= min {
                    return;
                }
                st.total += 1;
            }
            let pool = self.clone();
            tokio::spawn(async move {
                match pool.open().await {
                    Ok(s) => pool.give(Some(s)),
                    Err(_) => pool.release_slot(),
                }
            });
        }
    }

    #[allow(clippy::type_complexity)]
    fn take_or_queue(&self) -> Result<Result<Grant, oneshot::Receiver<Grant>>, PoolError> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(PoolError::Closed(self.key.to_string()));
        }
        if let Some(s) = st.idle.pop() {
            return Ok(Ok(Grant::Server(s)));
        }
        if st.total < self.settings().size {
            st.total += 1;
            return Ok(Ok(Grant::Slot));
        }
        let (tx, rx) = oneshot::channel();
        st.waiters.push_back((Instant::now(), tx));
        Ok(Err(rx))
    }

    async fn open(&self) -> Result<Box<Server>, PoolError> {
        use crate::pg::limits::Admit;
        if let Some(b) = &self.breaker {
            if let Admit::Refuse(retry_in) = b.admit() {
                return Err(PoolError::CircuitOpen {
                    backend: b.backend.clone(),
                    retry_in,
                });
            }
        }
        let id = NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed);
        // boxed: the connect future (TLS, authentication) is large and rarely running, and every
        // session awaiting a checkout would otherwise carry its size for its whole life
        let result = Box::pin(Server::connect(id, &self.target)).await;
        if let Some(b) = &self.breaker {
            match &result {
                Err(e) if e.backend_down() => b.on_failure(),
                // a refused login: the server is up (and a probe found it so)
                _ => b.on_success(),
            }
        }
        match result {
            Ok(s) => {
                self.warm.store(true, Ordering::Relaxed);
                self.metrics.server_connects.inc();
                *self.last_error.lock() = None;
                self.rows.lock().insert(
                    id,
                    ServerRow {
                        id,
                        addr: s.addr,
                        local_addr: s.stream.tcp().and_then(|t| t.local_addr().ok()),
                        backend_pid: s.key.pid,
                        connected_at: std::time::SystemTime::now(),
                        idle: false,
                    },
                );
                let mut welcome = self.welcome.lock();
                if welcome.is_none() {
                    *welcome = Some(Arc::new(s.params.reported.clone()));
                }
                tracing::debug!(pool = %self.key, server = id, "opened server connection");
                Ok(Box::new(s))
            }
            Err(e) => {
                self.metrics.server_connect_errors.inc();
                *self.last_error.lock() = Some(e.to_string());
                tracing::warn!(pool = %self.key, error = %e, "cannot open server connection");
                Err(e.into())
            }
        }
    }

    /// Hand a finished slot to the next waiter, or give it up.
    fn release_slot(&self) {
        self.give(None);
    }

    /// Return a clean server (idle, nothing owed, not dirty) for reuse.
    pub fn checkin(&self, mut s: Box<Server>) {
        debug_assert!(s.is_idle());
        let now = Instant::now();
        if self.expired(&s, now) || self.out_when_freed(&s) {
            self.discard(s);
            return;
        }
        s.last_used = now;
        s.shrink_buffers();
        self.give(Some(s));
    }

    /// Close a server whose state is unknown or that is past its life.
    pub fn discard(&self, mut s: Box<Server>) {
        s.terminate();
        self.forget(s.id);
        tracing::debug!(pool = %self.key, server = s.id, "closing server connection");
        drop(s);
        self.release_slot();
    }

    /// Give a server (or, with `None`, a slot) to the first live waiter; otherwise keep the
    /// server idle or drop the slot. Waking happens outside the lock.
    fn give(&self, server: Option<Box<Server>>) {
        let mut grant = match server {
            Some(s) => Grant::Server(s),
            None => Grant::Slot,
        };
        loop {
            let mut st = self.state.lock();
            let waiter = loop {
                match st.waiters.pop_front() {
                    Some((_, w)) if w.is_closed() => continue,
                    other => break other.map(|(_, w)| w),
                }
            };
            if waiter.is_none() && st.total > self.settings().size {
                // a reserve connection no one waits for, or a pool shrunk by RELOAD
                st.total -= 1;
                drop(st);
                if let Grant::Server(mut s) = grant {
                    s.terminate();
                    self.forget(s.id);
                }
                return;
            }
            let Some(w) = waiter else {
                match grant {
                    Grant::Server(s) if !st.closed => st.idle.push(s),
                    Grant::Server(s) => {
                        st.total -= 1;
                        drop(st);
                        self.forget(s.id);
                    }
                    Grant::Slot => st.total -= 1,
                }
                return;
            };
            drop(st);
            match w.send(grant) {
                Ok(()) => return,
                Err(back) => grant = back,
            }
        }
    }

    fn expired(&self, s: &Server, now: Instant) -> bool {
        self.settings()
            .defaults
            .server_lifetime
            .enabled()
            .is_some_and(|life| s.age(now) >= life)
    }

    /// The reported parameters new clients are welcomed with; opens a connection the first
    /// time so that they come from a real server.
    pub async fn welcome_params(&self) -> Result<Params, PoolError> {
        if let Some(w) = self.welcome.lock().clone() {
            return Ok(w);
        }
        let s = self.checkout().await?;
        self.checkin(s);
        Ok(self.welcome.lock().clone().unwrap_or_default())
    }

    /// Close idle servers past `server_lifetime`, and past `server_idle_timeout` down to
    /// `min_pool_size`.
    pub fn reap(&self) -> usize {
        let now = Instant::now();
        let settings = self.settings();
        let idle_timeout = settings.defaults.server_idle_timeout.enabled();
        let lifetime = settings.defaults.server_lifetime.enabled();
        let min = settings.defaults.min_pool_size.min(settings.size);
        let old: Vec<Box<Server>> = {
            let mut st = self.state.lock();
            let mut spare = st.total.saturating_sub(min);
            let mut keep = Vec::with_capacity(st.idle.len());
            let mut old = Vec::new();
            // oldest-used first (the bottom of the LIFO stack)
            for s in st.idle.drain(..) {
                let too_old = lifetime.is_some_and(|t| s.age(now) >= t);
                let idle_too_long = spare > 0
                    && idle_timeout
                        .is_some_and(|t| now.saturating_duration_since(s.last_used) >= t);
                if too_old || idle_too_long {
                    spare = spare.saturating_sub(1);
                    old.push(s);
                } else {
                    keep.push(s);
                }
            }
            st.idle = keep;
            st.total -= old.len();
            old
        };
        let n = self.terminate(old);
        if n > 0 {
            tracing::debug!(pool = %self.key, closed = n, "closed idle server connections");
        }
        n
    }

    /// A client is about to drop or rename this pool's database: close the idle servers
    /// now, and the ones out of the pool (in a transaction, or being reset after their
    /// client left: a session-mode client's reset runs in the background) when they come
    /// back, so that none is left connected to it. PostgreSQL's DROP DATABASE waits 5 s for
    /// other sessions to go, and one reset a moment after the drop started held it up.
    pub fn free_database(&self) -> usize {
        let since = self.created.elapsed().as_nanos();
        self.freed_at.store(
            u64::try_from(since).unwrap_or(u64::MAX).max(1),
            Ordering::Release,
        );
        let idle = Self::take_idle(&mut self.state.lock());
        self.terminate(idle)
    }

    /// The server was out of the pool when [`Pool::free_database`] ran: it was last checked
    /// in (or opened) before then.
    fn out_when_freed(&self, s: &Server) -> bool {
        match self.freed_at.load(Ordering::Acquire) {
            0 => false,
            at => s.last_used < self.created + Duration::from_nanos(at),
        }
    }

    /// Close the pool: waiters get an error, idle servers are closed, servers in use are
    /// closed when they come back.
    pub fn close(&self) {
        let (idle, waiters) = {
            let mut st = self.state.lock();
            st.closed = true;
            (Self::take_idle(&mut st), std::mem::take(&mut st.waiters))
        };
        drop(waiters);
        self.terminate(idle);
    }

    /// Every idle server, no longer counted in the pool (boxed as the idle stack keeps them:
    /// servers move between the stack and sessions without being copied).
    #[allow(clippy::vec_box)]
    fn take_idle(st: &mut State) -> Vec<Box<Server>> {
        let idle: Vec<_> = st.idle.drain(..).collect();
        st.total -= idle.len();
        idle
    }

    /// Say goodbye to servers taken out of the pool; how many.
    fn terminate(&self, servers: impl IntoIterator<Item = Box<Server>>) -> usize {
        let mut n = 0;
        for mut s in servers {
            s.terminate();
            self.forget(s.id);
            n += 1;
        }
        n
    }

    pub fn counts(&self) -> PoolCounts {
        let st = self.state.lock();
        let waiting = st.waiters.iter().filter(|(_, w)| !w.is_closed()).count();
        PoolCounts {
            idle: st.idle.len(),
            active: st.total - st.idle.len(),
            waiting,
            clients: self.clients.load(Ordering::Relaxed),
        }
    }

    /// A server connection failed mid-request: readiness reports it until a connect works.
    pub fn record_server_failure(&self, error: &str) {
        *self.last_error.lock() = Some(error.to_string());
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// How often the reaper should run for these settings.
    pub fn reap_interval(&self) -> Duration {
        let d = &self.settings().defaults;
        [d.server_idle_timeout.enabled(), d.server_lifetime.enabled()]
            .into_iter()
            .flatten()
            .map(|t| t / 4)
            .min()
            .unwrap_or(Duration::from_secs(10))
            .clamp(Duration::from_millis(100), Duration::from_secs(10))
    }
}
