//! Write-through: which of Pake's own writes tell the L1 a key's new value, and what it is.
//!
//! A write Pake forwards and sees acknowledged (`SET`, `SETEX`, `PSETEX`, `SET … EX/PX/KEEPTTL`,
//! `GETSET`, `SET … GET`, `MSET`, `HSET`/`HMSET`, `DEL`/`UNLINK`) determines what a later
//! `GET` (or `HGET` of a written field) answers; refilling the L1 with it keeps the hit rate
//! of a read-mostly mix above what invalidate-only can reach (every write cost the next read
//! of its key). Writes whose outcome the arguments do not fix are not planned: `SET … NX/XX`
//! (may not happen), `EXAT`/`PXAT` (an absolute clock), anything with a syntax Redis would
//! refuse.
//!
//! # Why no stale read is possible
//!
//! Planned writes are not sent through the fred pools but through the node's tracking
//! connection ([`super::tracking`]), which runs `CLIENT TRACKING ON BCAST NOLOOP` in RESP3:
//! invalidation pushes and replies arrive on that one connection, in the order Redis wrote
//! them, and one task reads them in order. Redis (`tracking.c`) collects the keys changed
//! in an event-loop cycle, remembering for each the *last* client that changed it, and
//! pushes them in `beforeSleep`; NOLOOP leaves out only keys whose last change in that cycle
//! was this connection's. So for Pake's write `W` of key `k`:
//!
//! 1. `W`'s reply is appended while `W` executes; the push for `W`'s cycle is appended
//!    later, in `beforeSleep`: every push that can mention a write made after `W` comes
//!    after `W`'s reply on the stream.
//! 2. A write to `k` made after `W` by anyone else (in `W`'s cycle or a later one) makes
//!    that client the last changer of `k` in its cycle, so its push names `k` (NOLOOP does
//!    not filter it), and by 1 it is read after `W`'s reply. An expiry or eviction has no
//!    client and is never filtered either.
//! 3. The task handles `W`'s reply before reading the next frame: it bumps `k`'s generation
//!    (every reply cached about `k` before — `STRLEN`, `HGETALL`, fills of reads in flight —
//!    stops being valid), takes a fresh [`Ticket`](super::l1::Ticket), and fills `GET k`
//!    with `W`'s value under it. The push of 2, handled later by the same task, bumps the
//!    generation again, so the fill is never served after it.
//! 4. Between `W`'s reply and that push the L1 answers `W`'s value although Redis already
//!    holds a newer one: the same window as for any cached read (a write elsewhere is seen
//!    once its invalidation arrives), bounded by `tracking_max_lag`, after which the stream
//!    is declared lagging and the node flushed.
//!
//! Where the TTL is not fixed by the arguments (`KEEPTTL`, `HSET` on a hash that may expire),
//! a `PTTL` is pipelined behind the write on the same connection; the fill waits for it and
//! is dropped if any invalidation of the key came in between (the ticket no longer holds).
//! TTLs are counted from when the write was sent, so the L1 entry never outlives the key.
//! A session sends a write this way only when it has nothing else in flight and nothing
//! more buffered, and waits for it before its next command, so its commands still reach
//! Redis in the order it sent them.

use super::l1::{CacheKey, Ticket, L1};
use super::resp::encode::{self, Proto};
use bytes::{Bytes, BytesMut};
use std::time::{Duration, Instant};

/// What the key's TTL is after the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// None: the write cleared it (SET, MSET, GETSET) or the key is gone (DEL).
    Cleared,
    /// Set by the write (EX, PX, SETEX, PSETEX).
    Fixed(Duration),
    /// Unknown from the arguments: a PTTL is pipelined after the write.
    AskRedis,
}

/// What the write's reply must be for the fills to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `+OK`
    Ok,
    /// A bulk string or null (GETSET, SET … GET: the old value).
    Value,
    /// An integer (DEL, HSET).
    Int,
}

/// One cached reply the write determines: `GET key` or `HGET key field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub hash_field: Option<Bytes>,
    pub key: Bytes,
    /// The new value, `None` when the key is gone.
    pub value: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every key the write changes (their generations are bumped on the reply).
    pub keys: Vec<Bytes>,
    pub fills: Vec<Fill>,
    pub ttl: Ttl,
    pub expect: Expect,
}

fn num(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok().filter(|&n| n > 0)
}

fn fill(key: &Bytes, value: Option<&Bytes>) -> Fill {
    Fill {
        hash_field: None,
        key: key.clone(),
        value: value.cloned(),
    }
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT|PXAT|KEEPTTL]`
fn plan_set(args: &[Bytes]) -> Option<Plan> {
    let (key, value) = (args.get(1)?, args.get(2)?);
    let mut ttl = Ttl::Cleared;
    let mut expect = Expect::Ok;
    let mut i = 3;
    while let Some(opt) = args.get(i) {
        let is = |name: &[u8]| opt.eq_ignore_ascii_case(name);
        if is(b"GET") {
            expect = Expect::Value;
        } else if is(b"KEEPTTL") && ttl == Ttl::Cleared {
            ttl = Ttl::AskRedis;
        } else if (is(b"EX") || is(b"PX")) && ttl == Ttl::Cleared {
            let n = num(args.get(i + 1)?)?;
            let d = match is(b"EX") {
                true => Duration::from_secs(n),
                false => Duration::from_millis(n),
            };
            ttl = Ttl::Fixed(d);
            i += 1;
        } else {
            // NX, XX (may not happen), EXAT/PXAT, repeats, or a syntax error: no plan
            return None;
        }
        i += 1;
    }
    Some(Plan {
        keys: vec![key.clone()],
        fills: vec![fill(key, Some(value))],
        ttl,
        expect,
    })
}

/// The `name value` pairs with each name once, holding its last value, as Redis applies
/// them; in the order of those last pairs. Linear: a retain per pair made a 20,000-pair
/// MSET take 0.39 s of Pake's CPU (0.03 s without the L1).
fn last_of_each(pairs: &[Bytes]) -> impl Iterator<Item = &[Bytes]> {
    let mut seen = std::collections::HashSet::with_capacity(pairs.len() / 2);
    let mut kept: Vec<&[Bytes]> = (pairs.chunks(2).rev())
        .filter(|p| seen.insert(&p[0]))
        .collect();
    kept.reverse();
    kept.into_iter()
}

/// `HSET key field value [field value …]` (also HMSET): the written fields' HGET replies.
fn plan_hset(args: &[Bytes], expect: Expect) -> Option<Plan> {
    let key = args.get(1)?;
    let pairs = args.get(2..)?;
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return None;
    }
    let fills = last_of_each(pairs)
        .map(|pair| Fill {
            hash_field: Some(pair[0].clone()),
            key: key.clone(),
            value: Some(pair[1].clone()),
        })
        .collect();
    Some(Plan {
        keys: vec![key.clone()],
        fills,
        ttl: Ttl::AskRedis,
        expect,
    })
}

/// Arguments a planned write may have: 256 MSET pairs, HSET fields or DEL keys. A bigger
/// write is forwarded with its keys invalidated on the reply: its fills would run on the
/// tracking connection's task, one L1 insert each, ahead of every invalidation behind them.
pub const MAX_PLAN_ARGS: usize = 2 + 2 * 256;

/// The plan for a write (`name` as spelled in the command table), or `None` when its
/// outcome is not known from its arguments or it has more than [`MAX_PLAN_ARGS`].
pub fn plan(name: &str, args: &[Bytes]) -> Option<Plan> {
    if args.len() > MAX_PLAN_ARGS {
        return None;
    }
    let one = |ttl: Ttl, value: usize, expect: Expect| {
        let key = args.get(1)?;
        Some(Plan {
            keys: vec![key.clone()],
            fills: vec![fill(key, Some(args.get(value)?))],
            ttl,
            expect,
        })
    };
    match name {
        "SET" => plan_set(args),
        "GETSET" if args.len() == 3 => one(Ttl::Cleared, 2, Expect::Value),
        "SETEX" | "PSETEX" if args.len() == 4 => {
            let n = num(args.get(2)?)?;
            let d = match name {
                "SETEX" => Duration::from_secs(n),
                _ => Duration::from_millis(n),
            };
            one(Ttl::Fixed(d), 3, Expect::Ok)
        }
        "MSET" => {
            let pairs = args.get(1..)?;
            if pairs.is_empty() || pairs.len() % 2 != 0 {
                return None;
            }
            let fills: Vec<Fill> = last_of_each(pairs)
                .map(|pair| fill(&pair[0], Some(&pair[1])))
                .collect();
            let keys = fills.iter().map(|f| f.key.clone()).collect();
            Some(Plan {
                keys,
                fills,
                ttl: Ttl::Cleared,
                expect: Expect::Ok,
            })
        }
        "DEL" | "UNLINK" => {
            let keys: Vec<Bytes> = args.get(1..)?.to_vec();
            if keys.is_empty() {
                return None;
            }
            let fills = keys.iter().map(|k| fill(k, None)).collect();
            Some(Plan {
                keys,
                fills,
                ttl: Ttl::Cleared,
                expect: Expect::Int,
            })
        }
        "HSET" => plan_hset(args, Expect::Int),
        "HMSET" => plan_hset(args, Expect::Ok),
        _ => None,
    }
}

impl Plan {
    /// Does `reply` (as Redis sent it) mean the write happened as planned?
    pub fn accepts(&self, reply: &[u8]) -> bool {
        match self.expect {
            Expect::Ok => reply == b"+OK\r\n",
            Expect::Value => matches!(reply.first(), Some(b'$' | b'_')),
            Expect::Int => reply.first() == Some(&b':'),
        }
    }

    /// Step 3 of the argument above, on the write's reply: bump every written key, then take
    /// a ticket for each fill (`None` where its slot is not armed).
    pub fn acknowledged(&self, l1: &L1) -> Vec<Option<Ticket>> {
        for k in &self.keys {
            l1.invalidate_key(k);
        }
        self.fills
            .iter()
            .map(|f| l1.ticket(super::commands::slot(&f.key), &f.key))
            .collect()
    }

    /// Fill the L1 under the tickets taken on the reply. `ttl` is the key's TTL as the write
    /// or a PTTL reply gave it (`None`: no TTL); it runs from `sent`, when the write left.
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &self,
        l1: &L1,
        tickets: &[Option<Ticket>],
        ttl: Option<Duration>,
        sent: Instant,
        db: u8,
        proto: Proto,
        ids: CommandIds,
    ) {
        let remaining = match ttl {
            Some(t) => match t.checked_sub(sent.elapsed()) {
                Some(r) if !r.is_zero() => Some(r),
                _ => return,
            },
            None => None,
        };
        for (f, t) in self.fills.iter().zip(tickets) {
            let Some(t) = *t else { continue };
            let mut out = BytesMut::new();
            match &f.value {
                Some(v) => encode::bulk(&mut out, v),
                None => encode::null(&mut out, proto),
            }
            let key = match &f.hash_field {
                Some(field) => {
                    CacheKey::new(ids.hget, &[f.key.clone(), field.clone()], db, 0, proto)
                }
                None => CacheKey::new(ids.get, std::slice::from_ref(&f.key), db, 0, proto),
            };
            l1.insert(key, out.freeze(), t, remaining);
        }
    }
}

/// The command-table ids the fills are cached under.
#[derive(Debug, Clone, Copy)]
pub struct CommandIds {
    pub get: u16,
    pub hget: u16,
}

impl CommandIds {
    pub fn lookup() -> CommandIds {
        let t = super::commands::Table::get();
        let id = |n: &[u8]| t.lookup(n).map_or(u16::MAX, |s| s.id as u16);
        CommandIds {
            get: id(b"GET"),
            hget: id(b"HGET"),
        }
    }
}

/// The key's TTL from a PTTL reply: `Some(None)` no TTL, `None` no key (or not a number).
pub fn pttl(reply: &[u8]) -> Option<Option<Duration>> {
    let n: i64 = reply
        .strip_prefix(b":")
        .and_then(|r| std::str::from_utf8(r).ok())
        .and_then(|r| r.trim_end().parse().ok())?;
    match n {
        -1 => Some(None),
        n if n >= 0 => Some(Some(Duration::from_millis(n as u64))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::commands::tests::args;

    fn p(s: &str) -> Option<Plan> {
        let a = args(s);
        plan(std::str::from_utf8(&a[0]).unwrap(), &a)
    }

    #[test]
    fn which_writes_are_planned() {
        let set = p("SET k v").unwrap();
        assert_eq!(set.ttl, Ttl::Cleared);
        assert_eq!(set.fills[0].value.as_deref(), Some(&b"v"[..]));
        assert_eq!(
            p("SET k v ex 10").unwrap().ttl,
            Ttl::Fixed(Duration::from_secs(10))
        );
        assert_eq!(p("SET k v PX 5 GET").unwrap().expect, Expect::Value);
        assert_eq!(p("SET k v KEEPTTL").unwrap().ttl, Ttl::AskRedis);
        for never in [
            "SET k v NX",
            "SET k v XX",
            "SET k v EXAT 1",
            "SET k v EX",
            "SET k v EX 0",
            "SET k v EX -1",
            "SET k v EX 1 PX 1",
            "SET k v BOGUS",
            "SET k",
            "SETEX k 0 v",
            "SETEX k v",
            "HSET h f",
            "MSET a 1 b",
            "INCR k",
        ] {
            assert_eq!(p(never), None, "{never}");
        }
        assert_eq!(
            p("PSETEX k 150 v").unwrap().ttl,
            Ttl::Fixed(Duration::from_millis(150))
        );
        let m = p("MSET a 1 b 2 a 3").unwrap();
        assert_eq!(m.keys, args("b a"), "the last value of a key wins");
        assert_eq!(m.fills[1].value.as_deref(), Some(&b"3"[..]));
        let d = p("DEL a b").unwrap();
        assert!(d.fills.iter().all(|f| f.value.is_none()));
        let h = p("HSET h f 1 g 2 f 3").unwrap();
        assert_eq!(h.ttl, Ttl::AskRedis);
        assert_eq!(h.fills.len(), 2);
        assert_eq!(h.fills[1].value.as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn a_write_past_the_plan_limit_is_not_planned() {
        let pairs = |n: usize| {
            (0..n)
                .map(|i| format!("k{} v{i}", i % 300))
                .collect::<Vec<_>>()
        };
        let most = format!("MSET {}", pairs(256).join(" "));
        assert_eq!(p(&most).map(|m| m.fills.len()), Some(256));
        assert_eq!(p(&format!("MSET {}", pairs(257).join(" "))), None);
        assert_eq!(p(&format!("HSET h {}", pairs(257).join(" "))), None);
        let keys: Vec<String> = (0..MAX_PLAN_ARGS).map(|i| format!("k{i}")).collect();
        assert_eq!(p(&format!("DEL {}", keys.join(" "))), None);
    }

    #[test]
    fn replies_and_ttls() {
        let set = p("SET k v").unwrap();
        assert!(set.accepts(b"+OK\r\n"));
        assert!(!set.accepts(b"-ERR nope\r\n"));
        assert!(p("GETSET k v").unwrap().accepts(b"_\r\n"));
        assert!(!p("GETSET k v").unwrap().accepts(b"-WRONGTYPE x\r\n"));
        assert!(p("DEL k").unwrap().accepts(b":1\r\n"));
        assert_eq!(pttl(b":-1\r\n"), Some(None));
        assert_eq!(pttl(b":1500\r\n"), Some(Some(Duration::from_millis(1500))));
        assert_eq!(pttl(b":-2\r\n"), None);
        assert_eq!(pttl(b"-MOVED 1 x\r\n"), None);
    }

    #[test]
    fn fills_respect_tickets_and_ttls() {
        let m = super::super::metrics::RedisMetrics::new(&prometheus::Registry::new());
        let l1 = L1::new(1 << 20, 1024, Duration::from_secs(60), m);
        l1.set_armed(super::super::l1::ALL_SLOTS, true, "test");
        let ids = CommandIds::lookup();
        let get = |k: &str| {
            let key = CacheKey::new(
                ids.get,
                &[Bytes::copy_from_slice(k.as_bytes())],
                0,
                0,
                Proto::Resp2,
            );
            l1.get(&key)
        };
        let set = p("SET k v").unwrap();
        let t = set.acknowledged(&l1);
        set.fill(&l1, &t, None, Instant::now(), 0, Proto::Resp2, ids);
        assert_eq!(get("k").as_deref(), Some(&b"$1\r\nv\r\n"[..]));
        // an invalidation between the reply and the fill (a PTTL round trip) wins
        let t = set.acknowledged(&l1);
        l1.invalidate_key(b"k");
        set.fill(&l1, &t, None, Instant::now(), 0, Proto::Resp2, ids);
        assert_eq!(get("k"), None);
        // a TTL that has run out while the reply travelled: not cached
        let t = set.acknowledged(&l1);
        let long_ago = Instant::now() - Duration::from_millis(50);
        set.fill(
            &l1,
            &t,
            Some(Duration::from_millis(10)),
            long_ago,
            0,
            Proto::Resp2,
            ids,
        );
        assert_eq!(get("k"), None);
        let del = p("DEL k").unwrap();
        let t = del.acknowledged(&l1);
        del.fill(&l1, &t, None, Instant::now(), 0, Proto::Resp2, ids);
        assert_eq!(get("k").as_deref(), Some(&b"$-1\r\n"[..]), "known absent");
    }
}
