//! Query cancellation across the pool, and the registry of live clients.
//!
//! Each client gets a BackendKeyData minted by Pake (its own pid and secret), never a
//! server's: servers change under a client in transaction mode. The session records which
//! server runs its request while it runs ([`CancelSlot::set`]); a CancelRequest naming the
//! client's key is forwarded to that server only then, so a late cancel cannot hit the next
//! client's query.

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

/// One client's key, current target and state.
#[derive(Debug)]
pub struct CancelSlot {
    pub pid: i32,
    pub secret: i32,
    pub info: ClientInfo,
    target: Mutex<Option<CancelTarget>>,
    state: std::sync::atomic::AtomicU8,
    /// Milliseconds since the UNIX epoch of the last request or state change.
    since_ms: std::sync::atomic::AtomicU64,
}

impl CancelSlot {
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

    pub fn set(&self, target: Option<CancelTarget>) {
        *self.target.lock() = target;
    }

    pub fn target(&self) -> Option<CancelTarget> {
        *self.target.lock()
    }
}

const SHARDS: usize = 8;

/// All live clients' keys.
pub struct CancelRegistry {
    shards: Vec<Mutex<HashMap<i32, Arc<CancelSlot>>>>,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        CancelRegistry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl CancelRegistry {
    fn shard(&self, pid: i32) -> &Mutex<HashMap<i32, Arc<CancelSlot>>> {
        &self.shards[(pid as u32 as usize) % SHARDS]
    }

    /// Mint a fresh key for a new client.
    pub fn register(&self, info: ClientInfo) -> Arc<CancelSlot> {
        loop {
            // positive pids, like PostgreSQL's
            let pid = (rand::random::<u32>() >> 1) as i32;
            if pid == 0 {
                continue;
            }
            let mut shard = self.shard(pid).lock();
            if shard.contains_key(&pid) {
                continue;
            }
            let slot = Arc::new(CancelSlot {
                pid,
                secret: rand::random(),
                info: info.clone(),
                target: Mutex::new(None),
                state: std::sync::atomic::AtomicU8::new(state::IDLE),
                since_ms: std::sync::atomic::AtomicU64::new(unix_ms()),
            });
            shard.insert(pid, slot.clone());
            return slot;
        }
    }

    pub fn unregister(&self, pid: i32) {
        self.shard(pid).lock().remove(&pid);
    }

    /// Handle a CancelRequest: forward it if the key is right and a request is running.
    /// Returns whether a cancel was sent to a server.
    pub async fn cancel(&self, pid: i32, secret: i32) -> bool {
        let slot = self.shard(pid).lock().get(&pid).cloned();
        let Some(slot) = slot.filter(|s| s.secret == secret) else {
            tracing::debug!(pid, "cancel request with an unknown key ignored");
            return false;
        };
        let Some(target) = slot.target() else {
            tracing::debug!(pid, "cancel request while no query runs: ignored");
            return false;
        };
        match send_cancel(target).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot forward cancel request");
                false
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
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
    stream.write_all(&buf).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wrong_secret_or_idle_client_sends_nothing() {
        let reg = CancelRegistry::default();
        let info = ClientInfo {
            id: 1,
            user: "u".into(),
            database: "d".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            local_addr: "127.0.0.1:2".parse().unwrap(),
            application_name: String::new(),
            connected_at: std::time::SystemTime::now(),
        };
        let a = reg.register(info.clone());
        let b = reg.register(info);
        assert_ne!(a.pid, b.pid);
        assert!(a.pid > 0);
        assert!(!reg.cancel(a.pid, a.secret.wrapping_add(1)).await);
        assert!(!reg.cancel(a.pid, a.secret).await, "no target set");
        reg.unregister(a.pid);
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.clients().len(), 1);
        b.set_state(state::ACTIVE);
        assert_eq!(b.state().0, state::ACTIVE);
    }
}
