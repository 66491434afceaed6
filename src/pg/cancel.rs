//! Query cancellation across the pool.
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

/// One client's key and current target.
#[derive(Debug)]
pub struct CancelSlot {
    pub pid: i32,
    pub secret: i32,
    target: Mutex<Option<CancelTarget>>,
}

impl CancelSlot {
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
    pub fn register(&self) -> Arc<CancelSlot> {
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
                target: Mutex::new(None),
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

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
        let a = reg.register();
        let b = reg.register();
        assert_ne!(a.pid, b.pid);
        assert!(a.pid > 0);
        assert!(!reg.cancel(a.pid, a.secret.wrapping_add(1)).await);
        assert!(!reg.cancel(a.pid, a.secret).await, "no target set");
        reg.unregister(a.pid);
        assert_eq!(reg.len(), 1);
    }
}
