//! Query cancellation across the pool, and the registry of live clients.
//!
//! Each client gets a BackendKeyData minted by Pake (its own pid and secret), never a
//! server's: servers change under a client in transaction mode. The session records which
//! server runs its request while it runs ([`CancelSlot::attach`]); a CancelRequest naming
//! the client's key is forwarded to that server only then, so a late cancel cannot hit the
//! next client's query. It is also sent only while the server owes the client replies, and
//! dropped when the request it came for finished while Pake dialed the server
//! ([`CancelSlot::running`]): the client's next statement is not canceled by it either.

use super::server::BackendKey;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Where a client's running request can be canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: SocketAddr,
    pub key: BackendKey,
}

/// Who a client is, for `SHOW CLIENTS`.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub addr: SocketAddr,
    pub local_addr: SocketAddr,
    pub application_name: String,
    pub connected_at: std::time::SystemTime,
}

/// What a client is doing, as `SHOW CLIENTS` reports it.
pub mod state {
    pub const IDLE: u8 = 0;
    pub const WAITING: u8 = 1;
    pub const ACTIVE: u8 = 2;

    pub fn name(s: u8) -> &'static str {
        match s {
            WAITING => "waiting",
            ACTIVE => "active",
            _ => "idle",
        }
    }
}

/// The server a client's requests run on now, and whether a cancel went to it.
#[derive(Debug, Default)]
struct Attached {
    server: Option<CancelTarget>,
    /// A CancelRequest was sent to `server` while attached: the postmaster signals the
    /// backend asynchronously, so the signal may land after the server went back to the
    /// pool and cancel another client's statement. Such a server is never reused.
    canceled: bool,
}

/// One client's key, current target and state.
#[derive(Debug)]
pub struct CancelSlot {
    pub pid: i32,
    pub secret: i32,
    pub info: ClientInfo,
    target: Mutex<Attached>,
    state: std::sync::atomic::AtomicU8,
    /// Milliseconds since the UNIX epoch of the last request or state change.
    since_ms: std::sync::atomic::AtomicU64,
    /// Why the client is pinned to its server (transaction mode), for SHOW CLIENTS.
    pinned: Mutex<Option<Box<str>>>,
    /// Another client ran `pg_terminate_backend(pid)` on this one.
    terminated: std::sync::atomic::AtomicBool,
    /// Wakes the client's session: it was terminated, or the proxy's phase changed. One
    /// wake-up for both keeps a single waiter in every idle client's task.
    attention: tokio::sync::Notify,
    /// A CancelRequest arrived while the client's request waited for a server.
    wait_canceled: std::sync::atomic::AtomicBool,
    wait_cancel: tokio::sync::Notify,
    /// Requests the session has had running on a server, times two, plus one while one
    /// runs (the server owes replies); written only by the session.
    running: std::sync::atomic::AtomicU64,
}

impl CancelSlot {
    /// The session publishes whether its server owes it replies (it has a request running),
    /// before it next waits: set before the request's bytes go out, cleared before the
    /// client can see the reply that ends it.
    pub fn set_running(&self, running: bool) {
        use std::sync::atomic::Ordering::{Relaxed, Release};
        let now = self.running.load(Relaxed);
        if (now & 1 == 1) == running {
            return;
        }
        let next = if running { (now | 1) + 2 } else { now & !1 };
        self.running.store(next, Release);
    }

    /// Which request runs now (`None`: none); a later request has a different value.
    pub fn running(&self) -> Option<u64> {
        let now = self.running.load(std::sync::atomic::Ordering::Acquire);
        (now & 1 == 1).then_some(now)
    }

    /// Record what the client does now.
    pub fn set_state(&self, s: u8) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.state.swap(s, Relaxed) != s {
            self.since_ms.store(unix_ms(), Relaxed);
        }
    }

    pub fn state(&self) -> (u8, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.state.load(Relaxed), self.since_ms.load(Relaxed))
    }

    /// Ask the session to close (it gets 57P01); remembered until it next waits.
    pub fn terminate(&self) {
        self.terminated
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.attention.notify_one();
    }

    /// [`CancelSlot::terminate`] was called.
    pub fn is_terminated(&self) -> bool {
        self.terminated.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Completes once the client was terminated or woken for a phase change (a wake-up
    /// while nobody waits is kept for the next wait).
    pub fn attention(&self) -> tokio::sync::futures::Notified<'_> {
        self.attention.notified()
    }

    pub fn set_pinned(&self, why: Option<Box<str>>) {
        *self.pinned.lock() = why;
    }

    pub fn pinned(&self) -> Option<Box<str>> {
        self.pinned.lock().clone()
    }

    /// The client's request starts waiting for a server: a cancel from now on ends the
    /// wait ([`CancelSlot::wait_canceled`]); one from before is forgotten.
    pub fn start_waiting(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.wait_canceled.store(false, SeqCst);
        self.set_state(state::WAITING);
    }

    /// Completes when a CancelRequest for this client arrives while its request waits for
    /// a server (a server cancels a running statement; through Pake the statement has not
    /// started: the wait ends instead, with the same 57014).
    pub async fn wait_canceled(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let notified = self.wait_cancel.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.wait_canceled.swap(false, SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// A cancel for a request that waits for a server; `false` when none waits.
    fn cancel_wait(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        if self.state().0 != state::WAITING {
            return false;
        }
        self.wait_canceled.store(true, SeqCst);
        self.wait_cancel.notify_waiters();
        true
    }

    /// The client's requests run on `target` from now on.
    pub fn attach(&self, target: CancelTarget) {
        *self.target.lock() = Attached {
            server: Some(target),
            canceled: false,
        };
    }

    /// The server leaves the client; `true` when a cancel was sent to it meanwhile (the
    /// server must then be closed, not reused).
    pub fn detach(&self) -> bool {
        std::mem::take(&mut *self.target.lock()).canceled
    }

    pub fn target(&self) -> Option<CancelTarget> {
        self.target.lock().server
    }

    /// The server to cancel on, marked canceled in the same step (so a detach either
    /// sees the mark or happened before, and no cancel is sent).
    fn begin_cancel(&self) -> Option<CancelTarget> {
        let mut t = self.target.lock();
        t.canceled |= t.server.is_some();
        t.server
    }
}

const SHARDS: usize = 8;

/// With peering on, a pid's bits 23..31 name the instance that minted it (bit 31 stays 0:
/// pids are positive, like PostgreSQL's), the 23 bits below are random.
const PEER_SHIFT: u32 = 23;

/// Most servers [`CancelRegistry::hold`] remembers.
const MAX_HELD: usize = 65_536;

/// All live clients' keys.
pub struct CancelRegistry {
    shards: Vec<Mutex<HashMap<i32, Arc<CancelSlot>>>>,
    /// Servers a client holds for its whole connection (session mode): (server address,
    /// backend pid) → the pid Pake handed the client that held it last, so that a
    /// notification names its sender as the sender knows itself, also when it arrives after
    /// the sender left (psycopg's test_notify: NOTIFY, then close at once). Kept after the
    /// client leaves, replaced by the server's next holder; bounded by [`MAX_HELD`].
    held: Mutex<HashMap<(SocketAddr, i32), i32>>,
    /// This instance's peer id (0: peering off) and where the other instances listen.
    peer_id: u8,
    peers: HashMap<u8, String>,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        CancelRegistry::new(&crate::config::peering::Peering::default())
    }
}

/// What became of a CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canceled {
    /// Sent to the server running the client's request.
    Sent,
    /// Ended the client's wait for a server (nothing ran yet, nothing to send).
    EndedWait,
    /// The key belongs to another instance: passed on to it.
    Forwarded,
    /// The request it was for ended while Pake connected to its server: not sent.
    Finished,
    /// Unknown key, wrong secret, nothing running, or the server could not be reached.
    Ignored,
}

impl Canceled {
    /// The `outcome` label of `pake_pg_cancel_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            Canceled::Sent => "sent",
            Canceled::EndedWait => "ended_wait",
            Canceled::Forwarded => "forwarded",
            Canceled::Finished => "finished",
            Canceled::Ignored => "ignored",
        }
    }
}

impl CancelRegistry {
    pub fn new(peering: &crate::config::peering::Peering) -> Self {
        CancelRegistry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            held: Mutex::new(HashMap::new()),
            peer_id: peering.peer_id,
            peers: peering
                .peers
                .iter()
                .map(|p| (p.id, p.address.clone()))
                .collect(),
        }
    }

    fn shard(&self, pid: i32) -> &Mutex<HashMap<i32, Arc<CancelSlot>>> {
        &self.shards[(pid as u32 as usize) % SHARDS]
    }

    /// A random positive pid, carrying this instance's peer id when peering is on.
    fn mint_pid(&self) -> i32 {
        let random = rand::random::<u32>() >> 1;
        match self.peer_id {
            0 => random as i32,
            id => ((u32::from(id) << PEER_SHIFT) | (random & ((1 << PEER_SHIFT) - 1))) as i32,
        }
    }

    /// The peer that minted `pid`, when it is not this instance.
    fn owner_elsewhere(&self, pid: i32) -> Option<u8> {
        let owner = ((pid as u32) >> PEER_SHIFT) as u8;
        (self.peer_id != 0 && owner != self.peer_id).then_some(owner)
    }

    /// `client_pid` holds the server `target` (until another client does).
    pub fn hold(&self, target: &CancelTarget, client_pid: i32) {
        let mut held = self.held.lock();
        if held.len() >= MAX_HELD && !held.contains_key(&(target.addr, target.key.pid)) {
            held.clear(); // bounded: a server held again is noted again
        }
        held.insert((target.addr, target.key.pid), client_pid);
    }

    /// The client holding the backend `pid` of the server at `addr`, if one does.
    pub fn holder(&self, addr: SocketAddr, pid: i32) -> Option<i32> {
        self.held.lock().get(&(addr, pid)).copied()
    }

    /// Mint a fresh key for a new client.
    pub fn register(&self, info: ClientInfo) -> Arc<CancelSlot> {
        loop {
            let pid = self.mint_pid();
            if pid & ((1 << PEER_SHIFT) - 1) == 0 {
                continue;
            }
            let mut shard = self.shard(pid).lock();
            if shard.contains_key(&pid) {
                continue;
            }
            let slot = Arc::new(CancelSlot {
                pid,
                secret: rand::random(),
                info,
                target: Mutex::new(Attached::default()),
                state: std::sync::atomic::AtomicU8::new(state::IDLE),
                since_ms: std::sync::atomic::AtomicU64::new(unix_ms()),
                pinned: Mutex::new(None),
                terminated: std::sync::atomic::AtomicBool::new(false),
                attention: tokio::sync::Notify::new(),
                wait_canceled: std::sync::atomic::AtomicBool::new(false),
                wait_cancel: tokio::sync::Notify::new(),
                running: std::sync::atomic::AtomicU64::new(0),
            });
            shard.insert(pid, slot.clone());
            return slot;
        }
    }

    pub fn unregister(&self, pid: i32) {
        self.shard(pid).lock().remove(&pid);
    }

    /// Handle a CancelRequest: send it to the server if the key is right and a request is
    /// running, or pass it to the peer instance whose key it is.
    pub async fn cancel(&self, pid: i32, secret: i32) -> Canceled {
        if let Some(owner) = self.owner_elsewhere(pid) {
            return self.forward(owner, BackendKey { pid, secret }).await;
        }
        let slot = self.shard(pid).lock().get(&pid).cloned();
        let Some(slot) = slot.filter(|s| s.secret == secret) else {
            tracing::debug!(pid, "cancel request with an unknown key ignored");
            return Canceled::Ignored;
        };
        // a server ignores a cancel while it waits for a command, but the postmaster
        // signals it asynchronously: sent to a server with nothing running, or arriving
        // after the request it came for ended, the signal can land on the client's next
        // statement (asyncpg cancels after the CopyFail of a failed COPY)
        let request = slot.running();
        let Some(target) = request.and_then(|_| slot.begin_cancel()) else {
            if slot.cancel_wait() {
                tracing::debug!(pid, "cancel request ends the wait for a server");
                return Canceled::EndedWait;
            }
            tracing::debug!(pid, "cancel request while no query runs: ignored");
            return Canceled::Ignored;
        };
        match send_cancel_while(target, || slot.running() == request).await {
            Ok(true) => Canceled::Sent,
            Ok(false) => {
                tracing::debug!(pid, "the request ended before its cancel went out: dropped");
                Canceled::Finished
            }
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot forward cancel request");
                Canceled::Ignored
            }
        }
    }

    /// Pass a cancel for another instance's key on to it, as the client sent it. The peer
    /// handles it as its own (the key names it), so a cancel never travels twice.
    async fn forward(&self, owner: u8, key: BackendKey) -> Canceled {
        let Some(address) = self.peers.get(&owner) else {
            tracing::debug!(pid = key.pid, owner, "cancel for an unknown peer ignored");
            return Canceled::Ignored;
        };
        let addr = match tokio::net::lookup_host(address.as_str()).await {
            Ok(mut addrs) => addrs.next(),
            Err(e) => {
                tracing::warn!(peer = owner, %address, error = %e, "cannot resolve peer");
                None
            }
        };
        let Some(addr) = addr else {
            return Canceled::Ignored;
        };
        match send_cancel(CancelTarget { addr, key }).await {
            Ok(()) => {
                tracing::debug!(pid = key.pid, peer = owner, "cancel forwarded to peer");
                Canceled::Forwarded
            }
            Err(e) => {
                tracing::warn!(peer = owner, %address, error = %e, "cannot forward cancel to peer");
                Canceled::Ignored
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Wake every client's session (the proxy's phase changed: it looks again).
    pub fn wake_all(&self) {
        for shard in &self.shards {
            for slot in shard.lock().values() {
                slot.attention.notify_one();
            }
        }
    }

    /// The live client Pake gave `pid` (in its BackendKeyData), if any.
    pub fn get(&self, pid: i32) -> Option<Arc<CancelSlot>> {
        self.shard(pid).lock().get(&pid).cloned()
    }

    /// Every live client (for `SHOW CLIENTS`), ordered by connection id.
    pub fn clients(&self) -> Vec<Arc<CancelSlot>> {
        let mut all: Vec<_> = self
            .shards
            .iter()
            .flat_map(|s| s.lock().values().cloned().collect::<Vec<_>>())
            .collect();
        all.sort_by_key(|s| s.info.id);
        all
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Milliseconds since the UNIX epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Send a CancelRequest for `target` on a new connection to its server.
pub async fn send_cancel(target: CancelTarget) -> std::io::Result<()> {
    send_cancel_while(target, || true).await.map(|_| ())
}

/// [`send_cancel`], once connected, only if `still()` holds; `Ok(false)` when it did not.
async fn send_cancel_while(
    target: CancelTarget,
    still: impl Fn() -> bool,
) -> std::io::Result<bool> {
    #[cfg(test)]
    if let Some(sent) =
        super::memory::cancel_at(target.addr, target.key.pid, target.key.secret, &still)
    {
        return sent;
    }
    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(target.addr),
    )
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let mut buf = bytes::BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(
        target.key.pid,
        target.key.secret,
        &mut buf,
    );
    if !still() {
        return Ok(false);
    }
    stream.write_all(&buf).await?;
    stream.shutdown().await?;
    // the postmaster closes the connection once it has signalled the backend: only then
    // may the client hear that its cancel went out (drivers wait for that close, as
    // asyncpg does, before their next statement, which an unsent signal could cancel)
    let mut sink = [0u8; 64];
    let closed = async {
        while matches!(
            tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await,
            Ok(n) if n > 0
        ) {}
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), closed).await;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ClientInfo {
        ClientInfo {
            id: 1,
            user: "u".into(),
            database: "d".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            local_addr: "127.0.0.1:2".parse().unwrap(),
            application_name: String::new(),
            connected_at: std::time::SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn wrong_secret_or_idle_client_sends_nothing() {
        let reg = CancelRegistry::default();
        let info = info();
        let a = reg.register(info.clone());
        let b = reg.register(info);
        assert_ne!(a.pid, b.pid);
        assert!(a.pid > 0);
        assert_eq!(
            reg.cancel(a.pid, a.secret.wrapping_add(1)).await,
            Canceled::Ignored
        );
        assert_eq!(
            reg.cancel(a.pid, a.secret).await,
            Canceled::Ignored,
            "no target set"
        );
        reg.unregister(a.pid);
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.clients().len(), 1);
        b.set_state(state::ACTIVE);
        assert_eq!(b.state().0, state::ACTIVE);
    }

    #[tokio::test]
    async fn a_cancel_goes_out_only_while_a_request_runs() {
        let reg = CancelRegistry::default();
        let slot = reg.register(info());
        let nowhere = CancelTarget {
            addr: "127.0.0.1:1".parse().unwrap(),
            key: BackendKey { pid: 9, secret: 1 },
        };
        slot.attach(nowhere);
        assert_eq!(slot.running(), None);
        assert_eq!(
            reg.cancel(slot.pid, slot.secret).await,
            Canceled::Ignored,
            "idle in a transaction: nothing to cancel"
        );
        assert!(!slot.detach(), "and the server is not marked canceled");
        slot.set_running(true);
        let first = slot.running();
        assert!(first.is_some());
        slot.set_running(true);
        assert_eq!(slot.running(), first, "the same request");
        slot.set_running(false);
        assert_eq!(slot.running(), None);
        slot.set_running(true);
        assert!(
            slot.running().is_some() && slot.running() != first,
            "the next one"
        );
    }

    #[tokio::test]
    async fn a_cancel_whose_request_ended_is_not_written() {
        /// What a postmaster at `listener` receives on its next connection.
        async fn received(listener: &tokio::net::TcpListener) -> Vec<u8> {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut s, &mut got)
                .await
                .unwrap();
            got
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = CancelTarget {
            addr: listener.local_addr().unwrap(),
            key: BackendKey { pid: 9, secret: 1 },
        };
        let (sent, got) = tokio::join!(send_cancel_while(target, || false), received(&listener));
        assert!(!sent.unwrap());
        assert!(got.is_empty(), "nothing reached the postmaster");
        let (sent, got) = tokio::join!(send_cancel_while(target, || true), received(&listener));
        assert!(sent.unwrap());
        assert_eq!(got.len(), 16, "a CancelRequest");
    }

    /// A cancel counts as sent once the postmaster closed the connection (it has signalled
    /// the backend by then), not when the request was written.
    #[tokio::test]
    async fn a_cancel_is_done_when_the_postmaster_closes() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = CancelTarget {
            addr: listener.local_addr().unwrap(),
            key: BackendKey { pid: 9, secret: 1 },
        };
        let signalled = Arc::new(AtomicBool::new(false));
        let postmaster = {
            let signalled = signalled.clone();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut got = [0u8; 16];
                tokio::io::AsyncReadExt::read_exact(&mut s, &mut got)
                    .await
                    .unwrap();
                // the signal takes its time; the connection closes after it
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                signalled.store(true, Ordering::SeqCst);
            })
        };
        send_cancel(target).await.unwrap();
        assert!(
            signalled.load(Ordering::SeqCst),
            "returned before the postmaster was done"
        );
        postmaster.await.unwrap();
    }

    #[test]
    fn a_detach_after_a_cancel_says_so_once() {
        let slot = CancelRegistry::default().register(info());
        let target = CancelTarget {
            addr: "127.0.0.1:5432".parse().unwrap(),
            key: BackendKey { pid: 9, secret: 1 },
        };
        assert_eq!(
            slot.begin_cancel(),
            None,
            "nothing attached: nothing to cancel"
        );
        slot.attach(target);
        assert!(!slot.detach(), "no cancel");
        slot.attach(target);
        assert_eq!(slot.begin_cancel(), Some(target));
        assert!(slot.detach(), "the cancel is remembered");
        assert_eq!(slot.target(), None);
        slot.attach(target);
        assert!(!slot.detach(), "and forgotten with the server");
    }

    #[tokio::test]
    async fn peer_keys_carry_the_peer_id_and_foreign_cancels_are_forwarded() {
        use crate::config::peering::{Peer, Peering};
        use tokio::io::AsyncReadExt;
        let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = peer.local_addr().unwrap().to_string();
        let reg = CancelRegistry::new(&Peering {
            peer_id: 5,
            peers: vec![Peer { id: 7, address }],
        });
        let info = info();
        for _ in 0..100 {
            let slot = reg.register(info.clone());
            assert!(slot.pid > 0);
            assert_eq!(slot.pid as u32 >> PEER_SHIFT, 5, "pid {:#x}", slot.pid);
        }
        // peer 7's key: passed on as the client sent it
        let foreign = (7 << PEER_SHIFT) | 0x1234;
        let received = tokio::spawn(async move {
            let (mut s, _) = peer.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        assert_eq!(reg.cancel(foreign, 99).await, Canceled::Forwarded);
        let mut want = bytes::BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(foreign, 99, &mut want);
        assert_eq!(received.await.unwrap(), want.to_vec());
        // a peer nobody configured: ignored, never sent anywhere
        assert_eq!(
            reg.cancel((9 << PEER_SHIFT) | 1, 1).await,
            Canceled::Ignored
        );
        // without peering every pid is this instance's own
        let plain = CancelRegistry::default();
        assert_eq!(plain.cancel(foreign, 99).await, Canceled::Ignored);
    }
}
