//! Hot-path micro-benchmarks for the Postgres side: message framing, the reply queue, and
//! statement normalisation / cached analysis. Run with `cargo bench --bench pg_wire`.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pake::pg::server::replies::{Effects, Expect, Replies};
use pake::pg::sql::Analyzer;
use pake::pg::wire;
use std::hint::black_box;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// What pgbench -S sends (simple protocol) and what the server answers.
fn pgbench_select() -> (Vec<u8>, Vec<u8>) {
    let q = frame(
        b'Q',
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;\0",
    );
    let mut r = frame(
        b'T',
        b"\0\x01abalance\0\0\0@\x06\0\x03\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
    );
    r.extend(frame(b'D', b"\0\x01\0\0\0\x010"));
    r.extend(frame(b'C', b"SELECT 1\0"));
    r.extend(frame(b'Z', b"I"));
    (q, r)
}

fn framing(c: &mut Criterion) {
    let (q, r) = pgbench_select();
    let mut batch = Vec::new();
    for _ in 0..100 {
        batch.extend_from_slice(&q);
    }
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(100));
    g.bench_function("frontend_100_queries", |b| {
        b.iter(|| {
            let mut pos = 0;
            let mut n = 0;
            while let Ok(Some((_, len))) = wire::frontend_frame(black_box(&batch[pos..]), 1 << 26) {
                pos += len;
                n += 1;
            }
            n
        })
    });
    g.finish();
    let mut g = c.benchmark_group("replies");
    g.throughput(Throughput::Elements(1));
    g.bench_function("simple_query_response", |b| {
        let mut replies = Replies::default();
        b.iter(|| {
            replies.push(Expect::Ready {
                swallow: false,
                stmt: true,
            });
            let mut fx = Effects::default();
            let mut pos = 0;
            while let Ok(Some((tag, len))) = wire::frame_header(&r[pos..], usize::MAX) {
                let body = &r[pos + wire::HEADER_LEN..pos + len];
                let _ = black_box(replies.on_message(tag, body, &mut fx));
                pos += len;
            }
            fx.ready
        })
    });
    g.bench_function("error_response_build", |b| {
        let mut out = BytesMut::with_capacity(256);
        b.iter(|| {
            out.clear();
            wire::backend::error_response(
                &mut out,
                &wire::backend::Fields {
                    severity: "ERROR",
                    code: "57014",
                    message: "canceling statement",
                    detail: None,
                    hint: None,
                },
            );
            out.len()
        })
    });
    g.finish();
}

fn statements(c: &mut Criterion) {
    let mut g = c.benchmark_group("statement");
    g.throughput(Throughput::Elements(1));
    let texts: Vec<String> = (0..1024)
        .map(|i| {
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                i * 7919
            )
        })
        .collect();
    g.bench_function("normalize_pgbench_select", |b| {
        let mut out = String::with_capacity(128);
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            pake::pg::sql::normalize::normalize_into(black_box(&texts[i]), &mut out).hash
        })
    });
    let analyzer = Analyzer::new();
    g.bench_function("analyze_cached", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            analyzer.with(black_box(&texts[i]), |n, info| {
                (n.hash, info.session.dirties())
            })
        })
    });
    g.bench_function("classify_cached", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            analyzer.with(black_box(&texts[i]), |_, info| {
                info.route.class == pake::pg::route::Class::Read
            })
        })
    });
    g.bench_function("classify_uncached_parse", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            let ast = pake::pg::route::classify::parse(black_box(&texts[i]));
            pake::pg::route::classify::classify(ast.as_deref()).class
        })
    });
    g.bench_function("analyze_uncached", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            // a new shape every time: a fresh analyser has nothing cached
            let fresh = Analyzer::new();
            let sql = format!("SELECT c{i} FROM t WHERE id = 1");
            fresh.with(&sql, |n, info| (n.hash, info.session.dirties()))
        })
    });
    g.finish();
}

criterion_group!(benches, framing, statements);
criterion_main!(benches);
