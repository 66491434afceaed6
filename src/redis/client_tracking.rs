//! `CLIENT TRACKING` for Pake's own clients: Redis's server-assisted client-side caching
//! (redis-py's `cache_config`, node-redis's client-side cache, Lettuce, Jedis), answered by
//! Pake.
//!
//! Redis cannot do it for them: it sees Pake's shared links, not the clients, so it would
//! track the link's reads and send the invalidations to whichever client's command happened
//! to be on the link. Pake already hears every write of every primary on its tracking streams
//! ([`super::tracking`], BCAST, for its L1), so it keeps Redis's tracking table itself:
//!
//! * a tracked read (a read-only command of a client with tracking on; OPTIN/OPTOUT decided
//!   by `CLIENT CACHING`) records its keys for the client *before* the command is sent or
//!   answered from the L1, so any invalidation Pake hears after that reaches the client;
//! * an invalidation from a stream removes the key and queues it for each client that read
//!   it (a BCAST client: each key under one of its prefixes);
//! * a write Pake sends through a tracking connection (write-through) is not echoed back
//!   to it (NOLOOP): the stream announces it itself when Redis acknowledges it, in order
//!   with what it hears, naming the writer, so a writer with NOLOOP is left out (a write on
//!   the shared links is heard as anyone's: its writer hears of it even under NOLOOP);
//! * a FLUSHALL/FLUSHDB, a lost or (re)armed stream — any moment Pake may have missed an
//!   invalidation — sends every tracking client a NULL invalidation: flush everything.
//!
//! Invalidations are queued in the destination client's [`Inbox`] (the client itself, or the
//! one its `REDIRECT` names) and written by that client's session *behind every reply it
//! still owes*: a read sent before the write was heard may carry the old value, and Redis's
//! order (the old value, then the invalidation) is what lets a client cache it safely.
//!
//! Bounded by construction: the table holds at most [`TABLE_MAX_BYTES`] of keys (past it the
//! oldest-found keys are invalidated for their readers and forgotten, as Redis does past
//! `tracking-table-max-keys`); an inbox holds at most [`INBOX_MAX_BYTES`] of keys not yet
//! written (past it they are replaced by one NULL invalidation: the client flushes its
//! whole cache, which is always correct).
//!
//! Like Redis's own table, entries of a client that turned tracking off or left are dropped
//! lazily (when their key is invalidated or evicted); they never reach anyone.
//!
//! A client whose `REDIRECT` target has closed gets, instead of each invalidation it can no
//! longer receive, Redis's `tracking-redir-broken` push naming the target (RESP3 only), and
//! `CLIENT TRACKINGINFO` shows `broken_redirect` until tracking is turned on again.

use super::clients::Entry;
use super::metrics::ClientTrackingMetrics;
use super::resp::encode::{self, Proto};
use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Context;

/// Most bytes of tracked keys (with their reader lists) Pake remembers.
pub const TABLE_MAX_BYTES: usize = 64 << 20;
/// Most bytes of invalidated keys queued for one client before they become one flush.
pub const INBOX_MAX_BYTES: usize = 1 << 20;
/// What a table entry costs beside its key's bytes (map slot, reader list).
const ENTRY_OVERHEAD: usize = 64;
/// What a queued key costs beside its bytes.
const QUEUED_OVERHEAD: usize = 16;

/// One client's `CLIENT TRACKING ON` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mode {
    /// Invalidations go to this client id instead of the connection itself (`0`: none).
    pub redirect: u64,
    pub bcast: bool,
    pub prefixes: Vec<Bytes>,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
}

struct Sub {
    bcast: bool,
    prefixes: Vec<Bytes>,
    noloop: bool,
    /// Where this client's invalidations are queued.
    to: Arc<Entry>,
    /// The client's own connection and the id it redirects to (0: none), for telling it
    /// when `to` has closed.
    own: Arc<Entry>,
    redirect: u64,
}

impl Sub {
    fn wants(&self, key: &[u8]) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| key.starts_with(p))
    }

    /// Queue `key`'s invalidation (`None`: flush everything) where it goes; a redirect
    /// target that has closed makes it a broken-redirect notice to the client itself, as
    /// Redis does.
    fn post(&self, key: Option<&Bytes>) {
        match key {
            _ if self.redirect != 0 && self.to.is_gone() => {
                self.own.inbox.post_broken(self.redirect)
            }
            Some(k) => self.to.inbox.post(k),
            None => self.to.inbox.post_flush(),
        }
    }
}

#[derive(Default)]
struct Table {
    /// Key → the clients that read it since it was last invalidated.
    keys: HashMap<Bytes, Vec<u64>>,
    bytes: usize,
    subs: HashMap<u64, Sub>,
    /// How many of `subs` are in BCAST mode (0: no scan of `subs` per invalidation).
    bcast: usize,
}

/// The tracking table of Pake's clients.
pub struct ClientTracking {
    /// Clients with tracking on: 0 keeps every hook to one atomic load.
    active: AtomicUsize,
    table: Mutex<Table>,
    max_bytes: usize,
    metrics: ClientTrackingMetrics,
}

impl Default for ClientTracking {
    fn default() -> Self {
        ClientTracking::new(TABLE_MAX_BYTES, ClientTrackingMetrics::default())
    }
}

impl ClientTracking {
    pub fn new(max_bytes: usize, metrics: ClientTrackingMetrics) -> ClientTracking {
        ClientTracking {
            active: AtomicUsize::new(0),
            table: Mutex::new(Table::default()),
            max_bytes,
            metrics,
        }
    }

    /// Is any client tracking?
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    /// Client `id` (connection `own`) tracks with `mode`, its invalidations queued in
    /// `to`'s inbox (`own`'s without a redirection).
    pub fn on(&self, id: u64, mode: &Mode, to: Arc<Entry>, own: &Arc<Entry>) {
        for e in [&to, own] {
            if !e.inbox.armed() {
                e.inbox.arm();
                // an idle session polls its inbox only once it knows it has one
                e.poke();
            }
        }
        own.inbox.broken.store(false, Ordering::Release);
        let sub = Sub {
            bcast: mode.bcast,
            prefixes: mode.prefixes.clone(),
            noloop: mode.noloop,
            to,
            own: own.clone(),
            redirect: mode.redirect,
        };
        let mut t = self.table.lock();
        if let Some(old) = t.subs.insert(id, sub) {
            t.bcast -= usize::from(old.bcast);
        } else {
            self.active.fetch_add(1, Ordering::AcqRel);
            self.metrics.clients.inc();
        }
        t.bcast += usize::from(mode.bcast);
    }

    /// Client `id` stopped tracking (or left).
    pub fn off(&self, id: u64) {
        let mut t = self.table.lock();
        if let Some(old) = t.subs.remove(&id) {
            t.bcast -= usize::from(old.bcast);
            self.active.fetch_sub(1, Ordering::AcqRel);
            self.metrics.clients.dec();
        }
    }

    /// Client `id` reads `keys`: each invalidation of them from now on reaches it.
    pub fn read(&self, id: u64, keys: &[&Bytes]) {
        let mut t = self.table.lock();
        for k in keys {
            let added = match t.keys.get_mut(&k[..]) {
                Some(readers) if readers.contains(&id) => 0,
                Some(readers) => {
                    readers.push(id);
                    8
                }
                None => {
                    // a copy: the key is a slice of the client's read buffer, which it
                    // would keep alive as long as the key is tracked
                    t.keys.insert(Bytes::copy_from_slice(k), vec![id]);
                    k.len() + ENTRY_OVERHEAD
                }
            };
            t.bytes += added;
        }
        while t.bytes > self.max_bytes {
            // as Redis past tracking-table-max-keys: forget a key, telling its readers
            let Some(k) = t.keys.keys().next().cloned() else {
                break;
            };
            t.forget(&k, None, &self.metrics);
        }
        self.metrics.bytes.set(t.bytes as i64);
    }

    /// Client `id` reads `keys` that no stream is hearing the writes of (their node's stream
    /// not armed yet, or lost and not armed again): each is invalidated for it at once,
    /// behind the read's reply, so the client does not keep a value whose next write Pake
    /// might never announce. The flush sent when the stream arms covers only what was read
    /// before it; a key read in the window and written before the arming was kept by the
    /// client until then (2 of 6 fresh starts in a script that turned tracking on at once).
    pub fn unheard(&self, id: u64, keys: &[&Bytes]) {
        let t = self.table.lock();
        let Some(sub) = t.subs.get(&id) else { return };
        for k in keys {
            // a copy: the key is a slice of the client's read buffer
            sub.post(Some(&Bytes::copy_from_slice(k)));
            self.metrics.sent.inc();
        }
    }

    /// `keys` changed (by client `origin`, when Pake knows it): each reader's invalidation is
    /// queued in its inbox, except the writer's own under NOLOOP.
    pub fn invalidate(&self, keys: &[Bytes], origin: Option<u64>) {
        let mut t = self.table.lock();
        for k in keys {
            t.forget(k, origin, &self.metrics);
            if t.bcast > 0 {
                // one copy for every BCAST inbox: `k` is a slice of a writer's request or
                // of a stream's read buffer, which a queued slice would keep alive (an
                // inbox not drained for long, its client blocked, for as long as that)
                let k = Bytes::copy_from_slice(k);
                for (id, sub) in t.subs.iter().filter(|(_, s)| s.bcast && s.wants(&k)) {
                    if !(sub.noloop && origin == Some(*id)) {
                        sub.post(Some(&k));
                        self.metrics.sent.inc();
                    }
                }
            }
        }
        self.metrics.bytes.set(t.bytes as i64);
    }

    /// Pake may have missed invalidations (a FLUSHALL, a stream lost or armed anew): every
    /// tracking client is told to flush its whole cache, and the table starts over.
    pub fn flush_all(&self) {
        if !self.active() {
            return;
        }
        let mut t = self.table.lock();
        t.keys.clear();
        t.keys.shrink_to_fit();
        t.bytes = 0;
        self.metrics.bytes.set(0);
        for sub in t.subs.values() {
            sub.post(None);
            self.metrics.sent.inc();
        }
    }

    /// Bytes the table holds now (for tests and metrics).
    pub fn table_bytes(&self) -> usize {
        self.table.lock().bytes
    }
}

impl Table {
    /// Remove `key` and queue it for its readers, but for `origin` under NOLOOP.
    fn forget(&mut self, key: &Bytes, origin: Option<u64>, metrics: &ClientTrackingMetrics) {
        let Some((k, readers)) = self.keys.remove_entry(&key[..]) else {
            return;
        };
        self.bytes -= k.len() + ENTRY_OVERHEAD + 8 * (readers.len() - 1);
        for id in readers {
            // a reader that turned tracking off (or left) hears nothing; BCAST readers
            // hear of the key through their prefixes instead
            let Some(sub) = self.subs.get(&id).filter(|s| !s.bcast) else {
                continue;
            };
            if !(sub.noloop && origin == Some(id)) {
                sub.post(Some(&k));
                metrics.sent.inc();
            }
        }
    }
}

/// The invalidations queued for one client connection, written by its session.
#[derive(Default)]
pub struct Inbox {
    /// Set once anything may post here: sessions poll their inbox only then.
    armed: AtomicBool,
    queued: Mutex<Queued>,
    waker: AtomicWaker,
    /// This client's redirect target has closed (`CLIENT TRACKINGINFO`'s
    /// `broken_redirect`), until tracking is turned on again.
    broken: AtomicBool,
}

#[derive(Default)]
struct Queued {
    keys: Vec<Bytes>,
    bytes: usize,
    flush: bool,
    /// A `tracking-redir-broken` push for this redirect id is owed.
    broken: Option<u64>,
}

impl Inbox {
    pub fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    pub fn armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }

    fn post(&self, key: &Bytes) {
        let mut q = self.queued.lock();
        if !q.flush {
            q.bytes += key.len() + QUEUED_OVERHEAD;
            if q.bytes > INBOX_MAX_BYTES {
                // too far behind to list each key: one flush says it all
                q.flush = true;
                q.keys = Vec::new();
                q.bytes = 0;
            } else {
                q.keys.push(key.clone());
            }
        }
        drop(q);
        self.waker.wake();
    }

    /// The client's redirect target `id` has closed while an invalidation was meant for it.
    fn post_broken(&self, id: u64) {
        self.broken.store(true, Ordering::Release);
        self.queued.lock().broken = Some(id);
        self.waker.wake();
    }

    /// Has this client's redirect target closed?
    pub fn broken_redirect(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    fn post_flush(&self) {
        let mut q = self.queued.lock();
        q.flush = true;
        q.keys = Vec::new();
        q.bytes = 0;
        drop(q);
        self.waker.wake();
    }

    /// Write what is queued to `out` as `proto`'s invalidation message (a push in RESP3; in
    /// RESP2 a `__redis__:invalidate` message, which only a subscribed connection can
    /// take: `subscribed`); `true` when anything was written. Registers `cx` to be woken
    /// by the next post.
    pub fn drain(
        &self,
        cx: &mut Context<'_>,
        out: &mut BytesMut,
        proto: Proto,
        subscribed: bool,
    ) -> bool {
        self.waker.register(cx.waker());
        let q = {
            let mut q = self.queued.lock();
            if q.keys.is_empty() && !q.flush && q.broken.is_none() {
                return false;
            }
            std::mem::take(&mut *q)
        };
        if let (Some(id), Proto::Resp3) = (q.broken, proto) {
            // RESP2 has no way to say it: Redis only sets the flag
            out.extend_from_slice(b">2\r\n");
            encode::bulk(out, b"tracking-redir-broken");
            encode::int(out, i64::try_from(id).unwrap_or(i64::MAX));
        }
        if q.keys.is_empty() && !q.flush {
            return q.broken.is_some() && proto == Proto::Resp3;
        }
        let keys = (!q.flush).then_some(&q.keys[..]);
        match proto {
            Proto::Resp3 => invalidation(out, keys, Proto::Resp3),
            // Redis drops them too: a RESP2 connection outside pub/sub cannot carry them
            Proto::Resp2 if !subscribed => return false,
            Proto::Resp2 => invalidation(out, keys, Proto::Resp2),
        }
        true
    }
}

/// One invalidation message for `keys` (`None`: flush everything) as Redis sends it.
pub fn invalidation(out: &mut BytesMut, keys: Option<&[Bytes]>, proto: Proto) {
    match proto {
        Proto::Resp3 => {
            out.extend_from_slice(b">2\r\n");
            encode::bulk(out, b"invalidate");
        }
        Proto::Resp2 => {
            encode::array(out, 3);
            encode::bulk(out, b"message");
            encode::bulk(out, b"__redis__:invalidate");
        }
    }
    match keys {
        Some(keys) => {
            encode::array(out, keys.len());
            for k in keys {
                encode::bulk(out, k);
            }
        }
        None => encode::null(out, proto),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::clients::Registry;

    fn key(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    fn drained(e: &Entry, proto: Proto) -> Option<String> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = BytesMut::new();
        e.inbox
            .drain(&mut cx, &mut out, proto, true)
            .then(|| String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn a_reader_hears_of_a_write_once() {
        let reg = Registry::new(1024);
        let (a, b) = (reg.register(1, None, None), reg.register(2, None, None));
        let t = ClientTracking::default();
        t.on(1, &Mode::default(), a.entry.clone(), &a.entry);
        t.on(2, &Mode::default(), b.entry.clone(), &b.entry);
        t.read(1, &[&key("k"), &key("x")]);
        t.read(2, &[&key("k")]);
        // client 2 writes k: both hear of it
        t.invalidate(&[key("k")], Some(2));
        let k = Some(">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
        assert_eq!(drained(&a.entry, Proto::Resp3).as_deref(), k);
        assert_eq!(drained(&b.entry, Proto::Resp3).as_deref(), k);
        // k was forgotten: a second write is heard by nobody until it is read again
        t.invalidate(&[key("k")], None);
        assert_eq!(drained(&a.entry, Proto::Resp3), None);
        assert_eq!(t.table_bytes(), 1 + ENTRY_OVERHEAD);
    }

    #[test]
    fn noloop_bcast_prefixes_and_clients_gone() {
        let reg = Registry::new(1024);
        let (a, b) = (reg.register(1, None, None), reg.register(2, None, None));
        let t = ClientTracking::default();
        let noloop = Mode {
            noloop: true,
            ..Mode::default()
        };
        t.on(1, &noloop, a.entry.clone(), &a.entry);
        t.read(1, &[&key("k")]);
        t.invalidate(&[key("k")], Some(1));
        assert_eq!(
            drained(&a.entry, Proto::Resp3),
            None,
            "NOLOOP: not its own write"
        );
        let bcast = Mode {
            bcast: true,
            prefixes: vec![key("user:")],
            ..Mode::default()
        };
        t.on(2, &bcast, b.entry.clone(), &b.entry);
        t.invalidate(&[key("user:1"), key("order:1"), key("user:2")], None);
        assert_eq!(
            drained(&b.entry, Proto::Resp2).as_deref(),
            Some("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*2\r\n$6\r\nuser:1\r\n$6\r\nuser:2\r\n")
        );
        // a client that turned tracking off hears nothing of what it read before
        t.read(1, &[&key("k")]);
        t.off(1);
        t.invalidate(&[key("k")], None);
        assert_eq!(drained(&a.entry, Proto::Resp3), None);
        assert!(t.active());
        t.off(2);
        assert!(!t.active());
    }

    #[test]
    fn bounded_table_and_inbox() {
        let reg = Registry::new(1024);
        let a = reg.register(1, None, None);
        let t = ClientTracking::new(100 * (ENTRY_OVERHEAD + 8), Default::default());
        t.on(1, &Mode::default(), a.entry.clone(), &a.entry);
        let keys: Vec<Bytes> = (0..1000).map(|i| key(&format!("k{i:07}"))).collect();
        for k in &keys {
            t.read(1, &[k]);
        }
        assert!(t.table_bytes() <= 100 * (ENTRY_OVERHEAD + 8));
        // the keys forgotten to stay in bounds were invalidated for their reader
        let msg = drained(&a.entry, Proto::Resp3).unwrap_or_default();
        assert!(msg.starts_with(">2\r\n$10\r\ninvalidate\r\n*"), "{msg}");
        assert!(msg.matches("$8\r\n").count() >= 900, "{msg}");
        // an inbox that falls more than its bound behind becomes one flush
        let big = key(&"x".repeat(INBOX_MAX_BYTES / 4));
        for _ in 0..5 {
            t.read(1, &[&big]);
            t.invalidate(std::slice::from_ref(&big), None);
        }
        assert_eq!(
            drained(&a.entry, Proto::Resp3).as_deref(),
            Some(">2\r\n$10\r\ninvalidate\r\n_\r\n")
        );
    }

    #[test]
    fn a_tracked_key_does_not_pin_the_buffer_it_was_read_from() {
        let reg = Registry::new(1024);
        let a = reg.register(1, None, None);
        let t = ClientTracking::default();
        t.on(1, &Mode::default(), a.entry.clone(), &a.entry);
        let buffer = Bytes::from(vec![b'k'; 1 << 20]);
        t.read(1, &[&buffer.slice(0..1)]);
        assert_eq!(t.table_bytes(), 1 + ENTRY_OVERHEAD, "tracked");
        assert!(
            buffer.is_unique(),
            "the table holds a slice of the read buffer"
        );
        // nor does an inbox of a BCAST client that has not drained it yet
        let b = reg.register(2, None, None);
        let bcast = Mode {
            bcast: true,
            ..Mode::default()
        };
        t.on(2, &bcast, b.entry.clone(), &b.entry);
        t.invalidate(&[buffer.slice(0..1)], None);
        assert!(
            drained(&a.entry, Proto::Resp3).is_some(),
            "the reader heard"
        );
        assert!(
            buffer.is_unique(),
            "a BCAST inbox holds a slice of the buffer"
        );
        assert!(drained(&b.entry, Proto::Resp3).is_some(), "so did BCAST");
    }

    #[test]
    fn flush_all_reaches_every_tracking_client() {
        let reg = Registry::new(1024);
        let (a, b) = (reg.register(1, None, None), reg.register(2, None, None));
        let t = ClientTracking::default();
        t.on(1, &Mode::default(), a.entry.clone(), &a.entry);
        t.on(2, &Mode::default(), a.entry.clone(), &b.entry); // 2 redirects to 1
        t.read(2, &[&key("k")]);
        t.flush_all();
        assert_eq!(
            drained(&a.entry, Proto::Resp2).as_deref(),
            Some("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n")
        );
        assert_eq!(drained(&b.entry, Proto::Resp3), None);
        assert_eq!(t.table_bytes(), 0);
    }
}
