//! Each thread's near copies of the L1 entries it reads most.
//!
//! A hit in moka pays for its shared probe, its read recording (a channel every thread
//! writes) and the housekeeping that replays the recording. A thread therefore keeps copies
//! of the small entries it reads most, in a set-associative table of [`SETS`] × [`WAYS`]. A
//! copy is served only under its entry's own rule (its ticket still holds, not expired, see
//! [`super::L1::get`]), so it can never outlive an invalidation, and its bytes are the
//! thread's own, so a hit writes no cache line another thread reads.
//!
//! What a hit costs is mostly memory it finds cold (the client's and Redis's work between two
//! hits evicts it): a profile of the first version, whose copy was a key and a reply in
//! allocations of their own, spent more time in the key's comparison and the reply's copy
//! than in the rest of the lookup. So a copy is one allocation: a fixed header (owner,
//! ticket, expiry, the key's fields), then the key's arguments, then the reply: a hit reads
//! the set's tags, the set's four pointers, and one run of adjacent bytes.
//!
//! Which copies stay: each way counts its hits (up to [`MAX_FREQ`]). A candidate takes an
//! empty way (a copy found no longer valid is dropped when read), or the least-hit way once
//! its count is zero; otherwise it is refused and every count in the set drops by one. So a
//! key read once does not push out a key read a thousand times (the direct-mapped table this
//! replaces copied on every moka hit and lost its hottest keys to the Zipf tail).
//!
//! Bounded by construction: replies up to [`MAX_REPLY`] bytes and keys up to [`MAX_KEY`]
//! only, and at most [`MAX_BYTES`] of copies per thread (outside the L1's byte budget), on
//! top of the table itself (~0.7 MiB per thread that ever reads the L1).

use super::{CacheKey, Entry, Ticket};
use crate::redis::resp::encode::Proto;
use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Instant;

/// Copies per set, and sets per thread (a power of two).
pub const WAYS: usize = 4;
pub const SETS: usize = 8192;
/// Largest reply, and largest key arguments, a thread copies.
pub const MAX_REPLY: usize = 512;
pub const MAX_KEY: usize = 256;
/// Bytes one thread's copies may take in all (headers, keys, replies, allocation overhead).
pub const MAX_BYTES: usize = 4 << 20;
/// Hit counts saturate here: a key cold for this many refused candidates can be replaced.
const MAX_FREQ: u8 = 15;
/// Per copy on top of its bytes: its pointer in the table and the allocator's bookkeeping.
const COPY_OVERHEAD: usize = 32;

/// The header's layout (little-endian): owner, the ticket, the key's fields, the expiry.
const OWNER: usize = 0;
const GLOBAL: usize = 8;
const SLOT_EPOCH: usize = 16;
const KEY_GEN: usize = 20;
const STRIPE: usize = 24;
const SLOT: usize = 28;
const CMD: usize = 30;
const USER: usize = 32;
const DB: usize = 36;
const PROTO: usize = 37;
const KEY_LEN: usize = 38;
const EXPIRES: usize = 40;
const KEY_SLOT: usize = 48;
const HEAD: usize = 50;

/// One set's tags (the key's hash, never 0; 0 marks an empty way) and hit counts.
#[derive(Default, Clone, Copy)]
struct Set {
    tags: [u32; WAYS],
    freq: [u8; WAYS],
}

pub struct Front {
    sets: Box<[Set]>,
    ways: Box<[Option<Box<[u8]>>]>,
    bytes: usize,
}

thread_local! {
    pub static FRONT: RefCell<Front> = RefCell::new(Front::new());
}

fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32 | 1
}

fn set_of(hash: u64) -> usize {
    (hash as usize) & (SETS - 1)
}

/// Expiries are kept as nanoseconds since the first copy of the process.
fn nanos(t: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

fn u16_at(c: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([c[at], c[at + 1]])
}

fn u32_at(c: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]])
}

fn u64_at(c: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&c[at..at + 8]);
    u64::from_le_bytes(b)
}

fn proto_byte(p: Proto) -> u8 {
    match p {
        Proto::Resp2 => 2,
        Proto::Resp3 => 3,
    }
}

/// A copy's bytes: the header, the key's arguments, the reply.
fn encode(owner: u64, key: &CacheKey, entry: &Entry) -> Box<[u8]> {
    let t = &entry.ticket;
    let mut c = Vec::with_capacity(HEAD + key.args.len() + entry.reply.len());
    c.extend_from_slice(&owner.to_le_bytes());
    c.extend_from_slice(&t.global.to_le_bytes());
    c.extend_from_slice(&t.slot_epoch.to_le_bytes());
    c.extend_from_slice(&t.key_gen.to_le_bytes());
    c.extend_from_slice(&t.stripe.to_le_bytes());
    c.extend_from_slice(&t.slot.to_le_bytes());
    c.extend_from_slice(&key.cmd.to_le_bytes());
    c.extend_from_slice(&key.user.to_le_bytes());
    c.push(key.db);
    c.push(proto_byte(key.proto));
    c.extend_from_slice(&(key.args.len() as u16).to_le_bytes());
    c.extend_from_slice(&nanos(entry.expires).to_le_bytes());
    c.extend_from_slice(&key.slot.to_le_bytes());
    debug_assert_eq!(c.len(), HEAD);
    c.extend_from_slice(&key.args);
    c.extend_from_slice(&entry.reply);
    c.into_boxed_slice()
}

/// Is `c` the copy of `key` in cache `owner`? Returns where its reply starts.
fn matches(c: &[u8], owner: u64, key: &CacheKey) -> Option<usize> {
    let key_len = usize::from(u16_at(c, KEY_LEN));
    let same = u64_at(c, OWNER) == owner
        && key_len == key.args.len()
        && u16_at(c, CMD) == key.cmd
        && u16_at(c, KEY_SLOT) == key.slot
        && u32_at(c, USER) == key.user
        && c[DB] == key.db
        && c[PROTO] == proto_byte(key.proto)
        && c[HEAD..HEAD + key_len] == key.args[..];
    same.then_some(HEAD + key_len)
}

fn ticket_of(c: &[u8]) -> Ticket {
    Ticket {
        global: u64_at(c, GLOBAL),
        slot_epoch: u32_at(c, SLOT_EPOCH),
        key_gen: u32_at(c, KEY_GEN),
        stripe: u32_at(c, STRIPE),
        slot: u16_at(c, SLOT),
    }
}

impl Front {
    fn new() -> Front {
        Front {
            sets: vec![Set::default(); SETS].into_boxed_slice(),
            ways: (0..SETS * WAYS).map(|_| None).collect(),
            bytes: 0,
        }
    }

    /// The reply copied for `key` (of cache `owner`, hashed `hash`) when `valid` accepts its
    /// ticket at `now`, borrowed from the copy (the caller writes it where it goes, so a hit
    /// allocates nothing); a copy no longer valid is dropped.
    pub fn get(
        &mut self,
        owner: u64,
        hash: u64,
        key: &CacheKey,
        now: Instant,
        valid: impl FnOnce(&Ticket) -> bool,
    ) -> Option<&[u8]> {
        let s = set_of(hash);
        let t = tag(hash);
        let w = self.sets[s].tags.iter().position(|&x| x == t)?;
        let c = self.ways[s * WAYS + w].as_deref()?;
        let reply_at = matches(c, owner, key)?;
        if nanos(now) >= u64_at(c, EXPIRES) || !valid(&ticket_of(c)) {
            self.remove(s, w);
            return None;
        }
        let f = &mut self.sets[s].freq[w];
        *f = (*f + 1).min(MAX_FREQ);
        self.ways[s * WAYS + w].as_deref().map(|c| &c[reply_at..])
    }

    fn remove(&mut self, s: usize, w: usize) {
        if let Some(old) = self.ways[s * WAYS + w].take() {
            self.bytes -= old.len() + COPY_OVERHEAD;
        }
        self.sets[s].tags[w] = 0;
        self.sets[s].freq[w] = 0;
    }

    /// Offer a copy of an entry just hit in moka; kept when its set has room for it (the
    /// module's admission rule).
    pub fn offer(&mut self, owner: u64, hash: u64, key: &CacheKey, entry: &Entry) {
        if entry.reply.len() > MAX_REPLY || key.args.len() > MAX_KEY {
            return;
        }
        let size = HEAD + key.args.len() + entry.reply.len() + COPY_OVERHEAD;
        let (s, t) = (set_of(hash), tag(hash));
        let set = &mut self.sets[s];
        let way = match set.tags.iter().position(|&x| x == t || x == 0) {
            Some(w) => w,
            None => {
                let Some((w, &least)) = set.freq.iter().enumerate().min_by_key(|(_, f)| **f) else {
                    return;
                };
                if least > 0 {
                    for f in &mut set.freq {
                        *f -= 1;
                    }
                    return;
                }
                w
            }
        };
        self.remove(s, way);
        if self.bytes + size > MAX_BYTES {
            return;
        }
        self.bytes += size;
        self.ways[s * WAYS + way] = Some(encode(owner, key, entry));
        self.sets[s].tags[way] = t;
        self.sets[s].freq[way] = 1;
    }

    /// Bytes held by copies (for tests).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn key(i: usize) -> CacheKey {
        CacheKey::new(3, &[Bytes::from(format!("key:{i}"))], 0, 0, Proto::Resp2)
    }

    fn entry(reply: &[u8]) -> Entry {
        Entry {
            reply: Bytes::copy_from_slice(reply),
            ticket: Ticket {
                global: 1,
                slot_epoch: 2,
                key_gen: 3,
                stripe: 4,
                slot: 5,
            },
            expires: Instant::now() + Duration::from_secs(60),
        }
    }

    /// Every key lands in one set: the hash picks the set with its low bits and the tag
    /// with its high bits.
    fn hash(i: usize) -> u64 {
        ((i as u64 * 2 + 2) << 32) | 7
    }

    #[test]
    fn a_copy_round_trips_and_answers_only_its_own_key() {
        let mut f = Front::new();
        let e = entry(b"+v\r\n");
        f.offer(9, hash(1), &key(1), &e);
        let now = Instant::now();
        let got = f.get(9, hash(1), &key(1), now, |t| *t == e.ticket);
        assert_eq!(got, Some(&b"+v\r\n"[..]));
        assert_eq!(
            f.get(8, hash(1), &key(1), now, |_| true),
            None,
            "another cache"
        );
        let other = CacheKey {
            proto: Proto::Resp3,
            ..key(1)
        };
        assert_eq!(
            f.get(9, hash(1), &other, now, |_| true),
            None,
            "another protocol"
        );
        // a ticket that no longer holds drops the copy
        assert_eq!(f.get(9, hash(1), &key(1), now, |_| false), None);
        assert_eq!(f.get(9, hash(1), &key(1), now, |_| true), None);
        assert_eq!(f.bytes(), 0);
        // so does its expiry
        f.offer(9, hash(1), &key(1), &e);
        let later = now + Duration::from_secs(61);
        assert_eq!(f.get(9, hash(1), &key(1), later, |_| true), None);
    }

    /// A set full of keys read often refuses a key read once, until the set's counts have
    /// worn down; then it takes the place of the least read.
    #[test]
    fn a_key_read_once_does_not_push_out_hot_keys() {
        let mut f = Front::new();
        let e = entry(b"+v\r\n");
        let now = Instant::now();
        for i in 0..WAYS {
            f.offer(1, hash(i), &key(i), &e);
            for _ in 0..=i {
                assert!(f.get(1, hash(i), &key(i), now, |_| true).is_some());
            }
        }
        // way 0 was read once after its copy (count 2): two refusals wear it to zero
        f.offer(1, hash(100), &key(100), &e);
        f.offer(1, hash(101), &key(101), &e);
        for i in 0..WAYS {
            assert!(
                f.get(1, hash(i), &key(i), now, |_| true).is_some(),
                "key {i}"
            );
        }
        assert!(f.get(1, hash(100), &key(100), now, |_| true).is_none());
        // the reads above left counts 1, 2, 3, 4: one refusal, then the least read goes
        f.offer(1, hash(102), &key(102), &e);
        f.offer(1, hash(103), &key(103), &e);
        let held: Vec<bool> = (0..WAYS)
            .map(|i| f.get(1, hash(i), &key(i), now, |_| true).is_some())
            .collect();
        assert_eq!(held, [false, true, true, true]);
        assert!(f.get(1, hash(103), &key(103), now, |_| true).is_some());
    }

    #[test]
    fn copies_are_bounded_in_size_and_bytes() {
        let mut f = Front::new();
        f.offer(1, hash(1), &key(1), &entry(&[b'x'; MAX_REPLY + 1]));
        assert_eq!(f.bytes(), 0, "a reply over MAX_REPLY is not copied");
        let big = entry(&[b'x'; MAX_REPLY]);
        let per = HEAD + key(0).args.len() + MAX_REPLY + COPY_OVERHEAD;
        for i in 0..SETS * WAYS {
            // spread over every set
            let h = ((i as u64 * 2 + 2) << 32) | (i as u64 % SETS as u64);
            f.offer(1, h, &key(i % 10), &big);
        }
        assert!(f.bytes() <= MAX_BYTES);
        assert!(f.bytes() > MAX_BYTES - per, "filled up to the limit");
    }
}
