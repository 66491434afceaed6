//! The Redis side's memory budget: what one client may hold and what all clients together
//! may hold, counted in bytes.
//!
//! Each client has two [`Meter`]s: one for its *requests* (bytes read and not yet
//! dispatched: a partial command, or a pipeline waiting behind backpressure) and one for its
//! *replies* (finished replies waiting for a slow reader, and the parts of a fan-out — a
//! cluster MGET/MSET/DEL split — being merged). A meter refuses past its per-client limit,
//! and past the process-wide [`Budget`] shared by every client. The first
//! [`FREE_PER_CLIENT`] bytes of each meter are not charged to the process budget: an
//! ordinary client (small commands, small replies) never touches the shared counter, so it
//! costs no contended atomic and is never refused because of someone else's spike; with
//! `max_clients` the uncharged part is bounded too (`max_clients × 2 × FREE_PER_CLIENT`).
//!
//! A [`Lease`] holds bytes of a meter and gives them back when dropped, so an early return
//! or a cancelled future can never leak budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes of each meter a client may use without charging the process budget.
pub const FREE_PER_CLIENT: usize = 16 * 1024;

/// Which of a client's meters refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Request,
    Reply,
}

/// Why bytes were refused: the limit that would have been passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Over {
    #[error("over redis.{} ({limit} bytes for one client)", what.key())]
    Client { what: What, limit: usize },
    #[error("over redis.clients_max_memory ({limit} bytes for all Redis clients together)")]
    Process { limit: usize },
}

impl What {
    /// The config key of this meter's per-client limit.
    pub fn key(self) -> &'static str {
        match self {
            What::Request => "client_max_request_bytes",
            What::Reply => "client_max_reply_bytes",
        }
    }
}

/// The process-wide budget every client's meters charge.
pub use crate::limits::MemoryBudget as Budget;

/// One client's meter of one kind, shared by the session and the futures it starts.
#[derive(Debug, Clone)]
pub struct Meter {
    inner: Arc<MeterInner>,
}

#[derive(Debug)]
struct MeterInner {
    what: What,
    limit: usize,
    used: AtomicUsize,
    process: Arc<Budget>,
    /// Refusals by this client's own limit, and by the process budget.
    refused: Option<[prometheus::IntCounter; 2]>,
}

/// The part of `x` charged to the process budget.
fn charged(x: usize) -> usize {
    x.saturating_sub(FREE_PER_CLIENT)
}

impl Meter {
    pub fn new(what: What, limit: usize, process: Arc<Budget>) -> Meter {
        Meter {
            inner: Arc::new(MeterInner {
                what,
                limit,
                used: AtomicUsize::new(0),
                process,
                refused: None,
            }),
        }
    }

    /// Count refusals in `[by the client's limit, by the process budget]`.
    pub fn counted(self, refused: [prometheus::IntCounter; 2]) -> Meter {
        Meter {
            inner: Arc::new(MeterInner {
                what: self.inner.what,
                limit: self.inner.limit,
                used: AtomicUsize::new(0),
                process: self.inner.process.clone(),
                refused: Some(refused),
            }),
        }
    }

    fn refuse(&self, over: Over) -> Result<(), Over> {
        if let Some(c) = &self.inner.refused {
            c[usize::from(matches!(over, Over::Process { .. }))].inc();
        }
        Err(over)
    }

    /// An empty lease on this meter.
    pub fn lease(&self) -> Lease {
        Lease {
            meter: self.clone(),
            bytes: 0,
        }
    }

    /// Bytes this client holds on this meter.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    fn add(&self, n: usize, force: bool) -> Result<(), Over> {
        let m = &self.inner;
        let before = m.used.fetch_add(n, Ordering::AcqRel);
        let after = before.saturating_add(n);
        if after > m.limit && !force {
            m.used.fetch_sub(n, Ordering::AcqRel);
            return self.refuse(Over::Client {
                what: m.what,
                limit: m.limit,
            });
        }
        let extra = charged(after) - charged(before);
        if extra > 0 && !m.process.try_add(extra) {
            if !force {
                m.used.fetch_sub(n, Ordering::AcqRel);
                return self.refuse(Over::Process {
                    limit: m.process.limit(),
                });
            }
            // the bytes are already held: count them even past the limit
            m.process.force_add(extra);
        }
        Ok(())
    }

    fn sub(&self, n: usize) {
        let m = &self.inner;
        let before = m.used.fetch_sub(n, Ordering::AcqRel);
        let less = charged(before) - charged(before - n);
        if less > 0 {
            m.process.sub(less);
        }
    }
}

/// Bytes held on a meter; given back on drop.
#[derive(Debug)]
pub struct Lease {
    meter: Meter,
    bytes: usize,
}

impl Lease {
    /// Hold `n` bytes from now on (more or fewer than before); refused past a limit, the
    /// lease then keeps what it held.
    pub fn set(&mut self, n: usize) -> Result<(), Over> {
        self.resize(n, false)
    }

    /// Hold `n` bytes whatever the limits: for memory that is already in use (a reply that
    /// arrived), so the counters stay true and the next request is refused instead.
    pub fn force(&mut self, n: usize) {
        let _ = self.resize(n, true);
    }

    /// Hold `n` more bytes.
    pub fn grow(&mut self, n: usize) -> Result<(), Over> {
        self.set(self.bytes.saturating_add(n))
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// An empty lease on the same meter: more of this client's bytes, held apart.
    pub fn sibling(&self) -> Lease {
        self.meter.lease()
    }

    fn resize(&mut self, n: usize, force: bool) -> Result<(), Over> {
        if n > self.bytes {
            self.meter.add(n - self.bytes, force)?;
        } else if n < self.bytes {
            self.meter.sub(self.bytes - n);
        }
        self.bytes = n;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.meter.sub(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_held_to_its_limit_and_gets_it_back_on_drop() {
        let process = Budget::new(1 << 20);
        let m = Meter::new(What::Reply, 100_000, process.clone());
        let mut a = m.lease();
        a.set(60_000).unwrap();
        let mut b = m.lease();
        assert_eq!(
            b.set(50_000),
            Err(Over::Client {
                what: What::Reply,
                limit: 100_000
            })
        );
        assert_eq!(b.bytes(), 0, "a refused lease keeps what it had");
        b.set(40_000).unwrap();
        assert_eq!(m.used(), 100_000);
        assert_eq!(process.used(), 100_000 - FREE_PER_CLIENT);
        drop(a);
        b.set(10).unwrap();
        assert_eq!(m.used(), 10);
        assert_eq!(process.used(), 0, "the free allowance is not charged");
        drop(b);
        assert_eq!(m.used(), 0);
    }

    #[test]
    fn the_process_budget_is_shared_and_forced_bytes_are_counted() {
        let process = Budget::new(100_000);
        let one = Meter::new(What::Request, 1 << 20, process.clone());
        let two = Meter::new(What::Request, 1 << 20, process.clone());
        let mut a = one.lease();
        a.set(80_000 + FREE_PER_CLIENT).unwrap();
        let mut b = two.lease();
        // the free part is always granted, the rest is refused
        b.set(FREE_PER_CLIENT).unwrap();
        assert_eq!(b.grow(30_000), Err(Over::Process { limit: 100_000 }));
        b.force(FREE_PER_CLIENT + 30_000);
        assert_eq!(process.used(), 110_000);
        drop(a);
        drop(b);
        assert_eq!(process.used(), 0);
        assert!(Over::Process { limit: 1 }
            .to_string()
            .contains("clients_max_memory"));
    }
}
