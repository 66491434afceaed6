//! Hot-path micro-benchmarks for the Redis side: RESP request decoding (single commands and
//! a pipelined batch), reply scanning, the command table, and L1 get/insert on hit and
//! miss. Run with `cargo bench --bench redis`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pake::redis::commands::{slot, Table};
use pake::redis::l1::{CacheKey, ALL_SLOTS, L1};
use pake::redis::metrics::RedisMetrics;
use pake::redis::resp::{self, encode::Proto, Limits};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::hint::black_box;
use std::time::Duration;
use std::time::Instant;

fn command(args: &[&[u8]]) -> Vec<u8> {
    pake::redis::backend::link::command(args).to_vec()
}

fn decode(c: &mut Criterion) {
    let get = command(&[b"GET", b"key:000042"]);
    let set = command(&[b"SET", b"key:000042", &[b'x'; 100]]);
    let mut batch = Vec::new();
    for _ in 0..100 {
        batch.extend_from_slice(&get);
    }
    let limits = Limits::default();
    let mut g = c.benchmark_group("resp_decode");
    for (name, bytes, n) in [
        ("get", &get, 1u64),
        ("set_100b", &set, 1),
        ("pipeline_100_get", &batch, 100),
    ] {
        g.throughput(Throughput::Elements(n));
        // a session keeps one scanner with its buffer (its Vec of open aggregates is reused)
        let mut scanner = resp::Scanner::default();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&bytes[..]);
                while let Ok(Some(req)) =
                    resp::take_request_resuming(&mut buf, &mut scanner, &limits)
                {
                    black_box(req);
                }
            })
        });
    }
    g.bench_function("inline_get", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&b"GET key:000042\r\n"[..]);
            black_box(resp::take_request(&mut buf, &limits).ok())
        })
    });
    let reply = b"*3\r\n$3\r\nabc\r\n:42\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n";
    // as a link reads replies: one scanner kept with the buffer
    let mut scanner = resp::Scanner::default();
    g.bench_function("scan_reply", |b| {
        b.iter(|| black_box(scanner.scan(black_box(reply), &Limits::backend())))
    });
    g.finish();
    c.bench_function("command_lookup_and_slot", |b| {
        b.iter(|| {
            let spec = Table::get().lookup(black_box(b"get"));
            black_box((spec, slot(black_box(b"key:000042"))))
        })
    });
}

fn l1(c: &mut Criterion) {
    let metrics = RedisMetrics::new(&prometheus::Registry::new());
    let l1 = L1::new(64 << 20, 1 << 20, Duration::from_secs(300), metrics);
    l1.set_armed(ALL_SLOTS, true, "bench");
    let get_id = Table::get().lookup(b"GET").map_or(0, |s| s.id as u16);
    let key = |i: u64| {
        let k = Bytes::from(format!("key:{i:06}"));
        CacheKey::new(get_id, &[k], 0, 0, Proto::Resp2)
    };
    let reply = Bytes::from_static(b"$10\r\nvalue-0042\r\n");
    for i in 0..10_000 {
        let k = key(i);
        if let Some(t) = l1.ticket(k.slot, &k.args) {
            l1.insert(k, reply.clone(), t, None);
        }
    }
    let hot = key(42);
    let cold = key(999_999);
    let mut g = c.benchmark_group("l1");
    g.bench_function("get_hit", |b| b.iter(|| black_box(l1.get(black_box(&hot)))));
    g.bench_function("get_miss", |b| {
        b.iter(|| black_box(l1.get(black_box(&cold))))
    });
    g.bench_function("key_build", |b| b.iter(|| black_box(key(black_box(42)))));
    let mut i = 0u64;
    g.bench_function("ticket_insert", |b| {
        b.iter(|| {
            i += 1;
            let k = key(i % 50_000);
            if let Some(t) = l1.ticket(k.slot, &k.args) {
                l1.insert(k, reply.clone(), t, Some(Duration::from_secs(60)));
            }
        })
    });
    g.bench_function("invalidate_key", |b| {
        b.iter(|| l1.invalidate_key(black_box(b"key:000042")))
    });
    g.finish();
}

/// What a hit costs when both workers of a 2-core Pake read the same hot keys at once:
/// the L1 (moka plus the generation checks) against a baseline of 64 `RwLock<HashMap>`
/// shards holding the same replies. Time per read, both threads together.
fn l1_two_workers(c: &mut Criterion) {
    let metrics = RedisMetrics::new(&prometheus::Registry::new());
    let l1 = L1::new(64 << 20, 1 << 20, Duration::from_secs(300), metrics);
    l1.set_armed(ALL_SLOTS, true, "bench");
    let get_id = Table::get().lookup(b"GET").map_or(0, |s| s.id as u16);
    let reply = Bytes::from_static(b"$10\r\nvalue-0042\r\n");
    // Zipf-like: a few hot keys take most reads
    let keys: Vec<CacheKey> = (0..64u64)
        .map(|i| {
            CacheKey::new(
                get_id,
                &[Bytes::from(format!("key:{i:06}"))],
                0,
                0,
                Proto::Resp2,
            )
        })
        .collect();
    type Shard = parking_lot::RwLock<HashMap<CacheKey, Bytes>>;
    let shards: Vec<Shard> = (0..64).map(|_| Shard::default()).collect();
    let shard_of = |k: &CacheKey| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        k.hash(&mut h);
        (h.finish() % 64) as usize
    };
    for k in &keys {
        if let Some(t) = l1.ticket(k.slot, &k.args) {
            l1.insert(k.clone(), reply.clone(), t, None);
        }
        shards[shard_of(k)].write().insert(k.clone(), reply.clone());
    }
    let two = |iters: u64, read: &(dyn Fn(&CacheKey) -> Option<Bytes> + Sync)| {
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..2usize {
                let keys = &keys;
                s.spawn(move || {
                    for i in 0..iters as usize {
                        black_box(read(&keys[(i * 7 + t) % 8]));
                    }
                });
            }
        });
        start.elapsed() / 2
    };
    let mut g = c.benchmark_group("l1_two_workers");
    g.bench_function("l1_get_hit", |b| b.iter_custom(|n| two(n, &|k| l1.get(k))));
    g.bench_function("sharded_rwlock_hashmap", |b| {
        b.iter_custom(|n| two(n, &|k| shards[shard_of(k)].read().get(k).cloned()))
    });
    g.finish();
}

criterion_group!(benches, decode, l1, l1_two_workers);
criterion_main!(benches);
