//! Query-insight hot-path benchmarks: fingerprinting (uncached: parse + AST rewrite, once per
//! statement shape; cached: normalise + per-shape lookup, every statement) and
//! `Insight::record` single-threaded and contended across threads, against analysis off.
//! Run with `cargo bench --bench insight`.

use criterion::{criterion_group, criterion_main, Criterion};
use pake::insight::{fingerprint, parse, Fingerprint, Insight, InsightConfig, QueryEvent, Route};
use pake::pg::sql::normalize::normalize_into;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PGBENCH: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
const JOIN: &str =
    "SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id \
    WHERE o.status IN ('open', 'held', 'late') AND o.created > '2026-01-01' AND c.region = 7 \
    ORDER BY o.created DESC LIMIT 50";

thread_local! {
    /// The proxy's per-shape cache as the integrator keeps it: normalised hash → fingerprint.
    static SHAPES: RefCell<(String, HashMap<u64, Arc<Fingerprint>>)> =
        RefCell::new((String::with_capacity(256), HashMap::new()));
}

/// What the proxy does per statement: normalise (it does this for routing anyway) and look
/// the shape up; parse + fingerprint only on a miss.
fn cached(sql: &str) -> Arc<Fingerprint> {
    SHAPES.with(|s| {
        let (scratch, map) = &mut *s.borrow_mut();
        let n = normalize_into(sql, scratch);
        map.entry(n.hash)
            .or_insert_with(|| Arc::new(fingerprint(sql, parse(sql).as_deref())))
            .clone()
    })
}

fn fingerprints(c: &mut Criterion) {
    let mut g = c.benchmark_group("fingerprint");
    for (name, sql) in [("pgbench", PGBENCH), ("join", JOIN)] {
        g.bench_function(format!("uncached_parse_and_fingerprint/{name}"), |b| {
            b.iter(|| fingerprint(black_box(sql), parse(black_box(sql)).as_deref()))
        });
        let ast = parse(sql).unwrap_or_default();
        g.bench_function(format!("uncached_fingerprint_of_ast/{name}"), |b| {
            b.iter(|| fingerprint(black_box(sql), Some(black_box(&ast))))
        });
        let _ = cached(sql);
        g.bench_function(format!("cached/{name}"), |b| {
            b.iter(|| cached(black_box(sql)))
        });
    }
    g.finish();
}

fn event(fp: &Fingerprint, client: u64) -> QueryEvent<'_> {
    QueryEvent {
        fingerprint: fp,
        text: PGBENCH,
        params: &[],
        prepared: false,
        database: "bench",
        user: "pgbench",
        application: "pgbench",
        route: Route::Primary,
        split: pake::insight::collector::split_hash("bench", "pgbench", "pgbench", Route::Primary),
        client_id: client,
        client_addr: ([127, 0, 0, 1], 5555).into(),
        transaction: client,
        duration: Duration::from_micros(180),
        wait: Duration::from_micros(3),
        rows: 1,
        error: None,
        trace_id: None,
        writes: false,
    }
}

fn engine(enabled: bool) -> Arc<Insight> {
    let config = InsightConfig {
        enabled,
        slow_query_threshold: pake::config::Dur::secs(3600),
        ..InsightConfig::default()
    };
    Insight::new(config, &prometheus::Registry::new())
}

fn record(c: &mut Criterion) {
    let fp = fingerprint(PGBENCH, parse(PGBENCH).as_deref());
    let mut g = c.benchmark_group("record");
    for (name, on) in [("analysis_off", false), ("analysis_on", true)] {
        let ins = engine(on);
        g.bench_function(format!("single_thread/{name}"), |b| {
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                ins.record(black_box(&event(&fp, n % 100)));
            })
        });
        ins.flush();
    }
    for threads in [2u64, 4] {
        let ins = engine(true);
        g.bench_function(
            format!("contended/{threads}_threads_same_fingerprint"),
            |b| b.iter_custom(|iters| contended(&ins, &fp, threads, iters)),
        );
    }
    g.finish();
}

/// Time per record() with `threads` threads recording the same fingerprint at once.
fn contended(ins: &Arc<Insight>, fp: &Fingerprint, threads: u64, iters: u64) -> Duration {
    let per = iters / threads + 1;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let ins = ins.clone();
            s.spawn(move || {
                for i in 0..per {
                    ins.record(black_box(&event(fp, t * 1000 + i % 100)));
                }
            });
        }
    });
    let elapsed = start.elapsed();
    ins.flush();
    // each thread made `per` calls in `elapsed`, in parallel: the cost of one call on a
    // thread while the others record too (on 2 cores, 4 threads also share CPUs)
    elapsed.mul_f64(iters as f64 / per as f64)
}

criterion_group!(benches, fingerprints, record);
criterion_main!(benches);
