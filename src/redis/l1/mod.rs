//! The L1: replies to cacheable reads kept in process (`moka`), coherent with Redis.
//!
//! Coherence rests on generations, checked on every hit:
//! * each key name hashes to one of [`STRIPES`] counters, bumped when an invalidation for
//!   it arrives (or Pake itself writes it);
//! * each hash slot has an epoch, bumped when the node serving it is flushed (its tracking
//!   connection dropped or lagged, a FLUSHALL/FLUSHDB null invalidation, a topology change);
//! * a global epoch is bumped when everything is flushed.
//!
//! A read takes a [`Ticket`] (the three counters) *before* its request is sent, and only when
//! the slot's node is armed (its invalidation stream is live). The entry stores the ticket;
//! a hit is valid only while all three counters are unchanged. So a value read before an
//! invalidation is never served after it, however the reply and the invalidation race: the
//! fill/invalidation race is closed without locks. Entries made stale this way stay until
//! the fill after the miss replaces them, or eviction or expiry drops them (counted in the
//! byte budget meanwhile); flushes drop them eagerly.
//!
//! Pake's own writes fill it too ([`super::writethrough`]): on the write's reply, read in
//! order with the invalidations on the node's tracking connection, the written keys'
//! generations are bumped and the fill is made under a ticket taken after that bump.
//!
//! The cache is bounded in bytes (a weigher counting key, arguments and reply), refuses
//! replies over `max_entry_size`, and expires entries at the earlier of `max_ttl` and the
//! key's own TTL.
//!
//! In front of moka, each thread keeps copies of the small entries it reads most
//! ([`front`]), served under the same rule, so that a hot key's hit spares moka's shared
//! probe, read recording and reference counts.

mod front;

use super::commands::slot;
use super::metrics::RedisMetrics;
use super::resp::encode::Proto;
use bytes::{BufMut, Bytes, BytesMut};
use moka::notification::RemovalCause;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Key-generation counters (4 MiB); more stripes mean fewer unrelated keys invalidated
/// together: with 100k hot keys, a write falsely invalidates ~0.1 other keys.
pub const STRIPES: usize = 1 << 20;
/// Hash slots in Redis Cluster (a standalone server is treated as owning them all).
pub const SLOTS: usize = 16384;
/// Bookkeeping bytes counted per entry on top of its key and reply.
const ENTRY_OVERHEAD: usize = 96;
/// Fills in flight, one per slot of this table (512 KiB): see [`L1::claim_fill`].
const CLAIMS: usize = 1 << 16;

/// What a cached reply answers: the command, its arguments, and everything else that can
/// change the reply (database, ACL user, protocol).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub db: u8,
    pub user: u32,
    pub proto: Proto,
    pub cmd: u16,
    pub slot: u16,
    /// The arguments after the command name: the key alone, or all of them length-prefixed.
    pub args: Bytes,
}

impl CacheKey {
    pub fn new(cmd: u16, args: &[Bytes], db: u8, user: u32, proto: Proto) -> CacheKey {
        let key = args.first().cloned().unwrap_or_default();
        let slot = slot(&key);
        let args = if args.len() == 1 {
            key
        } else {
            let mut b = BytesMut::with_capacity(args.iter().map(|a| a.len() + 4).sum());
            for a in args {
                b.put_u32(a.len() as u32);
                b.put_slice(a);
            }
            b.freeze()
        };
        CacheKey {
            db,
            user,
            proto,
            cmd,
            slot,
            args,
        }
    }

    /// The same key in an allocation of its own. A key built from a request's arguments is
    /// a slice of the session's read buffer, and a slice keeps all of that buffer alive:
    /// kept in the cache it would pin kilobytes (a large pipeline's buffer: megabytes) for a
    /// key of a few bytes, and the L1's byte bound would not bound its memory.
    pub fn owned(mut self) -> CacheKey {
        self.args = Bytes::copy_from_slice(&self.args);
        self
    }
}

/// The counters a read saw before it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    global: u64,
    slot_epoch: u32,
    key_gen: u32,
    stripe: u32,
    slot: u16,
}

/// A fill in flight ([`L1::claim_fill`]); the next miss of the key may fill once it is dropped.
pub struct FillClaim<'a> {
    cell: &'a AtomicU64,
    value: u64,
}

impl Drop for FillClaim<'_> {
    fn drop(&mut self) {
        let _ = self.cell.compare_exchange(self.value, 0, SeqCst, Relaxed);
    }
}

#[derive(Clone)]
struct Entry {
    reply: Bytes,
    ticket: Ticket,
    /// When it was filled plus its TTL: moka expires it then, and so does a front copy.
    expires: Instant,
}

/// Ids telling apart the caches whose copies share a thread's [`front`] table.
static NEXT_L1: AtomicU64 = AtomicU64::new(1);

struct EntryExpiry;

impl moka::Expiry<CacheKey, Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &CacheKey, e: &Entry, created: Instant) -> Option<Duration> {
        Some(e.expires.saturating_duration_since(created))
    }
}

/// Sizes read at scrape time.
pub struct Stats {
    pub bytes: u64,
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
}

pub struct L1 {
    cache: moka::sync::Cache<CacheKey, Entry, ahash::RandomState>,
    /// This cache's id in the threads' front tables, and the hasher that places keys there.
    id: u64,
    front_hasher: ahash::RandomState,
    gens: Box<[AtomicU32]>,
    /// The fill in flight for a stripe's generation (0: none), by stripe modulo [`CLAIMS`].
    claims: Box<[AtomicU64]>,
    slot_epochs: Box<[AtomicU32]>,
    /// Slots whose node's invalidation stream is live; others are never filled.
    armed: Box<[AtomicBool]>,
    global: AtomicU64,
    /// Limits a reload may change: the largest reply kept, and the longest life (ms).
    max_entry: AtomicUsize,
    max_ttl_ms: AtomicU64,
    metrics: Arc<RedisMetrics>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// FNV-1a: short keys, called on every lookup and invalidation.
fn stripe_of(key: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) & (STRIPES - 1)
}

fn counters<T: Default>(n: usize) -> Box<[T]> {
    (0..n).map(|_| T::default()).collect()
}

impl L1 {
    pub fn new(
        max_bytes: u64,
        max_entry: usize,
        max_ttl: Duration,
        metrics: Arc<RedisMetrics>,
    ) -> Arc<L1> {
        let evictions = metrics.l1_evictions.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &CacheKey, e: &Entry| {
                u32::try_from(k.args.len() + e.reply.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry)
            .support_invalidation_closures()
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            // every lookup hashes the key (and moka hashes it again for its own maps): aHash
            // is several times cheaper than SipHash there and, keyed at random per process,
            // still resists keys chosen to collide
            .build_with_hasher(ahash::RandomState::new());
        let l1 = Arc::new(L1 {
            cache,
            id: NEXT_L1.fetch_add(1, Relaxed),
            front_hasher: ahash::RandomState::new(),
            gens: counters(STRIPES),
            claims: counters(CLAIMS),
            slot_epochs: counters(SLOTS),
            armed: counters(SLOTS),
            global: AtomicU64::new(0),
            max_entry: AtomicUsize::new(max_entry),
            max_ttl_ms: AtomicU64::new(millis(max_ttl)),
            metrics: metrics.clone(),
        });
        metrics.attach_l1(&l1);
        l1
    }

    /// New limits from a reload, for fills from now on (entries already cached keep the
    /// expiry they were given, at most the old `max_ttl`).
    pub fn set_limits(&self, max_entry: usize, max_ttl: Duration) {
        self.max_entry.store(max_entry, Relaxed);
        self.max_ttl_ms.store(millis(max_ttl), Relaxed);
    }

    /// A cached reply that is still valid, as its own bytes ([`L1::read`] without the
    /// caller's buffer).
    pub fn get(&self, key: &CacheKey) -> Option<Bytes> {
        self.read(key, Bytes::copy_from_slice)
    }

    /// Hand a cached reply that is still valid to `take`, which writes it where it goes:
    /// from this thread's front table when it holds a copy, else from moka (and then
    /// offered to that table, which takes it if small and its set has room: see [`front`]).
    /// `take` runs while the front table is borrowed and must not read the L1.
    pub fn read<R>(&self, key: &CacheKey, take: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let hash = self.front_hasher.hash_one(key);
        let now = Instant::now();
        front::FRONT.with(|f| {
            let mut front = f.borrow_mut();
            if let Some(reply) = front.get(self.id, hash, key, now, |t| self.valid(t)) {
                self.metrics.l1_hits.inc();
                return Some(take(reply));
            }
            let Some(entry) = self.cache.get(key) else {
                self.metrics.l1_misses.inc();
                return None;
            };
            if self.valid(&entry.ticket) && now < entry.expires {
                self.metrics.l1_hits.inc();
                front.offer(self.id, hash, key, &entry);
                return Some(take(&entry.reply));
            }
            // left in place: the fill that follows this miss replaces it (a removal now would
            // leave the table a tombstone to rehash away, for every write of a hot key)
            self.metrics.l1_misses.inc();
            None
        })
    }

    /// Take a ticket for reading `redis_key` (in `slot`), or `None` when its node is not
    /// armed (the reply must then not be cached).
    pub fn ticket(&self, slot: u16, redis_key: &[u8]) -> Option<Ticket> {
        let s = usize::from(slot) % SLOTS;
        if !self.armed[s].load(SeqCst) {
            return None;
        }
        let stripe = stripe_of(redis_key);
        Some(Ticket {
            global: self.global.load(SeqCst),
            slot_epoch: self.slot_epochs[s].load(SeqCst),
            key_gen: self.gens[stripe].load(SeqCst),
            stripe: stripe as u32,
            slot,
        })
    }

    fn valid(&self, t: &Ticket) -> bool {
        let s = usize::from(t.slot) % SLOTS;
        self.gens[t.stripe as usize].load(SeqCst) == t.key_gen
            && self.slot_epochs[s].load(SeqCst) == t.slot_epoch
            && self.global.load(SeqCst) == t.global
    }

    /// The right to fill the key read under `ticket`, unless a fill of the same key (or of
    /// a key sharing its place in the claims table) is already in flight. When a hot key's
    /// entry is invalidated, every read of it misses until one fill lands; only the first
    /// miss fetches its TTL and fills, the others are plain reads (a pipelined workload
    /// otherwise sent a PTTL and made a moka insert for each of them). Released on drop.
    pub fn claim_fill(&self, ticket: &Ticket) -> Option<FillClaim<'_>> {
        let cell = &self.claims[ticket.stripe as usize % CLAIMS];
        let value = (1 << 63) | u64::from(ticket.stripe) << 32 | u64::from(ticket.key_gen);
        cell.compare_exchange(0, value, SeqCst, Relaxed)
            .ok()
            .map(|_| FillClaim { cell, value })
    }

    /// Store a reply read under `ticket`. `key_ttl` is the key's own remaining TTL, if any.
    pub fn insert(&self, key: CacheKey, reply: Bytes, ticket: Ticket, key_ttl: Option<Duration>) {
        if reply.len() > self.max_entry.load(Relaxed) || !self.valid(&ticket) {
            return;
        }
        let max_ttl = Duration::from_millis(self.max_ttl_ms.load(Relaxed));
        let ttl = key_ttl.map_or(max_ttl, |t| t.min(max_ttl));
        if ttl.is_zero() {
            return;
        }
        let expires = Instant::now() + ttl;
        self.cache.insert(
            key.owned(),
            Entry {
                reply,
                ticket,
                expires,
            },
        );
        self.metrics.l1_fills.inc();
    }

    /// An invalidation for one key: every cached reply about it stops being valid.
    pub fn invalidate_key(&self, redis_key: &[u8]) {
        self.gens[stripe_of(redis_key)].fetch_add(1, SeqCst);
        self.metrics.l1_invalidations.inc();
    }

    /// Forget everything cached for `slots` (a node's share of the keyspace).
    pub fn flush_slots(&self, slots: &[(u16, u16)], reason: &str) {
        if covers_all(slots) {
            self.flush_all(reason);
            return;
        }
        let mut hit = vec![false; SLOTS];
        for &(start, end) in slots {
            for s in start..=end.min(SLOTS as u16 - 1) {
                self.slot_epochs[usize::from(s)].fetch_add(1, SeqCst);
                hit[usize::from(s)] = true;
            }
        }
        self.metrics.flush(reason);
        let _ = self
            .cache
            .invalidate_entries_if(move |k, _| hit[usize::from(k.slot) % SLOTS]);
    }

    pub fn flush_all(&self, reason: &str) {
        self.global.fetch_add(1, SeqCst);
        self.metrics.flush(reason);
        self.cache.invalidate_all();
    }

    /// Mark `slots` as served by a node whose invalidation stream is live (or not). Disarming
    /// also flushes them: invalidations for them may have been missed.
    pub fn set_armed(&self, slots: &[(u16, u16)], armed: bool, reason: &str) {
        for &(start, end) in slots {
            for s in start..=end.min(SLOTS as u16 - 1) {
                self.armed[usize::from(s)].store(armed, SeqCst);
            }
        }
        if !armed {
            self.flush_slots(slots, reason);
        }
    }

    pub fn is_armed(&self, slot: u16) -> bool {
        self.armed[usize::from(slot) % SLOTS].load(SeqCst)
    }

    pub fn stats(&self) -> Stats {
        self.cache.run_pending_tasks();
        Stats {
            bytes: self.cache.weighted_size(),
            entries: self.cache.entry_count(),
            hits: self.metrics.l1_hits.get(),
            misses: self.metrics.l1_misses.get(),
        }
    }
}

/// Does this list of ranges cover every slot (a standalone server)?
pub fn covers_all(slots: &[(u16, u16)]) -> bool {
    let mut covered = vec![false; SLOTS];
    for &(start, end) in slots {
        for s in start..=end.min(SLOTS as u16 - 1) {
            covered[usize::from(s)] = true;
        }
    }
    covered.iter().all(|&c| c)
}

/// The whole slot space, for a standalone server.
pub const ALL_SLOTS: &[(u16, u16)] = &[(0, SLOTS as u16 - 1)];

#[cfg(test)]
mod tests {
    use super::*;

    fn l1() -> Arc<L1> {
        let m = RedisMetrics::new(&prometheus::Registry::new());
        let l1 = L1::new(1 << 20, 1024, Duration::from_secs(60), m);
        l1.set_armed(ALL_SLOTS, true, "test");
        l1
    }

    fn key(k: &str) -> CacheKey {
        CacheKey::new(
            3,
            &[Bytes::copy_from_slice(k.as_bytes())],
            0,
            0,
            Proto::Resp2,
        )
    }

    #[test]
    fn one_fill_per_key_is_in_flight_and_a_dropped_one_frees_the_key() {
        let l1 = l1();
        let t = l1.ticket(slot(b"k"), b"k").unwrap();
        let first = l1.claim_fill(&t).expect("the first miss fills");
        assert!(
            l1.claim_fill(&t).is_none(),
            "a second miss meanwhile does not"
        );
        let other = l1.ticket(slot(b"other"), b"other").unwrap();
        assert!(
            l1.claim_fill(&other).is_some(),
            "another key fills at the same time"
        );
        drop(first);
        assert!(
            l1.claim_fill(&t).is_some(),
            "the key fills again once the first is done"
        );
        // a claim of an older generation holds the place until it is dropped, then frees it
        let old = l1
            .claim_fill(&t)
            .expect("free again: the last claim was a temporary");
        l1.invalidate_key(b"k");
        let fresh = l1.ticket(slot(b"k"), b"k").unwrap();
        assert!(
            l1.claim_fill(&fresh).is_none(),
            "the older fill is still in flight"
        );
        drop(old);
        assert!(l1.claim_fill(&fresh).is_some());
    }

    /// What the cache keeps of a request is its own copy: the buffer the request was read
    /// into is freed once the request is done, however long the entry lives.
    #[test]
    fn an_entry_does_not_pin_the_buffer_its_request_was_read_into() {
        let l1 = l1();
        let buffer = Bytes::from(vec![b'k'; 1 << 20]);
        let request_key = CacheKey::new(3, &[buffer.slice(0..1)], 0, 0, Proto::Resp2);
        let t = l1.ticket(slot(b"k"), b"k").unwrap();
        l1.insert(request_key, Bytes::from_static(b"$1\r\nv\r\n"), t, None);
        assert!(l1.get(&key("k")).is_some(), "cached");
        assert!(
            buffer.is_unique(),
            "the cache holds a slice of the read buffer"
        );
    }

    #[test]
    fn a_fill_read_before_an_invalidation_is_never_served_after_it() {
        let l1 = l1();
        let t = l1.ticket(slot(b"k"), b"k").unwrap();
        // the invalidation overtakes the reply
        l1.invalidate_key(b"k");
        l1.insert(key("k"), Bytes::from_static(b"$1\r\nv\r\n"), t, None);
        assert_eq!(l1.get(&key("k")), None);
        // and when the reply wins the race, the later invalidation still kills the entry
        let t = l1.ticket(slot(b"k"), b"k").unwrap();
        l1.insert(key("k"), Bytes::from_static(b"$1\r\nv\r\n"), t, None);
        assert!(l1.get(&key("k")).is_some());
        l1.invalidate_key(b"k");
        assert_eq!(l1.get(&key("k")), None);
    }

    /// The thread's front table holds copies of entries, checked under the same rule: a
    /// new value after an invalidation is seen at once, and two caches sharing a thread
    /// (two Pakes in one process) never answer for each other.
    #[test]
    fn the_front_table_follows_invalidations_and_its_owner() {
        let (a, b) = (l1(), l1());
        let fill = |l1: &L1, v: &'static [u8]| {
            let t = l1.ticket(slot(b"k"), b"k").unwrap();
            l1.insert(key("k"), Bytes::from_static(v), t, None);
        };
        fill(&a, b"+a1\r\n");
        fill(&b, b"+b1\r\n");
        for _ in 0..3 {
            // the first get copies into the front table, the next ones are served from it
            assert_eq!(a.get(&key("k")).as_deref(), Some(&b"+a1\r\n"[..]));
            assert_eq!(b.get(&key("k")).as_deref(), Some(&b"+b1\r\n"[..]));
        }
        // a write-through: the key's generation is bumped, then the new value filled
        a.invalidate_key(b"k");
        fill(&a, b"+a2\r\n");
        assert_eq!(a.get(&key("k")).as_deref(), Some(&b"+a2\r\n"[..]));
        assert_eq!(b.get(&key("k")).as_deref(), Some(&b"+b1\r\n"[..]));
        b.flush_all("test");
        assert_eq!(b.get(&key("k")), None);
        assert_eq!(a.get(&key("k")).as_deref(), Some(&b"+a2\r\n"[..]));
    }

    #[test]
    fn flushes_and_disarming() {
        let l1 = l1();
        let fill = |k: &str| {
            let t = l1.ticket(slot(k.as_bytes()), k.as_bytes()).unwrap();
            l1.insert(key(k), Bytes::from_static(b"+x\r\n"), t, None);
        };
        fill("foo"); // slot 12182
        fill("bar"); // slot 5061
        l1.flush_slots(&[(10000, 16383)], "test");
        assert_eq!(l1.get(&key("foo")), None);
        assert!(l1.get(&key("bar")).is_some());
        l1.set_armed(&[(0, 9999)], false, "test");
        assert_eq!(l1.get(&key("bar")), None);
        assert!(
            l1.ticket(slot(b"bar"), b"bar").is_none(),
            "disarmed: no fills"
        );
        assert!(l1.ticket(slot(b"foo"), b"foo").is_some());
    }

    #[test]
    fn size_limits_and_ttl() {
        let l1 = l1();
        let t = l1.ticket(slot(b"big"), b"big").unwrap();
        l1.insert(key("big"), Bytes::from(vec![b'x'; 2000]), t, None);
        assert_eq!(l1.get(&key("big")), None, "over max_entry_size");
        let t = l1.ticket(slot(b"short"), b"short").unwrap();
        l1.insert(
            key("short"),
            Bytes::from_static(b"+x\r\n"),
            t,
            Some(Duration::from_millis(30)),
        );
        assert!(l1.get(&key("short")).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l1.get(&key("short")), None, "the key's own TTL is honoured");
        let hm = CacheKey::new(
            5,
            &[Bytes::from_static(b"h"), Bytes::from_static(b"f1")],
            0,
            0,
            Proto::Resp2,
        );
        assert_eq!(hm.slot, slot(b"h"));
        assert_ne!(
            hm,
            CacheKey::new(5, &[Bytes::from_static(b"h")], 0, 0, Proto::Resp2)
        );
    }
}
