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

/// Hits as the redis-getset load makes them: 100,000 keys read with Zipf(0.99) popularity
/// (the hot keys from every thread's front table, the rest from moka), by two threads at
/// once like a 2-core Pake's two reactors. Time per read, both threads together.
fn l1_zipf(c: &mut Criterion) {
    const KEYS: usize = 100_000;
    let metrics = RedisMetrics::new(&prometheus::Registry::new());
    let l1 = L1::new(256 << 20, 1 << 20, Duration::from_secs(300), metrics);
    l1.set_armed(ALL_SLOTS, true, "bench");
    let get_id = Table::get().lookup(b"GET").map_or(0, |s| s.id as u16);
    let keys: Vec<CacheKey> = (0..KEYS)
        .map(|i| {
            let k = Bytes::from(format!("pake_bench:t0:{i}"));
            CacheKey::new(get_id, &[k], 0, 0, Proto::Resp2)
        })
        .collect();
    let reply = Bytes::from(format!("$100\r\n{}\r\n", "v".repeat(100)));
    for k in &keys {
        if let Some(t) = l1.ticket(k.slot, &k.args) {
            l1.insert(k.clone(), reply.clone(), t, None);
        }
    }
    // inverse CDF of Zipf(0.99) over the keys, sampled with a fixed-seed LCG
    let mut cdf = Vec::with_capacity(KEYS);
    let mut sum = 0.0;
    for i in 0..KEYS {
        sum += 1.0 / ((i + 1) as f64).powf(0.99);
        cdf.push(sum);
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let order: Vec<usize> = (0..1 << 20)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let u = (seed >> 11) as f64 / (1u64 << 53) as f64 * sum;
            cdf.partition_point(|&c| c < u).min(KEYS - 1)
        })
        .collect();
    // two threads that live across samples, as reactor threads do: each keeps its own
    // near copies of hot entries, which fresh threads per sample would refill every time
    let mut pos = 0usize;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2usize)
            .map(|t| {
                let (go, work) = std::sync::mpsc::channel::<(usize, u64)>();
                let (done, finished) = std::sync::mpsc::channel::<()>();
                let (keys, order, l1) = (&keys, &order, &l1);
                s.spawn(move || {
                    for (from, iters) in work {
                        for i in 0..iters as usize {
                            let k = &keys[order[(from + i * 2 + t) % order.len()]];
                            black_box(l1.get(k));
                        }
                        let _ = done.send(());
                    }
                });
                (go, finished)
            })
            .collect();
        let mut g = c.benchmark_group("l1_zipf");
        g.bench_function("get_two_threads", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for (go, _) in &workers {
                    let _ = go.send((pos, iters));
                }
                for (_, finished) in &workers {
                    let _ = finished.recv();
                }
                pos = pos.wrapping_add(iters as usize * 2);
                start.elapsed() / 2
            })
        });
        g.finish();
        // the workers end when their channels close
        drop(workers);
    });
}

criterion_group!(benches, decode, l1, l1_two_workers, l1_zipf);
criterion_main!(benches);
