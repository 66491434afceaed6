//! Fault isolation and fairness, shared by the Postgres and Redis sides: a circuit breaker
//! per backend, token-bucket rate limits per user and per client address, and the
//! process-wide memory budget clients' buffers are charged to.
//!
//! The breaker makes a dead backend cost clients microseconds instead of connect timeouts:
//! after `circuit_breaker_failures` consecutive failed connects it opens and new connects
//! fail at once with 57P03 for `circuit_breaker_cooldown`; then one probe connect is let
//! through (half-open): success closes it, failure opens it again.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Breaker states, as the `pake_circuit_state` gauge reports them.
pub mod circuit {
    pub const CLOSED: u8 = 0;
    pub const OPEN: u8 = 1;
    pub const HALF_OPEN: u8 = 2;
}

/// The wait before the first probe of a breaker that just opened.
const FIRST_PROBE: Duration = Duration::from_millis(100);

/// One backend's circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    pub backend: String,
    threshold: u32,
    /// The longest an open breaker fails fast before a probe.
    cooldown: Duration,
    /// Times opened since the backend last answered: the wait before a probe doubles with
    /// each, from [`FIRST_PROBE`] up to `cooldown`.
    opens: AtomicU32,
    state: AtomicU8,
    failures: AtomicU32,
    /// Milliseconds since `epoch` when the breaker last opened.
    opened_at: AtomicU64,
    /// A half-open probe is in flight.
    probing: AtomicBool,
    epoch: Instant,
    pub state_gauge: prometheus::IntGauge,
    pub opened: prometheus::IntCounter,
}

/// What the breaker says about a connect attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// The probe of a half-open breaker: report its outcome.
    Probe,
    /// Fail fast; retry after this long.
    Refuse(Duration),
}

impl Breaker {
    pub fn new(
        backend: String,
        threshold: u32,
        cooldown: Duration,
        state_gauge: prometheus::IntGauge,
        opened: prometheus::IntCounter,
    ) -> Breaker {
        state_gauge.set(i64::from(circuit::CLOSED));
        Breaker {
            backend,
            threshold: threshold.max(1),
            cooldown,
            opens: AtomicU32::new(0),
            state: AtomicU8::new(circuit::CLOSED),
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            epoch: Instant::now(),
            state_gauge,
            opened,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn set(&self, s: u8) {
        self.state.store(s, Ordering::Release);
        self.state_gauge.set(i64::from(s));
    }

    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// May a connect to this backend be tried now?
    pub fn admit(&self) -> Admit {
        match self.state.load(Ordering::Acquire) {
            circuit::CLOSED => Admit::Go,
            _ => {
                let open_for = self
                    .now_ms()
                    .saturating_sub(self.opened_at.load(Ordering::Acquire));
                let cooldown = self.wait_ms();
                if open_for < cooldown {
                    return Admit::Refuse(Duration::from_millis(cooldown - open_for));
                }
                // cool-down over: one probe at a time
                if self
                    .probing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.set(circuit::HALF_OPEN);
                    Admit::Probe
                } else {
                    Admit::Refuse(Duration::from_millis(100))
                }
            }
        }
    }

    /// How long this opening fails fast: short after the first failures, so a backend back
    /// after a restart of a second or two is found within a fraction of that, and growing to
    /// `cooldown` for one that stays down.
    fn wait_ms(&self) -> u64 {
        let opens = self.opens.load(Ordering::Acquire).clamp(1, 16);
        let first = FIRST_PROBE.as_millis() as u64;
        (first << (opens - 1)).min(self.cooldown.as_millis() as u64)
    }

    pub fn on_success(&self) {
        // the common case writes nothing: Redis reports every command here, from every
        // worker, and stores to a shared line would bounce it between cores
        if self.state.load(Ordering::Acquire) == circuit::CLOSED
            && self.failures.load(Ordering::Relaxed) == 0
            && self.opens.load(Ordering::Relaxed) == 0
        {
            return;
        }
        self.failures.store(0, Ordering::Relaxed);
        self.opens.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
        if self.state.load(Ordering::Acquire) != circuit::CLOSED {
            tracing::info!(backend = %self.backend, "circuit closed: backend reachable again");
            self.set(circuit::CLOSED);
        }
    }

    pub fn on_failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let probing = self.probing.swap(false, Ordering::AcqRel);
        if probing || n >= self.threshold {
            self.opens.fetch_add(1, Ordering::AcqRel);
            self.opened_at.store(self.now_ms(), Ordering::Release);
            if self.state.swap(circuit::OPEN, Ordering::AcqRel) == circuit::CLOSED {
                self.opened.inc();
                tracing::warn!(backend = %self.backend, failures = n, cooldown = ?self.cooldown,
                    "circuit open: failing fast");
            }
            self.state_gauge.set(i64::from(circuit::OPEN));
        }
    }
}

/// A token bucket: `rate` tokens per second, up to `burst`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by user or client address.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<Key, Bucket>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Addr(IpAddr),
}

/// Cap on remembered addresses; idle ones are dropped past it.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    fn take(&self, key: Key, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        let mut map = self.buckets.lock();
        if map.len() >= MAX_BUCKETS {
            map.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(10));
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * rate;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// One request from `user`: `false` when over `rate` per second (burst of `burst`).
    pub fn take_user(&self, user: &str, rate: f64, burst: f64) -> bool {
        self.take(Key::User(user.to_string()), rate, burst)
    }

    /// One request from `addr`.
    pub fn take_addr(&self, addr: IpAddr, rate: f64, burst: f64) -> bool {
        self.take(Key::Addr(addr), rate, burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, cooldown_ms: u64) -> Breaker {
        Breaker::new(
            "db:5432".into(),
            threshold,
            Duration::from_millis(cooldown_ms),
            prometheus::IntGauge::new("g", "g").unwrap(),
            prometheus::IntCounter::new("c", "c").unwrap(),
        )
    }

    #[test]
    fn opens_after_threshold_then_probes() {
        let b = breaker(3, 50);
        b.on_failure();
        b.on_failure();
        assert_eq!(b.admit(), Admit::Go);
        b.on_failure();
        assert_eq!(b.state(), circuit::OPEN);
        assert!(matches!(b.admit(), Admit::Refuse(_)));
        assert_eq!(b.opened.get(), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admit::Probe);
        assert!(matches!(b.admit(), Admit::Refuse(_)), "one probe at a time");
        b.on_failure();
        assert_eq!(b.state(), circuit::OPEN, "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admit::Probe);
        b.on_success();
        assert_eq!(b.state(), circuit::CLOSED);
        assert_eq!(b.admit(), Admit::Go);
    }

    #[test]
    fn probe_wait_doubles_up_to_the_cooldown() {
        let b = breaker(1, 500);
        let mut waits = Vec::new();
        for _ in 0..5 {
            b.on_failure();
            waits.push(b.wait_ms());
        }
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        b.on_success();
        b.on_failure();
        assert_eq!(b.wait_ms(), 100, "an answer starts over");
    }

    #[test]
    fn success_resets_the_count() {
        let b = breaker(2, 1000);
        b.on_failure();
        b.on_success();
        b.on_failure();
        assert_eq!(b.state(), circuit::CLOSED);
    }

    #[test]
    fn token_bucket() {
        let r = RateLimiter::default();
        let ok = (0..10).filter(|_| r.take_user("u", 1.0, 5.0)).count();
        assert_eq!(ok, 5, "burst of 5, then empty");
        assert!(r.take_user("other", 1.0, 5.0), "buckets are per key");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(r.take_user("u", 1.0, 5.0), "refilled at the rate");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(r.take_addr(ip, 100.0, 1.0));
        assert!(!r.take_addr(ip, 100.0, 1.0));
    }
}

/// Bytes all clients of one side may hold together beyond what each holds for free
/// (`redis.clients_max_memory`, `general.clients_max_memory`). Charging is one atomic
/// update; a refused charge changes nothing.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes charged right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A RELOAD changed the limit (bytes already charged stay charged).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Charge `n` bytes unless that passes the limit.
    pub fn try_add(&self, n: usize) -> bool {
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= limit)
            })
            .is_ok()
    }

    /// Charge bytes already held, even past the limit.
    pub fn force_add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    pub fn sub(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Hold `n` bytes until the returned charge is dropped; `None` past the limit.
    pub fn charge(self: &Arc<Self>, n: usize) -> Option<Charge> {
        self.try_add(n).then(|| Charge {
            budget: self.clone(),
            bytes: n,
        })
    }
}

/// Bytes held on a [`MemoryBudget`]; given back on drop, so an early return or a closed
/// connection cannot leak budget.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Charge {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.sub(self.bytes);
    }
}

/// Replace an empty buffer whose allocation grew past `keep` bytes with a new one of
/// `fresh` bytes, so the memory a spike took (a 20 MB statement, a wide reply) goes back.
///
/// `capacity()` alone cannot tell: a buffer that was written out and advanced reports only
/// what is left after its read position, while the whole allocation stays behind it.
/// `try_reclaim` moves the position back to the start of the allocation when no one else
/// holds a part of it, and says whether `keep + 1` bytes are then available.
pub fn shrink_idle(buf: &mut bytes::BytesMut, keep: usize, fresh: usize) {
    if buf.is_empty() && buf.try_reclaim(keep + 1) {
        *buf = bytes::BytesMut::with_capacity(fresh);
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn a_buffer_written_out_after_a_spike_is_replaced() {
        use bytes::Buf;
        let mut big = bytes::BytesMut::with_capacity(8);
        big.extend_from_slice(&vec![7; 1 << 20]);
        big.advance(1 << 20);
        assert!(
            big.capacity() < 1024,
            "only what is left after the read position"
        );
        shrink_idle(&mut big, 64 << 10, 8192);
        assert_eq!(big.capacity(), 8192, "the megabyte went");
        // a small buffer keeps its allocation; a full one is left alone
        let mut small = bytes::BytesMut::with_capacity(4096);
        small.extend_from_slice(b"abc");
        small.advance(3);
        let at = small.as_ptr();
        shrink_idle(&mut small, 64 << 10, 8192);
        assert_eq!((small.as_ptr(), small.capacity()), (at, 4093));
        let mut busy = bytes::BytesMut::from(&vec![1; 1 << 20][..]);
        shrink_idle(&mut busy, 64 << 10, 8192);
        assert_eq!(busy.len(), 1 << 20);
    }

    #[test]
    fn charges_stop_at_the_limit_and_come_back_on_drop() {
        let b = MemoryBudget::new(100);
        let a = b.charge(60).expect("under the limit");
        assert!(b.charge(50).is_none(), "60 + 50 > 100");
        assert_eq!(b.used(), 60, "a refused charge changes nothing");
        let c = b.charge(40).expect("exactly the limit");
        assert_eq!((a.bytes(), c.bytes(), b.used()), (60, 40, 100));
        drop(a);
        assert_eq!(b.used(), 40);
        b.set_limit(30);
        assert!(b.charge(1).is_none(), "over a lowered limit");
        drop(c);
        assert_eq!(b.used(), 0);
    }
}
