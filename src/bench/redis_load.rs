//! Redis requests for the load generator: GET/SET over a Zipf-distributed key space,
//! optionally pipelined. Against a Redis Cluster without a proxy the client routes each key
//! by its hash slot (CRC16, hash tags honoured) from one `CLUSTER SLOTS` map.

use super::measure::{Client, Done};
use super::resp::{first_error, Reply, Resp, RespError};
use super::rng::{Rng, Zipf};
use super::scenario::Scenario;
use super::BenchError;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Key prefix of lab runs (runs against your targets default to `pake_bench:`).
pub const LAB_PREFIX: &str = "key:";

/// The keys of the scenario's target number `index`: `PREFIX` + `t<index>:` + rank. Each
/// target reads and writes keys of its own, so one target's writes (say twemproxy's,
/// straight to Redis) never invalidate what another (Pake's L1) cached between its rounds:
/// while a target is measured, every write to its keys goes through it.
pub fn target_prefix(base: &str, index: usize) -> String {
    format!("{base}t{index}:")
}

/// What every client of a scenario shares.
#[derive(Debug, Clone)]
pub struct RedisShape {
    pub zipf: Zipf,
    pub read_percent: u32,
    pub pipeline: usize,
    pub value: Arc<Vec<u8>>,
    /// Every key is PREFIX + rank.
    pub prefix: Arc<[u8]>,
    /// Which keys the target has been asked to read (one set per target).
    pub first_reads: Arc<FirstReads>,
    /// Connections say `HELLO 3` and `CLIENT TRACKING ON` first.
    pub client_tracking: bool,
    /// Keys invalidated by the pushes the target's clients received so far.
    pub pushes: Arc<AtomicU64>,
}

/// The keys read so far through one target, and how many reads were a key's first: those
/// a cache that fills on reads must miss, however large and coherent, so `1 − first
/// reads ÷ reads` bounds its hit rate on the run. One bit per key; a set bit is only read
/// again, so hot keys' words stay shared between the clients' cores.
#[derive(Debug)]
pub struct FirstReads {
    /// Keys of the load (ranks 0..keys).
    keys: u64,
    seen: Vec<AtomicU64>,
    count: AtomicU64,
}

impl FirstReads {
    pub fn new(keys: u64) -> FirstReads {
        let words = usize::try_from(keys.div_ceil(64)).unwrap_or(0);
        FirstReads {
            keys,
            seen: (0..words).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
        }
    }

    /// A read of the key of `rank`.
    fn read(&self, rank: u64) {
        let Some(word) = usize::try_from(rank / 64)
            .ok()
            .and_then(|w| self.seen.get(w))
        else {
            return;
        };
        let bit = 1u64 << (rank % 64);
        if word.load(Ordering::Relaxed) & bit == 0
            && word.fetch_or(bit, Ordering::Relaxed) & bit == 0
        {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// First reads so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl RedisShape {
    pub fn of(s: &Scenario) -> RedisShape {
        RedisShape {
            zipf: Zipf::new(s.redis.keys, s.redis.zipf),
            read_percent: s.redis.read_percent,
            pipeline: s.redis.pipeline,
            value: Arc::new(vec![b'v'; s.redis.value_size]),
            prefix: s
                .redis
                .prefix
                .as_deref()
                .unwrap_or(LAB_PREFIX)
                .as_bytes()
                .into(),
            first_reads: Arc::new(FirstReads::new(s.redis.keys)),
            client_tracking: s.redis.client_tracking,
            pushes: Arc::default(),
        }
    }

    /// The same load for the scenario's target number `index`: on keys of its own
    /// ([`target_prefix`]), its first reads counted apart.
    pub fn for_target(&self, index: usize) -> RedisShape {
        let base = String::from_utf8_lossy(&self.prefix);
        RedisShape {
            prefix: target_prefix(&base, index).into_bytes().into(),
            first_reads: Arc::new(FirstReads::new(self.first_reads.keys)),
            pushes: Arc::default(),
            ..self.clone()
        }
    }
}

/// Slot owners of a cluster: `slots[slot]` indexes `nodes`.
#[derive(Debug, Clone)]
pub struct SlotMap {
    pub nodes: Vec<SocketAddr>,
    slots: Arc<Vec<u16>>,
}

/// Redis Cluster's key slot: CRC16-XMODEM of the key (or of its `{hash tag}`) mod 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

impl SlotMap {
    /// Ask any node for `CLUSTER SLOTS`.
    pub async fn discover(seed: SocketAddr) -> Result<SlotMap, BenchError> {
        let mut conn = Resp::connect(seed).await?;
        let reply = conn.call(&[b"CLUSTER", b"SLOTS"]).await?;
        let Reply::Array(Some(ranges)) = reply else {
            return Err(BenchError::Client(format!("CLUSTER SLOTS: {reply:?}")));
        };
        let mut nodes: Vec<SocketAddr> = Vec::new();
        let mut slots = vec![u16::MAX; 16384];
        for range in ranges {
            let Reply::Array(Some(r)) = range else {
                continue;
            };
            let (Some(Reply::Int(lo)), Some(Reply::Int(hi)), Some(Reply::Array(Some(owner)))) =
                (r.first(), r.get(1), r.get(2))
            else {
                continue;
            };
            let (Some(Reply::Bulk(Some(ip))), Some(Reply::Int(port))) =
                (owner.first(), owner.get(1))
            else {
                continue;
            };
            let addr: SocketAddr = format!("{}:{port}", String::from_utf8_lossy(ip))
                .parse()
                .map_err(|e| BenchError::Client(format!("CLUSTER SLOTS address: {e}")))?;
            let idx = nodes.iter().position(|n| *n == addr).unwrap_or_else(|| {
                nodes.push(addr);
                nodes.len() - 1
            });
            for s in (*lo).max(0)..=(*hi).min(16383) {
                slots[s as usize] = idx as u16;
            }
        }
        if slots.contains(&u16::MAX) {
            return Err(BenchError::Client(
                "the cluster does not cover every slot".into(),
            ));
        }
        Ok(SlotMap {
            nodes,
            slots: Arc::new(slots),
        })
    }

    /// Index into `nodes` of the node serving `key`.
    pub fn node_of(&self, key: &[u8]) -> usize {
        usize::from(self.slots[usize::from(key_slot(key))])
    }
}

/// One client: a connection to a server or proxy, or one per cluster node.
pub struct RedisClient {
    conns: Vec<Resp>,
    map: Option<SlotMap>,
    shape: RedisShape,
    key: Vec<u8>,
}

fn key_into(buf: &mut Vec<u8>, prefix: &[u8], rank: u64) {
    buf.clear();
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(rank.to_string().as_bytes());
}

/// Connect (one connection per node for a cluster), logging in with `AUTH auth…` first.
pub async fn connect(
    addr: SocketAddr,
    map: Option<SlotMap>,
    shape: RedisShape,
    auth: Option<&[String]>,
) -> Result<RedisClient, String> {
    let mut conns = Vec::new();
    let addrs = map.as_ref().map_or(vec![addr], |m| m.nodes.clone());
    for a in addrs {
        let mut c = Resp::connect(a).await.map_err(|e| e.to_string())?;
        if let Some(args) = auth {
            let mut cmd: Vec<&[u8]> = vec![b"AUTH"];
            cmd.extend(args.iter().map(|a| a.as_bytes()));
            if let Reply::Error(e) = c.call(&cmd).await.map_err(|e| e.to_string())? {
                return Err(format!("AUTH: {e}"));
            }
        }
        if shape.client_tracking {
            for cmd in [&[&b"HELLO"[..], b"3"][..], &[b"CLIENT", b"TRACKING", b"ON"]] {
                if let Reply::Error(e) = c.call(cmd).await.map_err(|e| e.to_string())? {
                    return Err(format!("{}: {e}", String::from_utf8_lossy(cmd[0])));
                }
            }
        }
        conns.push(c);
    }
    Ok(RedisClient {
        conns,
        map,
        shape,
        key: Vec::with_capacity(32),
    })
}

impl RedisClient {
    fn conn_for(&self, key: &[u8]) -> usize {
        self.map.as_ref().map_or(0, |m| m.node_of(key))
    }

    /// Queue a batch; returns how many were reads.
    fn queue(&mut self, rng: &mut Rng) -> u32 {
        let mut reads = 0;
        for _ in 0..self.shape.pipeline {
            let rank = self.shape.zipf.sample(rng);
            let mut key = std::mem::take(&mut self.key);
            key_into(&mut key, &self.shape.prefix, rank);
            let c = self.conn_for(&key);
            if rng.percent(self.shape.read_percent) {
                self.conns[c].push(&[b"GET", &key]);
                self.shape.first_reads.read(rank);
                reads += 1;
            } else {
                let value = Arc::clone(&self.shape.value);
                self.conns[c].push(&[b"SET", &key, &value]);
            }
            self.key = key;
        }
        reads
    }
}

impl Client for RedisClient {
    async fn request(&mut self, rng: &mut Rng) -> Result<Done, String> {
        let reads = self.queue(rng);
        let mut error = None;
        for conn in &mut self.conns {
            if conn.queued() == 0 {
                continue;
            }
            let replies = conn.round_trip().await.map_err(|e| e.to_string())?;
            error = error.or_else(|| first_error(&replies));
            let pushes = conn.take_pushes();
            if pushes > 0 {
                self.shape.pushes.fetch_add(pushes, Ordering::Relaxed);
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(Done {
                ops: self.shape.pipeline as u32,
                reads,
            }),
        }
    }
}

/// Write every key of the scenario once (directly to the servers), so GETs find values:
/// the keys of each of `targets` targets ([`target_prefix`] of `base`), over one client.
pub async fn preload(
    addr: SocketAddr,
    map: Option<SlotMap>,
    s: &Scenario,
    base: &str,
    targets: usize,
    auth: Option<&[String]>,
) -> Result<(), BenchError> {
    let (keys, value_size) = (s.redis.keys, s.redis.value_size);
    let shape = RedisShape {
        zipf: Zipf::new(1, 0.0),
        read_percent: 0,
        pipeline: 1,
        value: Arc::new(vec![b'v'; value_size]),
        prefix: base.as_bytes().into(),
        first_reads: Arc::new(FirstReads::new(0)),
        client_tracking: false,
        pushes: Arc::default(),
    };
    let mut client = connect(addr, map, shape, auth)
        .await
        .map_err(BenchError::Client)?;
    let value = vec![b'v'; value_size];
    let mut key = Vec::new();
    for target in 0..targets {
        let prefix = target_prefix(base, target);
        for start in (0..keys).step_by(1000) {
            for rank in start..(start + 1000).min(keys) {
                key_into(&mut key, prefix.as_bytes(), rank);
                let c = client.conn_for(&key);
                client.conns[c].push(&[b"SET", &key, &value]);
            }
            for conn in &mut client.conns {
                if conn.queued() > 0 {
                    let replies = conn.round_trip().await?;
                    if let Some(e) = first_error(&replies) {
                        return Err(BenchError::Client(format!("preload SET: {e}")));
                    }
                }
            }
        }
    }
    Ok(())
}

impl From<RespError> for BenchError {
    fn from(e: RespError) -> Self {
        BenchError::Client(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis() {
        // values from the Redis Cluster specification and `CLUSTER KEYSLOT`
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
    }

    #[test]
    fn first_reads_count_each_key_once_and_per_target() {
        let f = FirstReads::new(130);
        for rank in [0, 63, 64, 129, 0, 63, 129, 129] {
            f.read(rank);
        }
        assert_eq!(f.count(), 4, "four distinct keys");
        f.read(500); // past the key space: not a key of this load
        assert_eq!(f.count(), 4);
        let shape = RedisShape {
            zipf: Zipf::new(1, 0.0),
            read_percent: 100,
            pipeline: 1,
            value: Arc::new(Vec::new()),
            prefix: b"k".as_slice().into(),
            first_reads: Arc::new(f),
            client_tracking: false,
            pushes: Arc::default(),
        };
        let other = shape.for_target(2);
        other.first_reads.read(129);
        assert_eq!(other.first_reads.count(), 1, "another target starts afresh");
        assert_eq!(&other.prefix[..], b"kt2:", "on keys of its own");
        assert_eq!(shape.first_reads.count(), 4);
    }
}
