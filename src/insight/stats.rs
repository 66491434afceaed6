//! Per-fingerprint statistics: the additive pieces ([`Moments`], latency histograms, errors by
//! SQLSTATE, splits by database/user/application/route) and the bounded [`Aggregate`] they
//! are merged into off the hot path.
//!
//! Everything here is *mergeable*: a worker thread accumulates a delta, the merger adds deltas
//! into the aggregate (Chan's parallel variance formula for the standard deviation,
//! `Histogram::add` for the latency distribution), so no value is lost or counted twice.

use super::fingerprint::Fingerprint;
use super::Route;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Latencies are recorded in microseconds with two significant digits (1% resolution):
/// an auto-resizing histogram only grows as far as the slowest call, ~11 KiB at 100 ms.
pub const HIST_SIGFIG: u8 = 2;

/// A fresh latency histogram (microseconds).
pub fn new_histogram() -> Histogram<u64> {
    // sigfig 2 is in range, so creation cannot fail; fall back to a bounded one regardless
    Histogram::new(HIST_SIGFIG).unwrap_or_else(|_| {
        Histogram::new_with_bounds(1, 3_600_000_000, 1).unwrap_or_else(|_| unreachable_hist())
    })
}

#[allow(
    clippy::panic,
    reason = "hdrhistogram rejects only sigfig > 5 or low = 0"
)]
fn unreachable_hist() -> Histogram<u64> {
    panic!("hdrhistogram refused constant, valid bounds")
}

/// Record `us` microseconds; never fails (values past the resizable range are clamped).
pub fn record_us(h: &mut Histogram<u64>, us: u64) {
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

/// Counts, sums and extremes of a set of executions; additive across threads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub calls: u64,
    pub errors: u64,
    pub rows: u64,
    pub total_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    /// Running mean and sum of squared deviations (Welford), in nanoseconds.
    pub mean_ns: f64,
    pub m2: f64,
    pub wait_ns: u64,
    pub wait_max_ns: u64,
}

impl Moments {
    /// Add one execution.
    #[inline]
    pub fn add(&mut self, ns: u64, wait_ns: u64, rows: u64, error: bool) {
        self.calls += 1;
        self.errors += u64::from(error);
        self.rows += rows;
        self.total_ns = self.total_ns.saturating_add(ns);
        self.min_ns = if self.calls == 1 {
            ns
        } else {
            self.min_ns.min(ns)
        };
        self.max_ns = self.max_ns.max(ns);
        let x = ns as f64;
        let delta = x - self.mean_ns;
        self.mean_ns += delta / self.calls as f64;
        self.m2 += delta * (x - self.mean_ns);
        self.wait_ns = self.wait_ns.saturating_add(wait_ns);
        self.wait_max_ns = self.wait_max_ns.max(wait_ns);
    }

    /// Add another set (Chan et al.'s parallel combination of mean and variance).
    pub fn merge(&mut self, o: &Moments) {
        if o.calls == 0 {
            return;
        }
        if self.calls == 0 {
            *self = *o;
            return;
        }
        let n = (self.calls + o.calls) as f64;
        let delta = o.mean_ns - self.mean_ns;
        self.m2 += o.m2 + delta * delta * self.calls as f64 * o.calls as f64 / n;
        self.mean_ns += delta * o.calls as f64 / n;
        self.min_ns = self.min_ns.min(o.min_ns);
        self.max_ns = self.max_ns.max(o.max_ns);
        self.calls += o.calls;
        self.errors += o.errors;
        self.rows += o.rows;
        self.total_ns = self.total_ns.saturating_add(o.total_ns);
        self.wait_ns = self.wait_ns.saturating_add(o.wait_ns);
        self.wait_max_ns = self.wait_max_ns.max(o.wait_max_ns);
    }

    /// Population standard deviation, like pg_stat_statements' `stddev_exec_time`.
    pub fn stddev_ns(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            (self.m2 / self.calls as f64).max(0.0).sqrt()
        }
    }
}

/// Who ran a statement: the dimensions statistics are split by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SplitKey {
    pub database: Box<str>,
    pub user: Box<str>,
    pub application: Box<str>,
    pub route: Route,
}

impl SplitKey {
    /// Where combinations beyond `max_splits` are counted.
    pub fn other() -> SplitKey {
        SplitKey {
            database: "(other)".into(),
            user: "(other)".into(),
            application: "(other)".into(),
            route: Route::Primary,
        }
    }
}

/// Errors by SQLSTATE (five ASCII characters), as a short list: few codes per statement.
#[derive(Debug, Clone, Default)]
pub struct ErrorCounts(pub Vec<([u8; 5], u64)>);

impl ErrorCounts {
    pub fn add(&mut self, code: [u8; 5], n: u64) {
        match self.0.iter_mut().find(|(c, _)| *c == code) {
            Some((_, count)) => *count += n,
            None => self.0.push((code, n)),
        }
    }

    pub fn merge(&mut self, o: &ErrorCounts) {
        for (code, n) in &o.0 {
            self.add(*code, *n);
        }
    }
}

/// A SQLSTATE as five bytes (`XX000` when the text is not one).
pub fn sqlstate(s: &str) -> [u8; 5] {
    let b = s.as_bytes();
    if b.len() == 5 && b.iter().all(|c| c.is_ascii_alphanumeric()) {
        [b[0], b[1], b[2], b[3], b[4]]
    } else {
        *b"XX000"
    }
}

pub fn sqlstate_str(code: &[u8; 5]) -> String {
    String::from_utf8_lossy(code).into_owned()
}

/// One fingerprint's statistics, merged from every thread.
pub struct FpStats {
    pub fingerprint: Fingerprint,
    pub moments: Moments,
    pub hist: Histogram<u64>,
    pub errors: ErrorCounts,
    pub splits: Vec<(SplitKey, Moments)>,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

impl FpStats {
    pub fn new(fingerprint: Fingerprint, now: SystemTime) -> FpStats {
        FpStats {
            fingerprint,
            moments: Moments::default(),
            hist: new_histogram(),
            errors: ErrorCounts::default(),
            splits: Vec::new(),
            first_seen: now,
            last_seen: now,
        }
    }

    /// Add `m` to the split `key`, or to `(other)` when `max_splits` are taken.
    pub fn add_split(&mut self, key: &SplitKey, m: &Moments, max_splits: usize) {
        if let Some((_, s)) = self.splits.iter_mut().find(|(k, _)| k == key) {
            s.merge(m);
            return;
        }
        if self.splits.len() + 1 < max_splits.max(1) {
            self.splits.push((key.clone(), *m));
            return;
        }
        let other = SplitKey::other();
        match self.splits.iter_mut().find(|(k, _)| *k == other) {
            Some((_, s)) => s.merge(m),
            None => self.splits.push((other, *m)),
        }
    }

    /// Latency at quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// Bucketed latency distribution for charts: powers of two of microseconds.
    pub fn buckets(&self) -> Vec<Bucket> {
        if self.hist.is_empty() {
            return Vec::new();
        }
        self.hist
            .iter_log(1, 2.0)
            .map(|v| Bucket {
                le_ms: v.value_iterated_to() as f64 / 1000.0,
                count: v.count_since_last_iteration(),
            })
            .collect()
    }
}

/// One bar of a latency histogram: calls that took at most `le_ms` (and more than the
/// previous bar's bound).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Bucket {
    pub le_ms: f64,
    pub count: u64,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_moments_equal_sequential_ones() {
        let xs: Vec<u64> = (1..=1000).map(|i| (i * 7919) % 1013 + 1).collect();
        let mut all = Moments::default();
        let (mut a, mut b) = (Moments::default(), Moments::default());
        for (i, &x) in xs.iter().enumerate() {
            all.add(x, 1, 2, i % 10 == 0);
            if i % 3 == 0 {
                a.add(x, 1, 2, i % 10 == 0);
            } else {
                b.add(x, 1, 2, i % 10 == 0);
            }
        }
        a.merge(&b);
        assert_eq!(a.calls, all.calls);
        assert_eq!(a.errors, 100);
        assert_eq!(a.rows, 2000);
        assert_eq!(a.total_ns, all.total_ns);
        assert_eq!((a.min_ns, a.max_ns), (all.min_ns, all.max_ns));
        assert!((a.mean_ns - all.mean_ns).abs() < 1e-6);
        assert!((a.stddev_ns() - all.stddev_ns()).abs() < 1e-6);
        let mean = xs.iter().sum::<u64>() as f64 / xs.len() as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((all.stddev_ns() - var.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn splits_are_bounded() {
        let fp = super::super::fingerprint::fingerprint("select 1", None);
        let mut s = FpStats::new(fp, SystemTime::now());
        let mut m = Moments::default();
        m.add(10, 0, 1, false);
        for i in 0..10 {
            let key = SplitKey {
                database: format!("db{i}").into(),
                user: "u".into(),
                application: "a".into(),
                route: Route::Primary,
            };
            s.add_split(&key, &m, 4);
        }
        assert_eq!(s.splits.len(), 4);
        let other = s.splits.iter().find(|(k, _)| *k == SplitKey::other());
        assert_eq!(other.map(|(_, m)| m.calls), Some(7));
    }

    #[test]
    fn sqlstates() {
        assert_eq!(&sqlstate("23505"), b"23505");
        assert_eq!(&sqlstate("nope"), b"XX000");
        let mut e = ErrorCounts::default();
        e.add(*b"23505", 2);
        e.merge(&ErrorCounts(vec![(*b"23505", 1), (*b"42P01", 1)]));
        assert_eq!(e.0, vec![(*b"23505", 3), (*b"42P01", 1)]);
    }
}
