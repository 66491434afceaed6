//! Percentiles consistent with the recorded durations: a pg_sleep workload of known sleeps.

use crate::harness::{Rig, Who};

/// Nearest-rank percentile of sorted microsecond values.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::test]
async fn pg_sleep_percentiles_match_the_recorded_durations() {
    let mut rig = Rig::default().await;
    let c = rig.client("postgres").await;
    let mut recorded = Vec::new();
    // 20 short sleeps and 4 long ones, through both protocols: one fingerprint
    for i in 0..24 {
        let secs: f64 = if i % 6 == 5 { 0.05 } else { 0.005 };
        let out = if i % 2 == 0 {
            let s = secs.to_string();
            rig.exec(
                &c,
                "select pg_sleep($1)",
                &[&secs],
                &[Some(&s)],
                Who::default(),
            )
            .await
        } else {
            rig.exec(
                &c,
                &format!("select pg_sleep({secs})"),
                &[],
                &[],
                Who::default(),
            )
            .await
        };
        assert!(out.error.is_none());
        recorded.push((out.fingerprint.id, out.duration.as_micros() as u64));
    }
    let id = recorded[0].0;
    assert!(
        recorded.iter().all(|(f, _)| *f == id),
        "one fingerprint for both protocols"
    );
    let mut us: Vec<u64> = recorded.iter().map(|(_, d)| *d).collect();
    us.sort_unstable();
    let q = rig.insight.query(&format!("{id:016x}")).expect("recorded");
    assert_eq!(q.calls, 24);
    // exact moments (nanosecond sums), histogram percentiles within its 1% resolution
    let ms = |v: u64| v as f64 / 1000.0;
    let mean = us.iter().sum::<u64>() as f64 / us.len() as f64 / 1000.0;
    assert!((q.mean_ms - mean).abs() < 0.01, "{} vs {mean}", q.mean_ms);
    assert!((q.min_ms - ms(us[0])).abs() < 0.01);
    assert!((q.max_ms - ms(us[23])).abs() < 0.01);
    for (p, got) in [
        (0.5, q.p50_ms),
        (0.95, q.p95_ms),
        (0.99, q.p99_ms),
        (0.999, q.p999_ms),
    ] {
        let want = ms(percentile(&us, p));
        assert!(
            (got - want).abs() <= want * 0.02 + 0.002,
            "p{p}: histogram says {got} ms, recorded {want} ms"
        );
    }
    // what the sleeps guarantee: the median is a short sleep, the tail a long one
    assert!(q.p50_ms >= 5.0 && q.p50_ms < 50.0, "{}", q.p50_ms);
    assert!(q.p99_ms >= 50.0, "{}", q.p99_ms);
    assert!(q.stddev_ms > 0.0);
    let counted: u64 = q.histogram.iter().map(|b| b.count).sum();
    assert_eq!(counted, 24);
}
