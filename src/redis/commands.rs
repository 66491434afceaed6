//! The command table: for each Redis command, its arity, whether it reads, writes or may be
//! served from the L1, where its keys are, and how the session handles it (forward, split
//! across slots and merge, pin to a dedicated link, answer locally, broadcast).
//!
//! Everything the session decides about a command comes from here, so routing, caching and
//! invalidation agree. Commands absent from the table are refused with Redis's own
//! `unknown command` error: without key positions Pake could neither route them in a
//! cluster nor know what they write.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Reads data.
pub const READ: u16 = 1;
/// Modifies data: its keys are invalidated locally before the reply is acknowledged.
pub const WRITE: u16 = 1 << 1;
/// Deterministic read whose reply may be served from the L1.
pub const CACHE: u16 = 1 << 2;
/// Reply depends on randomness or iteration state (never cached, flagged for clarity).
pub const RANDOM: u16 = 1 << 3;
/// Modifies the whole keyspace of a node (FLUSHALL, FLUSHDB, SWAPDB): flushes the L1.
pub const FLUSH: u16 = 1 << 4;
/// May write keys its key positions do not name: a script (EVAL, FCALL: keys it was not
/// given), a STORE option (SORT, GEORADIUS…: the destination is not a listed key),
/// `COPY … DB` (another database's key).
pub const UNLISTED: u16 = 1 << 5;
/// Delivers a message to subscribers: waits for the subscriptions Pake read before it to be
/// open ([`crate::redis::pubsub`]).
pub const PUBLISHES: u16 = 1 << 6;
/// Opens a subscription: publishes read after it wait until Redis confirms it.
pub const SUBSCRIBES: u16 = 1 << 7;

/// Where the keys are among the arguments (argument 0 is the command name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    None,
    /// `first..=last` by `step`; a negative `last` counts from the end (-1: last argument).
    Range {
        first: u8,
        last: i8,
        step: u8,
    },
    /// A count at `at`, then that many keys; `before` extra keys precede the count
    /// (ZUNIONSTORE's destination).
    NumKeys {
        at: u8,
        before: u8,
    },
    /// After the STREAMS token, the first half of the remaining arguments (XREAD).
    Streams,
    /// Subcommand in argument 1, key in argument 2 (OBJECT, MEMORY USAGE, XINFO…).
    Sub2,
}

/// How the session treats a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Forwarded on the shared connections, routed by its keys (which must share a slot).
    Plain,
    /// Multi-key command split by slot and merged in order.
    Split(Merge),
    /// Blocks the connection: run on a dedicated link.
    Blocking,
    /// XREAD/XREADGROUP: blocking only with the BLOCK option.
    StreamRead,
    /// Enters subscribed mode: the client is piped to a dedicated link from then on.
    Subscribe,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    /// Sent to every primary; replies merged.
    Broadcast(Merge),
    Ping,
    Quit,
    Select,
    Hello,
    Auth,
    Client,
    Reset,
    /// Streams the commands passing through Pake (Pake-level MONITOR).
    Monitor,
    /// Forwarded on the dedicated link and answered with Redis's bytes as they are: replies
    /// whose RESP3 shape the shared path would not carry byte-exact (COMMAND's sets of
    /// maps, set order), and DEBUG, whose crafted errors (LOADING, READONLY…) must reach
    /// the client and not Pake's pool.
    Raw,
    /// SCAN: forwarded to a single Redis; walks every primary of a cluster (merged cursor).
    Scan,
    /// Answered `+OK` locally (READONLY, READWRITE).
    Ok,
    /// Refused: cannot work through a multiplexing proxy.
    Unsupported(&'static str),
}

/// How the replies of split or broadcast parts combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Arrays concatenated in key order (MGET, KEYS).
    Concat,
    /// `+OK` when every part said OK (MSET, FLUSHALL).
    AllOk,
    /// Integers added up (DEL, UNLINK, EXISTS, TOUCH, DBSIZE).
    Sum,
    /// The first part's reply (SCRIPT LOAD: the same SHA everywhere).
    First,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    /// Redis arity: exact argument count including the name, or at least `-arity`.
    pub arity: i16,
    pub flags: u16,
    pub keys: Keys,
    pub kind: Kind,
    /// Position in the table: index for per-command metrics.
    pub id: usize,
}

impl Spec {
    pub fn is(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Does this write change only the keys its key positions name? Not so for a flush, a
    /// write without keys, or one flagged [`UNLISTED`].
    pub fn changes_only_its_keys(&self) -> bool {
        !self.is(FLUSH | UNLISTED) && self.keys != Keys::None
    }

    /// Redis's arity, and for key/value lists (MSET) whole pairs: Redis refuses `MSET a 1 b`
    /// as a wrong number of arguments, and a split by slot must never cut a pair.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity;
        let count_ok = if a >= 0 {
            argc == a as usize
        } else {
            argc >= a.unsigned_abs() as usize
        };
        let pairs_ok = match self.keys {
            Keys::Range {
                first,
                last: -1,
                step,
            } if step > 1 => argc.saturating_sub(usize::from(first)) % usize::from(step) == 0,
            _ => true,
        };
        count_ok && pairs_ok
    }

    /// Does the command name exactly one key ([`Spec::key_positions`] of length one)? Asked
    /// for every cacheable read, so the common one-key case allocates nothing.
    pub fn one_key(&self, args: &[Bytes]) -> bool {
        match self.keys {
            Keys::Range {
                first: 1,
                last: 1,
                step: 1,
            } => args.len() > 1,
            _ => self.key_positions(args).len() == 1,
        }
    }

    /// Positions of the key arguments (empty when malformed: Redis will say why).
    pub fn key_positions(&self, args: &[Bytes]) -> Vec<usize> {
        let n = args.len();
        match self.keys {
            Keys::None => Vec::new(),
            Keys::Range { first, last, step } => {
                let first = first as usize;
                let last = if last < 0 {
                    n as i64 + i64::from(last)
                } else {
                    i64::from(last)
                };
                if first >= n || last < first as i64 {
                    return Vec::new();
                }
                let last = (last as usize).min(n - 1);
                let step = usize::from(step.max(1));
                // MSET-style groups (key, value…): every key needs its whole group, or the
                // command is malformed and a cluster split would cut a group short
                if step > 1 && (last - first + 1) % step != 0 {
                    return Vec::new();
                }
                (first..=last).step_by(step).collect()
            }
            Keys::NumKeys { at, before } => {
                let at = at as usize;
                let count = args
                    .get(at)
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .and_then(|c| c.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut keys: Vec<usize> = (1..=before as usize).filter(|&i| i < n).collect();
                // the count is client text: past the end (or near usize::MAX) it names no keys
                if at.checked_add(count).is_some_and(|last| last < n) {
                    keys.extend(at + 1..=at + count);
                }
                keys
            }
            Keys::Streams => {
                let Some(pos) = args.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS")) else {
                    return Vec::new();
                };
                let rest = n - pos - 1;
                if rest == 0 || rest % 2 != 0 {
                    return Vec::new();
                }
                (pos + 1..pos + 1 + rest / 2).collect()
            }
            Keys::Sub2 => {
                if n > 2 {
                    vec![2]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

const fn range(first: u8, last: i8, step: u8) -> Keys {
    Keys::Range { first, last, step }
}
const ONE: Keys = range(1, 1, 1);
const TWO: Keys = range(1, 2, 1);
const ALL: Keys = range(1, -1, 1);
const PAIRS: Keys = range(1, -1, 2);
/// BLPOP-style: every argument but the trailing timeout.
const BLOCK_KEYS: Keys = range(1, -2, 1);
const NK1: Keys = Keys::NumKeys { at: 1, before: 0 };
const NK2: Keys = Keys::NumKeys { at: 2, before: 0 };
const DEST_NK2: Keys = Keys::NumKeys { at: 2, before: 1 };

const R: u16 = READ;
const RC: u16 = READ | CACHE;
const W: u16 = WRITE;
const RR: u16 = READ | RANDOM;
const WR: u16 = WRITE | RANDOM;
const WU: u16 = WRITE | UNLISTED;
const P: Kind = Kind::Plain;
const B: Kind = Kind::Blocking;

const fn c(name: &'static str, arity: i16, flags: u16, keys: Keys, kind: Kind) -> Spec {
    Spec {
        name,
        arity,
        flags,
        keys,
        kind,
        id: 0,
    }
}

#[rustfmt::skip]
const TABLE: &[Spec] = &[
    // strings
    c("APPEND", 3, W, ONE, P), c("DECR", 2, W, ONE, P), c("DECRBY", 3, W, ONE, P),
    c("GET", 2, RC, ONE, P), c("GETDEL", 2, W, ONE, P), c("GETEX", -2, W, ONE, P),
    c("GETRANGE", 4, RC, ONE, P), c("GETSET", 3, W, ONE, P), c("INCR", 2, W, ONE, P),
    c("INCRBY", 3, W, ONE, P), c("INCRBYFLOAT", 3, W, ONE, P), c("LCS", -3, R, TWO, P),
    c("MGET", -2, R, ALL, Kind::Split(Merge::Concat)),
    c("MSET", -3, W, PAIRS, Kind::Split(Merge::AllOk)), c("MSETNX", -3, W, PAIRS, P),
    c("PSETEX", 4, W, ONE, P), c("SET", -3, W, ONE, P), c("SETEX", 4, W, ONE, P),
    c("SETNX", 3, W, ONE, P), c("SETRANGE", 4, W, ONE, P), c("STRLEN", 2, RC, ONE, P),
    c("SUBSTR", 4, R, ONE, P),
    // keys
    c("COPY", -3, WU, TWO, P), c("DEL", -2, W, ALL, Kind::Split(Merge::Sum)),
    c("DUMP", 2, R, ONE, P), c("EXISTS", -2, RC, ALL, Kind::Split(Merge::Sum)),
    c("EXPIRE", -3, W, ONE, P), c("EXPIREAT", -3, W, ONE, P), c("EXPIRETIME", 2, R, ONE, P),
    c("KEYS", 2, R, Keys::None, Kind::Broadcast(Merge::Concat)), c("MOVE", 3, W, ONE, P),
    c("OBJECT", -2, R, Keys::Sub2, P), c("PERSIST", 2, W, ONE, P), c("PEXPIRE", -3, W, ONE, P),
    c("PEXPIREAT", -3, W, ONE, P), c("PEXPIRETIME", 2, R, ONE, P), c("PTTL", 2, R, ONE, P),
    c("RANDOMKEY", 1, RR, Keys::None, P), c("RENAME", 3, W, TWO, P),
    c("RENAMENX", 3, W, TWO, P), c("RESTORE", -4, W, ONE, P), c("RESTORE-ASKING", -4, W, ONE, P), c("SCAN", -2, RR, Keys::None, Kind::Scan),
    c("SORT", -2, WU, ONE, P), c("SORT_RO", -2, R, ONE, P),
    c("TOUCH", -2, R, ALL, Kind::Split(Merge::Sum)), c("TTL", 2, R, ONE, P),
    c("TYPE", 2, R, ONE, P), c("UNLINK", -2, W, ALL, Kind::Split(Merge::Sum)),
    c("WAIT", 3, R, Keys::None, B),
    // hashes
    c("HDEL", -3, W, ONE, P), c("HEXISTS", 3, R, ONE, P), c("HGET", 3, RC, ONE, P),
    c("HGETALL", 2, RC, ONE, P), c("HINCRBY", 4, W, ONE, P), c("HINCRBYFLOAT", 4, W, ONE, P),
    c("HKEYS", 2, R, ONE, P), c("HLEN", 2, R, ONE, P), c("HMGET", -3, RC, ONE, P),
    c("HMSET", -4, W, ONE, P), c("HRANDFIELD", -2, RR, ONE, P), c("HSCAN", -3, RR, ONE, P),
    c("HSET", -4, W, ONE, P), c("HSETNX", 4, W, ONE, P), c("HSTRLEN", 3, R, ONE, P),
    c("HVALS", 2, R, ONE, P),
    // lists
    c("BLMOVE", 6, W, TWO, B), c("BLMPOP", -5, W, NK2, B), c("BLPOP", -3, W, BLOCK_KEYS, B),
    c("BRPOP", -3, W, BLOCK_KEYS, B), c("BRPOPLPUSH", 4, W, TWO, B), c("LINDEX", 3, R, ONE, P),
    c("LINSERT", 5, W, ONE, P), c("LLEN", 2, R, ONE, P), c("LMOVE", 5, W, TWO, P),
    c("LMPOP", -4, W, NK1, P), c("LPOP", -2, W, ONE, P), c("LPOS", -3, R, ONE, P),
    c("LPUSH", -3, W, ONE, P), c("LPUSHX", -3, W, ONE, P), c("LRANGE", 4, R, ONE, P),
    c("LREM", 4, W, ONE, P), c("LSET", 4, W, ONE, P), c("LTRIM", 4, W, ONE, P),
    c("RPOP", -2, W, ONE, P), c("RPOPLPUSH", 3, W, TWO, P), c("RPUSH", -3, W, ONE, P),
    c("RPUSHX", -3, W, ONE, P),
    // sets
    c("SADD", -3, W, ONE, P), c("SCARD", 2, R, ONE, P), c("SDIFF", -2, R, ALL, P),
    c("SDIFFSTORE", -3, W, ALL, P), c("SINTER", -2, R, ALL, P), c("SINTERCARD", -3, R, NK1, P),
    c("SINTERSTORE", -3, W, ALL, P), c("SISMEMBER", 3, R, ONE, P), c("SMEMBERS", 2, R, ONE, P),
    c("SMISMEMBER", -3, R, ONE, P), c("SMOVE", 4, W, TWO, P), c("SPOP", -2, WR, ONE, P),
    c("SRANDMEMBER", -2, RR, ONE, P), c("SREM", -3, W, ONE, P), c("SSCAN", -3, RR, ONE, P),
    c("SUNION", -2, R, ALL, P), c("SUNIONSTORE", -3, W, ALL, P),
    // sorted sets
    c("BZMPOP", -5, W, NK2, B), c("BZPOPMAX", -3, W, BLOCK_KEYS, B),
    c("BZPOPMIN", -3, W, BLOCK_KEYS, B), c("ZADD", -4, W, ONE, P), c("ZCARD", 2, R, ONE, P),
    c("ZCOUNT", 4, R, ONE, P), c("ZDIFF", -3, R, NK1, P), c("ZDIFFSTORE", -4, W, DEST_NK2, P),
    c("ZINCRBY", 4, W, ONE, P), c("ZINTER", -3, R, NK1, P), c("ZINTERCARD", -3, R, NK1, P),
    c("ZINTERSTORE", -4, W, DEST_NK2, P), c("ZLEXCOUNT", 4, R, ONE, P), c("ZMPOP", -4, W, NK1, P),
    c("ZMSCORE", -3, R, ONE, P), c("ZPOPMAX", -2, W, ONE, P), c("ZPOPMIN", -2, W, ONE, P),
    c("ZRANDMEMBER", -2, RR, ONE, P), c("ZRANGE", -4, R, ONE, P), c("ZRANGEBYLEX", -4, R, ONE, P),
    c("ZRANGEBYSCORE", -4, R, ONE, P), c("ZRANGESTORE", -5, W, TWO, P), c("ZRANK", -3, R, ONE, P),
    c("ZREM", -3, W, ONE, P), c("ZREMRANGEBYLEX", 4, W, ONE, P),
    c("ZREMRANGEBYRANK", 4, W, ONE, P), c("ZREMRANGEBYSCORE", 4, W, ONE, P),
    c("ZREVRANGE", -4, R, ONE, P), c("ZREVRANGEBYLEX", -4, R, ONE, P),
    c("ZREVRANGEBYSCORE", -4, R, ONE, P), c("ZREVRANK", -3, R, ONE, P), c("ZSCAN", -3, RR, ONE, P),
    c("ZSCORE", 3, R, ONE, P), c("ZUNION", -3, R, NK1, P), c("ZUNIONSTORE", -4, W, DEST_NK2, P),
    // hyperloglog, bitmaps, geo
    c("PFADD", -2, W, ONE, P), c("PFCOUNT", -2, R, ALL, P), c("PFMERGE", -2, W, ALL, P),
    // HyperLogLog internals Redis's own suite calls (PFDEBUG TODENSE rewrites the key)
    c("PFDEBUG", 3, W, Keys::Sub2, P), c("PFSELFTEST", 1, 0, Keys::None, P),
    c("BITCOUNT", -2, R, ONE, P), c("BITFIELD", -2, W, ONE, P), c("BITFIELD_RO", -2, R, ONE, P),
    c("BITOP", -4, W, range(2, -1, 1), P), c("BITPOS", -3, R, ONE, P), c("GETBIT", 3, R, ONE, P),
    c("SETBIT", 4, W, ONE, P), c("GEOADD", -5, W, ONE, P), c("GEODIST", -4, R, ONE, P),
    c("GEOHASH", -2, R, ONE, P), c("GEOPOS", -2, R, ONE, P), c("GEORADIUS", -6, WU, ONE, P),
    c("GEORADIUSBYMEMBER", -5, WU, ONE, P), c("GEORADIUS_RO", -6, R, ONE, P),
    c("GEORADIUSBYMEMBER_RO", -5, R, ONE, P), c("GEOSEARCH", -7, R, ONE, P),
    c("GEOSEARCHSTORE", -8, W, TWO, P),
    // streams
    c("XACK", -4, W, ONE, P), c("XADD", -5, W, ONE, P), c("XAUTOCLAIM", -6, W, ONE, P),
    c("XCLAIM", -6, W, ONE, P), c("XDEL", -3, W, ONE, P), c("XGROUP", -2, W, Keys::Sub2, P),
    c("XINFO", -2, R, Keys::Sub2, P), c("XLEN", 2, R, ONE, P), c("XPENDING", -3, R, ONE, P),
    c("XRANGE", -4, R, ONE, P), c("XREAD", -4, R, Keys::Streams, Kind::StreamRead),
    c("XREADGROUP", -7, W, Keys::Streams, Kind::StreamRead), c("XREVRANGE", -4, R, ONE, P),
    c("XSETID", -3, W, ONE, P), c("XTRIM", -4, W, ONE, P),
    // scripting and functions: never cached; keys declared by numkeys
    c("EVAL", -3, WU, NK2, P), c("EVALSHA", -3, WU, NK2, P), c("EVAL_RO", -3, R, NK2, P),
    c("EVALSHA_RO", -3, R, NK2, P), c("FCALL", -3, WU, NK2, P), c("FCALL_RO", -3, R, NK2, P),
    c("SCRIPT", -2, 0, Keys::None, Kind::Broadcast(Merge::First)),
    c("FUNCTION", -2, W, Keys::None, Kind::Broadcast(Merge::First)),
    // pub/sub
    c("PUBLISH", 3, PUBLISHES, Keys::None, P), c("PUBSUB", -2, 0, Keys::None, P),
    c("SPUBLISH", 3, PUBLISHES, ONE, P),
    c("SUBSCRIBE", -2, SUBSCRIBES, Keys::None, Kind::Subscribe),
    c("PSUBSCRIBE", -2, SUBSCRIBES, Keys::None, Kind::Subscribe),
    c("SSUBSCRIBE", -2, SUBSCRIBES, ALL, Kind::Subscribe),
    c("UNSUBSCRIBE", -1, 0, Keys::None, Kind::Subscribe),
    c("PUNSUBSCRIBE", -1, 0, Keys::None, Kind::Subscribe),
    c("SUNSUBSCRIBE", -1, 0, Keys::None, Kind::Subscribe),
    // transactions
    c("MULTI", 1, 0, Keys::None, Kind::Multi), c("EXEC", 1, 0, Keys::None, Kind::Exec),
    c("DISCARD", 1, 0, Keys::None, Kind::Discard), c("WATCH", -2, 0, ALL, Kind::Watch),
    c("UNWATCH", 1, 0, Keys::None, Kind::Unwatch),
    // connection
    c("AUTH", -2, 0, Keys::None, Kind::Auth), c("CLIENT", -2, 0, Keys::None, Kind::Client),
    c("ECHO", 2, 0, Keys::None, P), c("HELLO", -1, 0, Keys::None, Kind::Hello),
    c("PING", -1, 0, Keys::None, Kind::Ping), c("QUIT", -1, 0, Keys::None, Kind::Quit),
    c("RESET", 1, 0, Keys::None, Kind::Reset), c("SELECT", 2, 0, Keys::None, Kind::Select),
    c("READONLY", 1, 0, Keys::None, Kind::Ok), c("READWRITE", 1, 0, Keys::None, Kind::Ok),
    // Pake follows ASK redirections itself: a client's ASKING has nothing to prepare
    c("ASKING", 1, 0, Keys::None, Kind::Ok),
    // server
    c("DBSIZE", 1, R, Keys::None, Kind::Broadcast(Merge::Sum)),
    c("FLUSHALL", -1, W | FLUSH, Keys::None, Kind::Broadcast(Merge::AllOk)),
    c("FLUSHDB", -1, W | FLUSH, Keys::None, Kind::Broadcast(Merge::AllOk)),
    c("SWAPDB", 3, W | FLUSH, Keys::None, P),
    c("INFO", -1, 0, Keys::None, P), c("TIME", 1, RR, Keys::None, P),
    c("LASTSAVE", 1, 0, Keys::None, P), c("CONFIG", -2, 0, Keys::None, P),
    c("COMMAND", -1, 0, Keys::None, Kind::Raw), c("MEMORY", -2, R, Keys::Sub2, P),
    c("SLOWLOG", -2, 0, Keys::None, P), c("LATENCY", -2, 0, Keys::None, P),
    c("ROLE", 1, 0, Keys::None, P), c("LOLWUT", -1, 0, Keys::None, P),
    c("CLUSTER", -2, 0, Keys::None, P), c("ACL", -2, 0, Keys::None, P), c("SAVE", 1, 0, Keys::None, P),
    c("BGSAVE", -1, 0, Keys::None, P), c("BGREWRITEAOF", 1, 0, Keys::None, P),
    c("MONITOR", 1, 0, Keys::None, Kind::Monitor), c("DEBUG", -2, 0, Keys::None, Kind::Raw), c("MODULE", -2, 0, Keys::None, P),
    c("SYNC", 1, 0, Keys::None, Kind::Unsupported("replication goes to Redis directly, not through Pake")),
    c("PSYNC", -3, 0, Keys::None, Kind::Unsupported("replication goes to Redis directly, not through Pake")),
    c("REPLICAOF", 3, 0, Keys::None, Kind::Unsupported("change replication on Redis directly")),
    c("SLAVEOF", 3, 0, Keys::None, Kind::Unsupported("change replication on Redis directly")),
    c("REPLCONF", -1, 0, Keys::None, Kind::Unsupported("replication goes to Redis directly, not through Pake")),
    c("FAILOVER", -1, 0, Keys::None, Kind::Unsupported("run FAILOVER on Redis directly")),
    c("SHUTDOWN", -1, 0, Keys::None, Kind::Unsupported("shut Redis down directly, not through Pake")),
    c("MIGRATE", -6, 0, Keys::None, Kind::Unsupported("MIGRATE is not routed by Pake; run it on Redis")),
];

/// The table, indexed by upper-case name.
pub struct Table {
    specs: Vec<Spec>,
    by_name: HashMap<&'static [u8], usize>,
}

impl Table {
    pub fn get() -> &'static Table {
        static TABLE_CELL: OnceLock<Table> = OnceLock::new();
        TABLE_CELL.get_or_init(|| {
            let specs: Vec<Spec> = TABLE
                .iter()
                .enumerate()
                .map(|(id, s)| Spec { id, ..*s })
                .collect();
            let by_name = specs.iter().map(|s| (s.name.as_bytes(), s.id)).collect();
            Table { specs, by_name }
        })
    }

    /// Look a command up by name, case-insensitively, without allocating.
    /// The spec at `id` (its position in the table).
    pub fn by_id(&self, id: usize) -> Option<&Spec> {
        self.specs.get(id)
    }

    pub fn lookup(&self, name: &[u8]) -> Option<&Spec> {
        let mut upper = [0u8; 24];
        let upper = upper.get_mut(..name.len())?;
        for (u, b) in upper.iter_mut().zip(name) {
            *u = b.to_ascii_uppercase();
        }
        self.by_name.get(&upper[..]).map(|&i| &self.specs[i])
    }

    pub fn specs(&self) -> &[Spec] {
        &self.specs
    }
}

/// One part of a multi-key command split by slot: the slot and the arguments after the
/// command name (each key followed by its value for MSET).
pub type Part = (u16, Vec<Bytes>);

/// Split a multi-key command (MSET, DEL, EXISTS…) by slot, parts in order of first key. Each
/// key takes the `step - 1` arguments after it along (MSET's value). `None` when a key's
/// group runs past the end of the arguments: the caller refuses the command instead of
/// cutting a pair.
pub fn split_by_slot(spec: &Spec, args: &[Bytes]) -> Option<Vec<Part>> {
    let step = match spec.keys {
        Keys::Range { step, .. } => usize::from(step.max(1)),
        _ => 1,
    };
    if !spec.arity_ok(args.len()) {
        // key_positions finds no keys in a cut pair list: refuse rather than send nothing
        return None;
    }
    let mut parts: Vec<Part> = Vec::new();
    // one pass: a 200,000-key DEL spread over every slot must not search the parts per key
    let mut by_slot: std::collections::HashMap<u16, usize> = std::collections::HashMap::new();
    for p in spec.key_positions(args) {
        let group = args.get(p..p.checked_add(step)?)?;
        let s = slot(group.first()?);
        match by_slot.get(&s) {
            Some(&at) => parts[at].1.extend(group.iter().cloned()),
            None => {
                by_slot.insert(s, parts.len());
                parts.push((s, group.to_vec()));
            }
        }
    }
    // a fan-out command always names a key; none means malformed (e.g. a cut MSET pair)
    (!parts.is_empty()).then_some(parts)
}

/// The cluster hash slot of a key (CRC16 of the key or its `{hash tag}`, mod 16384).
pub fn slot(key: &[u8]) -> u16 {
    redis_protocol::redis_keyslot(key)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Space-separated arguments (unit tests of the Redis side).
    pub(crate) fn args(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    fn keys(cmd: &str) -> Vec<usize> {
        let a = args(cmd);
        Table::get().lookup(&a[0]).unwrap().key_positions(&a)
    }

    #[test]
    fn lookup_is_case_insensitive_and_names_are_unique() {
        let t = Table::get();
        assert_eq!(t.lookup(b"get").unwrap().name, "GET");
        assert_eq!(t.lookup(b"HgEtAlL").unwrap().name, "HGETALL");
        assert!(t.lookup(b"NOPE").is_none());
        assert!(t.lookup(&[b'A'; 100]).is_none());
        assert_eq!(
            t.by_name.len(),
            t.specs.len(),
            "duplicate names in the table"
        );
    }

    #[test]
    fn key_positions() {
        assert_eq!(keys("GET k"), vec![1]);
        assert_eq!(keys("MSET a 1 b 2"), vec![1, 3]);
        assert_eq!(keys("BLPOP a b 0"), vec![1, 2]);
        assert_eq!(keys("EVAL s 2 a b x"), vec![3, 4]);
        assert_eq!(keys("EVAL s 0"), Vec::<usize>::new());
        assert_eq!(
            keys("EVAL s 5 a"),
            Vec::<usize>::new(),
            "numkeys past the end"
        );
        assert_eq!(keys("ZUNIONSTORE d 2 a b"), vec![1, 3, 4]);
        assert_eq!(keys("XREAD COUNT 1 STREAMS s1 s2 0 0"), vec![4, 5]);
        assert_eq!(keys("OBJECT ENCODING k"), vec![2]);
        assert_eq!(keys("BITOP AND d a b"), vec![2, 3, 4]);
    }

    /// Found by the redis_keys fuzz target (issue 18): a key whose value is missing made the
    /// cluster split of MSET slice past the arguments, and a numkeys near usize::MAX
    /// overflowed. Both are malformed: no key positions, Redis says why.
    #[test]
    fn key_positions_of_malformed_commands() {
        assert_eq!(keys("MSET a 1 b"), Vec::<usize>::new());
        assert_eq!(keys("MSET a"), Vec::<usize>::new());
        assert_eq!(keys("MSETNX a 1 b"), Vec::<usize>::new());
        assert_eq!(keys("MSET a 1 b 2"), vec![1, 3]);
        let huge = format!("EVAL s {} a", usize::MAX);
        assert_eq!(keys(&huge), Vec::<usize>::new());
        let huge = format!("ZUNIONSTORE d {} a", usize::MAX - 1);
        assert_eq!(keys(&huge), vec![1]);
    }

    #[test]
    fn arity_and_flags() {
        let t = Table::get();
        let get = t.lookup(b"GET").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(3));
        assert!(get.is(CACHE) && !get.is(WRITE));
        let set = t.lookup(b"SET").unwrap();
        assert!(set.arity_ok(5) && !set.arity_ok(2) && set.is(WRITE));
        for never in [
            "GETEX",
            "GETDEL",
            "SCAN",
            "RANDOMKEY",
            "BLPOP",
            "EVAL",
            "SRANDMEMBER",
        ] {
            assert!(!t.lookup(never.as_bytes()).unwrap().is(CACHE), "{never}");
        }
    }

    /// Argument lists for the property test: counts (also huge or negative), option tokens,
    /// empty, hash tags, plain words.
    fn random_arg(g: &mut crate::bench::rng::Rng) -> Bytes {
        const WORDS: &[&str] = &[
            "0",
            "1",
            "2",
            "3",
            "-1",
            "99",
            "18446744073709551615",
            "9999999999999999999999",
            "STREAMS",
            "streams",
            "BLOCK",
            "COUNT",
            "EX",
            "GET",
            "",
            "{t}a",
            "{t}b",
            "k",
            "a",
            "b",
            "c",
        ];
        match g.below(3) {
            0 => Bytes::from(format!("key{}", g.below(50))),
            _ => Bytes::from_static(WORDS[g.below(WORDS.len() as u64) as usize].as_bytes()),
        }
    }

    /// Every command in the table, with random argument lists: key positions stay inside
    /// the arguments, in order, and `one_key` agrees with them; a split never panics, and
    /// for a list Redis would accept it carries every argument exactly once.
    #[test]
    fn property_key_positions_and_splits_never_panic() {
        let mut g = crate::bench::rng::Rng::new(0x5eed);
        for spec in Table::get().specs() {
            for _ in 0..400 {
                let mut args = vec![Bytes::from_static(spec.name.as_bytes())];
                let extra = g.below(10);
                args.extend((0..extra).map(|_| random_arg(&mut g)));
                let pos = spec.key_positions(&args);
                assert!(
                    pos.iter().all(|&p| p >= 1 && p < args.len()),
                    "{args:?}: {pos:?}"
                );
                assert!(pos.windows(2).all(|w| w[0] < w[1]), "{args:?}: {pos:?}");
                assert_eq!(spec.one_key(&args), pos.len() == 1, "{args:?}: {pos:?}");
                let parts = split_by_slot(spec, &args);
                if !matches!(spec.kind, Kind::Split(_)) || !spec.arity_ok(args.len()) {
                    continue;
                }
                let parts = parts.unwrap_or_else(|| panic!("{args:?} accepted but not split"));
                let carried: usize = parts.iter().map(|(_, a)| a.len()).sum();
                assert_eq!(carried, args.len() - 1, "{args:?} -> {parts:?}");
                for (s, part) in &parts {
                    let step = if spec.name.starts_with("MSET") { 2 } else { 1 };
                    assert!(part.chunks(step).all(|c| slot(&c[0]) == *s), "{parts:?}");
                }
            }
        }
    }

    #[test]
    fn cut_pairs_are_an_arity_error() {
        let mset = Table::get().lookup(b"MSET").unwrap();
        assert!(!mset.arity_ok(4), "MSET a 1 b");
        assert!(mset.arity_ok(5) && !mset.arity_ok(2));
        assert_eq!(split_by_slot(mset, &args("MSET a 1 b")), None);
        let parts = split_by_slot(mset, &args("MSET a 1 b 2 {a}x 3")).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, args("a 1 {a}x 3"));
        assert_eq!(keys("EVAL s 18446744073709551615 a"), Vec::<usize>::new());
    }

    #[test]
    fn slots_honour_hash_tags() {
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1}.a"), slot(b"{user1}.b"));
    }
}
