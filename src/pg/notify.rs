//! LISTEN/NOTIFY through transaction pooling.
//!
//! In transaction mode a client's server changes at every transaction boundary, so a `LISTEN`
//! run on a pooled server would listen for whoever holds that server next. Instead, a lone
//! `LISTEN ch` / `UNLISTEN ch` / `UNLISTEN *` between transactions is answered by Pake: the
//! client subscribes to the database's [`Listener`], one dedicated connection to the primary
//! (the promoted one after a failover) that runs `LISTEN` for every channel some client
//! listens on and `UNLISTEN` when the last one leaves. Each NotificationResponse it receives
//! is built once and handed to the [`Inbox`] of every subscribed session, which writes it to
//! its client between transactions, as a server delivers notifications only outside a
//! transaction.
//!
//! The client's `LISTEN` is acknowledged only once the listening connection has run it, so a
//! `NOTIFY` sent after the client saw `LISTEN` complete is never missed. If the listening
//! connection is lost, it reconnects and listens again; notifications sent in between are
//! lost, and the subscribed clients are told so with a NoticeResponse. An inbox is bounded in
//! bytes (`general.listen_queue_size`). When one is full, delivery waits for that client (the
//! server holds the backlog meanwhile, as for a slow direct listener); a client whose inbox
//! stays full for 5 s — it does not read, or stays in one transaction while more than that
//! arrives — is disconnected with SQLSTATE 54000 rather than holding memory or the others up.

use super::route::topology::{MonitorLogin, Topology};
use crate::pg::wire;
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio_postgres::AsyncMessage;

/// How long a client's `LISTEN` waits for the listening connection before failing.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait between reconnection attempts of the listening connection.
const RECONNECT: Duration = Duration::from_millis(500);
/// How long delivery waits for a client whose inbox is full before dropping that client.
const STALLED: Duration = Duration::from_secs(5);
/// Most server pids [`Listener::owners`] remembers.
const MAX_OWNERS: usize = 65_536;
/// Longest channel name PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_CHANNEL: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("the listening connection to the primary is not available: {0}")]
    Unavailable(String),
}

/// One session's notifications waiting to be written to its client, bounded in bytes.
#[derive(Debug)]
pub struct Inbox {
    queue: Mutex<(VecDeque<Bytes>, usize)>,
    limit: usize,
    overflowed: AtomicBool,
    /// Notifications are waiting (the session writes them).
    pub wake: Notify,
    /// The session took what was waiting (a full inbox has room again).
    space: Notify,
}

impl Inbox {
    pub fn new(limit: usize) -> Inbox {
        Inbox {
            queue: Mutex::new((VecDeque::new(), 0)),
            limit,
            overflowed: AtomicBool::new(false),
            wake: Notify::new(),
            space: Notify::new(),
        }
    }

    /// Queue `frame` if it fits (an empty inbox takes any one frame); `false` when full.
    fn try_push(&self, frame: &Bytes) -> bool {
        if self.overflowed.load(Ordering::Acquire) {
            return true; // dropped already: nothing more is kept for it
        }
        {
            let mut q = self.queue.lock();
            if q.1 + frame.len() > self.limit && !q.0.is_empty() {
                return false;
            }
            q.1 += frame.len();
            q.0.push_back(frame.clone());
        }
        self.wake.notify_one();
        true
    }

    /// Queue `frame`, waiting up to `grace` for the session to make room; past that the
    /// client is behind for good and is dropped (the session sees it at its next wake-up).
    async fn push(&self, frame: &Bytes, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.try_push(frame) {
            if tokio::time::timeout_at(deadline, self.space.notified())
                .await
                .is_err()
            {
                self.overflowed.store(true, Ordering::Release);
                self.wake.notify_one();
                return;
            }
        }
    }

    /// Move every waiting frame to `out`; `Err(limit)` once the client fell too far behind.
    pub fn drain_into(&self, out: &mut BytesMut) -> Result<(), usize> {
        if self.overflowed.load(Ordering::Acquire) {
            return Err(self.limit);
        }
        {
            let mut q = self.queue.lock();
            for f in q.0.drain(..) {
                out.put_slice(&f);
            }
            q.1 = 0;
        }
        self.space.notify_one();
        Ok(())
    }
}

/// What the listening connection must do: channels and who listens on each.
#[derive(Default)]
struct State {
    channels: HashMap<String, Vec<(u64, Arc<Inbox>)>>,
    /// Channels the current connection listens on.
    listened: std::collections::HashSet<String>,
    /// `LISTEN`s waiting for the connection to have run them.
    waiting: Vec<(String, oneshot::Sender<Result<(), String>>)>,
    /// [`Listener::barrier`]s waiting for a round trip of the connection.
    barriers: Vec<oneshot::Sender<()>>,
    running: bool,
}

/// The listening connection of one database, shared by its sessions.
pub struct Listener {
    database: String,
    login: MonitorLogin,
    topology: Weak<Topology>,
    state: Mutex<State>,
    kick: Notify,
    next_id: AtomicU64,
    metrics: Arc<crate::obs::metrics::Metrics>,
    /// Some client listens: checkouts note which client each server works for.
    active: AtomicBool,
    /// Server backend pid → the pid Pake handed the client that last checked it out, so a
    /// notification names its sender as that client knows itself (`get_server_pid()`).
    owners: Mutex<HashMap<i32, i32>>,
}

impl Listener {
    pub fn new(
        database: &str,
        login: MonitorLogin,
        topology: &Arc<Topology>,
        metrics: Arc<crate::obs::metrics::Metrics>,
    ) -> Arc<Listener> {
        Arc::new(Listener {
            database: database.to_string(),
            login,
            topology: Arc::downgrade(topology),
            state: Mutex::new(State::default()),
            kick: Notify::new(),
            next_id: AtomicU64::new(1),
            metrics,
            active: AtomicBool::new(false),
            owners: Mutex::new(HashMap::new()),
        })
    }

    /// Some client of this database listens (checkouts then call [`Listener::note_server`]).
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// `client_pid` (Pake's) now works on the server with backend pid `server_pid`.
    pub fn note_server(&self, server_pid: i32, client_pid: i32) {
        let mut owners = self.owners.lock();
        if owners.len() >= MAX_OWNERS {
            owners.clear(); // bounded: a server seen again is noted again at its checkout
        }
        owners.insert(server_pid, client_pid);
    }

    /// Resolves once the listening connection has received every notification committed
    /// before the call: a round trip on it (PostgreSQL sends a listener the notifications
    /// signalled to it before its ReadyForQuery), shared by the calls waiting meanwhile.
    /// At once when nothing listens; at most [`LISTEN_TIMEOUT`] when the connection is lost.
    pub async fn barrier(&self) {
        let rx = {
            let mut st = self.state.lock();
            if !st.running || st.listened.is_empty() {
                return;
            }
            let (tx, rx) = oneshot::channel();
            st.barriers.push(tx);
            rx
        };
        self.kick.notify_one();
        let _ = tokio::time::timeout(LISTEN_TIMEOUT, rx).await;
    }

    /// A new subscriber (one per session that listens).
    pub fn subscriber(self: &Arc<Self>, queue_limit: usize) -> Subscriber {
        Subscriber {
            listener: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            inbox: Arc::new(Inbox::new(queue_limit)),
            channels: Vec::new(),
        }
    }

    /// Subscribe `inbox` to `channel`; resolves once the connection listens on it.
    async fn listen(
        self: &Arc<Self>,
        id: u64,
        inbox: &Arc<Inbox>,
        channel: &str,
    ) -> Result<(), NotifyError> {
        self.active.store(true, Ordering::Relaxed);
        let rx = {
            let mut st = self.state.lock();
            let subs = st.channels.entry(channel.to_string()).or_default();
            if !subs.iter().any(|(i, _)| *i == id) {
                subs.push((id, inbox.clone()));
            }
            if st.listened.contains(channel) {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            st.waiting.push((channel.to_string(), tx));
            if !st.running {
                st.running = true;
                tokio::spawn(run(Arc::downgrade(self)));
            }
            rx
        };
        self.kick.notify_one();
        match tokio::time::timeout(LISTEN_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(NotifyError::Unavailable(e)),
            _ => {
                self.unlisten(id, Some(channel));
                Err(NotifyError::Unavailable("timed out".into()))
            }
        }
    }

    fn unlisten(&self, id: u64, channel: Option<&str>) {
        let mut st = self.state.lock();
        st.channels.retain(|ch, subs| {
            if channel.is_none_or(|c| c == ch) {
                subs.retain(|(i, _)| *i != id);
            }
            !subs.is_empty()
        });
        drop(st);
        self.kick.notify_one();
    }

    /// Hand a notification to every session listening on its channel. A full inbox holds
    /// delivery up (the server keeps the backlog meanwhile, as for a slow direct listener)
    /// for at most [`STALLED`]; then that client is dropped and the others go on.
    async fn deliver(&self, n: &tokio_postgres::Notification) {
        let sender = self.owners.lock().get(&n.process_id()).copied();
        let frame = notification_frame(sender.unwrap_or(n.process_id()), n.channel(), n.payload());
        let inboxes: Vec<Arc<Inbox>> = match self.state.lock().channels.get(n.channel()) {
            Some(subs) => subs.iter().map(|(_, i)| i.clone()).collect(),
            None => return,
        };
        for inbox in &inboxes {
            inbox.push(&frame, STALLED).await;
        }
        self.metrics
            .pg_notifications
            .with_label_values(&[&self.database])
            .inc_by(inboxes.len() as u64);
    }

    /// Every subscribed inbox gets `frame` (a notice after the connection was lost).
    fn tell_all(&self, frame: Bytes) {
        let st = self.state.lock();
        let mut told = std::collections::HashSet::new();
        for (id, inbox) in st.channels.values().flatten() {
            if told.insert(*id) {
                inbox.try_push(&frame);
            }
        }
    }

    /// The server to listen on: the promoted replica after a failover, else the primary.
    fn server(&self) -> (String, u16) {
        self.topology
            .upgrade()
            .and_then(|t| t.promoted().map(|r| (r.config.host.clone(), r.config.port)))
            .unwrap_or_else(|| (self.login.primary_host.clone(), self.login.primary_port))
    }
}

/// A session's subscriptions; dropping it unsubscribes every channel.
pub struct Subscriber {
    listener: Arc<Listener>,
    id: u64,
    pub inbox: Arc<Inbox>,
    channels: Vec<String>,
}

impl Subscriber {
    pub async fn listen(&mut self, channel: &str) -> Result<(), NotifyError> {
        self.listener.listen(self.id, &self.inbox, channel).await?;
        if !self.channels.iter().any(|c| c == channel) {
            self.channels.push(channel.to_string());
        }
        Ok(())
    }

    /// `UNLISTEN channel`, or `UNLISTEN *` for `None`.
    pub fn unlisten(&mut self, channel: Option<&str>) {
        self.listener.unlisten(self.id, channel);
        self.channels.retain(|c| channel.is_some_and(|x| x != c));
    }

    pub fn is_listening(&self) -> bool {
        !self.channels.is_empty()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if !self.channels.is_empty() {
            self.listener.unlisten(self.id, None);
        }
    }
}

/// `NotificationResponse`: pid, channel, payload.
fn notification_frame(pid: i32, channel: &str, payload: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(channel.len() + payload.len() + 11);
    b.put_u8(b'A');
    b.put_i32((4 + 4 + channel.len() + 1 + payload.len() + 1) as i32);
    b.put_i32(pid);
    b.put_slice(channel.as_bytes());
    b.put_u8(0);
    b.put_slice(payload.as_bytes());
    b.put_u8(0);
    b.freeze()
}

/// A channel name as `LISTEN` takes it: folded like an identifier, at most 63 bytes.
pub fn quote_channel(channel: &str) -> String {
    let c: String = channel.chars().take(MAX_CHANNEL).collect();
    format!("\"{}\"", c.replace('"', "\"\""))
}

/// The listening connection's task: connect, bring `LISTEN`s in line with the
/// subscriptions, deliver notifications; reconnect when the connection is lost. Ends when
/// no channel is wanted (the next `LISTEN` starts it again) or the listener is gone.
async fn run(weak: Weak<Listener>) {
    loop {
        let Some(l) = weak.upgrade() else { return };
        if !wanted(&l) {
            return;
        }
        let result = connection(&l).await;
        let was_listening = lost(&l, &result);
        if result.is_ok() {
            continue;
        }
        if was_listening {
            let mut notice = BytesMut::new();
            wire::backend::notice_response(
                &mut notice,
                &wire::backend::Fields {
                    severity: "WARNING",
                    code: "08006",
                    message: "Pake's listening connection to the primary was lost: \
                              notifications sent until it is back are missed",
                    detail: None,
                    hint: None,
                },
            );
            l.tell_all(notice.freeze());
        }
        drop(l);
        tokio::time::sleep(RECONNECT).await;
    }
}

/// The connection ended: nothing is listened on any more; waiting `LISTEN`s fail. Returns
/// whether it was listening on something (its subscribers may have missed notifications).
fn lost(l: &Listener, result: &Result<(), String>) -> bool {
    let mut st = l.state.lock();
    let was = !st.listened.is_empty();
    st.listened.clear();
    st.barriers.clear(); // nothing more arrives on it: the waiting servers may go
    if let Err(e) = result {
        tracing::warn!(database = %l.database, error = %e, "listening connection lost");
        for (_, tx) in st.waiting.drain(..) {
            let _ = tx.send(Err(e.clone()));
        }
    }
    was
}

/// Some channel has a subscriber or a `LISTEN` is waiting; else mark the task stopped.
fn wanted(l: &Listener) -> bool {
    let mut st = l.state.lock();
    let any = !st.channels.is_empty() || !st.waiting.is_empty();
    if !any {
        st.running = false;
        st.barriers.clear();
        l.active.store(false, Ordering::Relaxed);
        l.owners.lock().clear();
    }
    any
}

/// One listening connection, until it fails (`Err`) or nothing is wanted (`Ok`).
async fn connection(l: &Arc<Listener>) -> Result<(), String> {
    let (host, port) = l.server();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&host)
        .port(port)
        .user(&l.login.user)
        .dbname(&l.login.dbname)
        .application_name("pake-listen")
        .connect_timeout(LISTEN_TIMEOUT);
    if let Some(p) = &l.login.password {
        cfg.password(p);
    }
    let (client, mut conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let weak = Arc::downgrade(l);
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => match weak.upgrade() {
                    Some(l) => l.deliver(&n).await,
                    None => return,
                },
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    let result = sync_loop(l, &client).await;
    driver.abort();
    result
}

/// Run `LISTEN`/`UNLISTEN` whenever the subscriptions change.
async fn sync_loop(l: &Arc<Listener>, client: &tokio_postgres::Client) -> Result<(), String> {
    loop {
        let (add, remove) = {
            let mut st = l.state.lock();
            let add: Vec<String> = st
                .channels
                .keys()
                .filter(|c| !st.listened.contains(*c))
                .cloned()
                .collect();
            let remove: Vec<String> = st
                .listened
                .iter()
                .filter(|c| !st.channels.contains_key(*c))
                .cloned()
                .collect();
            // Not listened from now on: a `LISTEN` read while the `UNLISTEN` runs waits for
            // the next round, which listens again, instead of being answered at once.
            for c in &remove {
                st.listened.remove(c);
            }
            (add, remove)
        };
        let mut sql = String::new();
        for c in &add {
            sql.push_str(&format!("LISTEN {};", quote_channel(c)));
        }
        for c in &remove {
            sql.push_str(&format!("UNLISTEN {};", quote_channel(c)));
        }
        let barriers = std::mem::take(&mut l.state.lock().barriers);
        if sql.is_empty() && !barriers.is_empty() {
            sql.push(';'); // an empty query: its reply comes after the notifications
        }
        if !sql.is_empty() {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| e.to_string())?;
        }
        // the connection's task delivered every notification that arrived before the reply
        for tx in barriers {
            let _ = tx.send(());
        }
        {
            let mut st = l.state.lock();
            st.listened.extend(add);
            let waiting = std::mem::take(&mut st.waiting);
            let (done, rest): (Vec<_>, Vec<_>) = waiting
                .into_iter()
                .partition(|(c, _)| st.listened.contains(c));
            st.waiting = rest;
            for (_, tx) in done {
                let _ = tx.send(Ok(()));
            }
            l.metrics
                .pg_listen_channels
                .with_label_values(&[&l.database])
                .set(st.listened.len() as i64);
            if st.channels.is_empty() && st.waiting.is_empty() && st.listened.is_empty() {
                // [`run`] decides, under the lock, whether the task ends
                return Ok(());
            }
        }
        tokio::select! {
            _ = l.kick.notified() => {}
            _ = client_closed(client) => return Err("connection closed".into()),
        }
    }
}

/// Resolves when the connection is gone (checked every second while idle).
async fn client_closed(client: &tokio_postgres::Client) {
    while !client.is_closed() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_frame_layout() {
        let f = notification_frame(42, "jobs", "hi");
        assert_eq!(f[0], b'A');
        assert_eq!(
            i32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize,
            f.len() - 1
        );
        assert_eq!(&f[5..9], &42i32.to_be_bytes());
        assert_eq!(&f[9..], b"jobs\0hi\0");
    }

    #[tokio::test]
    async fn inbox_is_bounded_in_bytes_and_waits_before_dropping() {
        const STALLED: Duration = Duration::from_millis(50);
        let inbox = Arc::new(Inbox::new(30));
        let f = notification_frame(1, "a", "0123456789"); // 22 bytes
        inbox.push(&f, STALLED).await;
        assert!(!inbox.try_push(&f), "a second frame does not fit");
        // the session drains while delivery waits: nothing is lost
        let waiting = {
            let (inbox, f) = (inbox.clone(), f.clone());
            tokio::spawn(async move { inbox.push(&f, STALLED).await })
        };
        tokio::task::yield_now().await;
        let mut out = BytesMut::new();
        assert!(inbox.drain_into(&mut out).is_ok());
        let _ = waiting.await;
        assert!(inbox.drain_into(&mut out).is_ok());
        assert_eq!(out.len(), 44);
        // nobody drains: after the grace period the client is dropped
        inbox.push(&f, STALLED).await;
        inbox.push(&f, STALLED).await;
        assert_eq!(inbox.drain_into(&mut out), Err(30));
    }

    #[test]
    fn channel_quoting() {
        assert_eq!(quote_channel("jobs"), "\"jobs\"");
        assert_eq!(quote_channel("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_channel(&"x".repeat(100)).len(), 65);
    }
}
