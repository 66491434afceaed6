//! The hot path: what [`super::Insight::record`] does per statement.
//!
//! Each thread writes to its own [`Shard`] (picked once per thread, so worker threads never
//! share one while there are at least as many shards as workers). A shard's mutex is taken
//! only by its thread and, once per merge interval, by the merger for the time of a
//! `mem::take` — so in steady state the lock is uncontended and no cache line is shared
//! between workers. The merger then adds the taken deltas into the shared aggregate without
//! holding any shard.

use super::aggregate::RawSample;
use super::fingerprint::Fingerprint;
use super::stats::{new_histogram, record_us, sqlstate, ErrorCounts, Moments, SplitKey};
use super::{QueryEvent, Route};
use crate::pg::sql::normalize::hash64;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use crate::pg::sql::normalize::{IdHasher, IdMap};

/// One fingerprint's executions on one thread since the last merge.
pub struct FpDelta {
    pub fingerprint: Fingerprint,
    pub moments: Moments,
    pub hist: Histogram<u64>,
    pub errors: ErrorCounts,
    /// (hash of the split, the split, its moments): usually one or two entries.
    pub splits: Vec<(u64, SplitKey, Moments)>,
    /// The slowest execution of the merge interval that carries real values (literal text or
    /// bound parameters): what the index advisor plans with, slow or not.
    pub sample: Option<RawSample>,
    /// The text the shape was prepared with (placeholders for bound values), taken at most
    /// once per merge interval: it tells the advisor which values vary per execution.
    pub template: Option<RawSample>,
}

/// Repetitions of one fingerprint by one client since the last merge (N+1 detection).
#[derive(Debug, Clone, Copy, Default)]
pub struct Repeats {
    /// The transaction being counted and how often the fingerprint ran in it so far.
    pub transaction: u64,
    pub in_transaction: u32,
    /// The most runs seen in one transaction, and which transaction that was.
    pub max_in_transaction: u32,
    pub max_transaction: u64,
    /// All runs since the last merge (a burst when many, transactions or not).
    pub runs: u32,
}

/// A statement that carried a trace id.
#[derive(Debug, Clone)]
pub struct TraceEntry {
    pub trace: u128,
    pub fingerprint: u64,
    pub at_ms: u64,
    pub duration_ns: u64,
    pub rows: u64,
    pub error: Option<[u8; 5]>,
    pub database: Box<str>,
    pub client_id: u64,
}

/// What one thread collected since the last merge.
#[derive(Default)]
pub struct Shard {
    pub fps: IdMap<u64, FpDelta>,
    pub repeats: IdMap<(u64, u64), Repeats>,
    pub traces: Vec<TraceEntry>,
    /// Executions not recorded because the shard was full (a merge is overdue).
    pub dropped: u64,
}

/// Most fingerprints (and client × fingerprint pairs) one shard holds between merges.
const SHARD_CAP: usize = 16_384;
/// Most traced statements one shard holds between merges.
const TRACE_CAP: usize = 16_384;

impl Shard {
    /// Add one execution. Allocates only for a fingerprint, split or client new since the
    /// last merge.
    pub fn record(&mut self, ev: &QueryEvent<'_>, trace_at_ms: impl FnOnce() -> u64) {
        let ns = u64::try_from(ev.duration.as_nanos()).unwrap_or(u64::MAX);
        let wait_ns = u64::try_from(ev.wait.as_nanos()).unwrap_or(u64::MAX);
        let error = ev.error.map(sqlstate);
        let fps_full = self.fps.len() >= SHARD_CAP;
        let delta = match self.fps.get_mut(&ev.fingerprint.id) {
            Some(d) => d,
            None if fps_full => {
                self.dropped += 1;
                return;
            }
            None => self
                .fps
                .entry(ev.fingerprint.id)
                .or_insert_with(|| FpDelta {
                    fingerprint: ev.fingerprint.clone(),
                    moments: Moments::default(),
                    hist: new_histogram(),
                    errors: ErrorCounts::default(),
                    splits: Vec::new(),
                    sample: None,
                    template: None,
                }),
        };
        if ev.is_template() {
            if delta.template.is_none() {
                delta.template = template_sample(ev, ns);
            }
        } else if delta.sample.as_ref().is_none_or(|s| s.ns < ns) {
            // the slowest of the interval: copied again only when a slower one comes
            if let Some(sample) = value_sample(ev, ns) {
                delta.sample = Some(sample);
            }
        }
        delta.moments.add(ns, wait_ns, ev.rows, error.is_some());
        record_us(&mut delta.hist, ns / 1000);
        if let Some(code) = error {
            delta.errors.add(code, 1);
        }
        let split = ev.split;
        match delta.splits.iter_mut().find(|(h, _, _)| *h == split) {
            Some((_, _, m)) => m.add(ns, wait_ns, ev.rows, error.is_some()),
            None => {
                let mut m = Moments::default();
                m.add(ns, wait_ns, ev.rows, error.is_some());
                delta.splits.push((
                    split,
                    SplitKey {
                        database: ev.database.into(),
                        user: ev.user.into(),
                        application: ev.application.into(),
                        route: ev.route,
                    },
                    m,
                ));
            }
        }
        self.repeat(ev);
        if let Some(trace) = ev.trace_id.and_then(parse_trace_id) {
            if self.traces.len() < TRACE_CAP {
                self.traces.push(TraceEntry {
                    trace,
                    fingerprint: ev.fingerprint.id,
                    at_ms: trace_at_ms(),
                    duration_ns: ns,
                    rows: ev.rows,
                    error,
                    database: ev.database.into(),
                    client_id: ev.client_id,
                });
            }
        }
    }

    fn repeat(&mut self, ev: &QueryEvent<'_>) {
        let key = (ev.client_id, ev.fingerprint.id);
        let full = self.repeats.len() >= SHARD_CAP;
        let r = match self.repeats.get_mut(&key) {
            Some(r) => r,
            None if full => return,
            None => self.repeats.entry(key).or_insert(Repeats {
                transaction: ev.transaction,
                ..Repeats::default()
            }),
        };
        if r.transaction != ev.transaction {
            r.transaction = ev.transaction;
            r.in_transaction = 0;
        }
        r.in_transaction = r.in_transaction.saturating_add(1);
        r.runs = r.runs.saturating_add(1);
        if r.in_transaction > r.max_in_transaction {
            r.max_in_transaction = r.in_transaction;
            r.max_transaction = r.transaction;
        }
    }
}

/// Longest statement text kept as an advisor sample (a bulk INSERT is not worth keeping).
pub const MAX_SAMPLE_TEXT: usize = 16 << 10;

/// The execution as an advisor sample, when it carries values: a simple Query's literal text,
/// or bound parameters. An Execute the proxy knows only by its fingerprint carries none.
fn value_sample(ev: &QueryEvent<'_>, ns: u64) -> Option<RawSample> {
    let has_values = !ev.params.is_empty() || !shape_only(ev);
    if !has_values || ev.text.len() > MAX_SAMPLE_TEXT || ev.error.is_some() {
        return None;
    }
    Some(raw_sample(ev, ns))
}

/// An Execute's statement as prepared, when the proxy knows its text.
fn template_sample(ev: &QueryEvent<'_>, ns: u64) -> Option<RawSample> {
    if shape_only(ev) || ev.text.len() > MAX_SAMPLE_TEXT {
        return None;
    }
    Some(raw_sample(ev, ns))
}

/// The proxy passes the fingerprint's own text when it knows no other: same pointer, no
/// compare.
fn shape_only(ev: &QueryEvent<'_>) -> bool {
    std::ptr::eq(ev.text, &*ev.fingerprint.text) || ev.text == &*ev.fingerprint.text
}

fn raw_sample(ev: &QueryEvent<'_>, ns: u64) -> RawSample {
    RawSample {
        database: ev.database.to_string(),
        text: ev.text.to_string(),
        params: ev.owned_params(),
        writes: ev.writes,
        ns,
    }
}

/// The hash of an execution's split (database, user, application) before its route: the
/// same for every statement of a client until it changes its application name, so a caller
/// may keep it ([`QueryEvent::split`] is `split_base(..) ^ route`, [`split_hash`]).
pub fn split_base(database: &str, user: &str, application: &str) -> u64 {
    let mut h = hash64(database.as_bytes());
    h = h.rotate_left(21) ^ hash64(user.as_bytes());
    h.rotate_left(21) ^ hash64(application.as_bytes())
}

/// [`QueryEvent::split`] for these fields.
pub fn split_hash(database: &str, user: &str, application: &str, route: Route) -> u64 {
    split_base(database, user, application) ^ route as u64
}

/// A W3C trace id (32 hex digits) as a number.
pub fn parse_trace_id(s: &str) -> Option<u128> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
}

pub fn format_trace_id(t: u128) -> String {
    format!("{t:032x}")
}

/// The per-thread shards of one [`super::Insight`].
pub struct Shards {
    shards: Box<[Padded<Mutex<Shard>>]>,
}

/// Keeps each shard on its own cache lines, so two workers never share one.
#[repr(align(128))]
struct Padded<T>(T);

impl Shards {
    pub fn new() -> Shards {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        let n = (cpus * 4).clamp(8, 256);
        Shards {
            shards: (0..n)
                .map(|_| Padded(Mutex::new(Shard::default())))
                .collect(),
        }
    }

    /// This thread's shard.
    #[inline]
    pub fn local(&self) -> &Mutex<Shard> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        let i = INDEX.with(|i| *i);
        &self.shards[i % self.shards.len()].0
    }

    /// Take every shard's contents, leaving them empty.
    pub fn drain(&self) -> Vec<Shard> {
        self.shards
            .iter()
            .map(|s| std::mem::take(&mut *s.0.lock()))
            .collect()
    }
}

impl Default for Shards {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insight::fingerprint::{fingerprint, parse};
    use crate::insight::Route;
    use std::time::Duration;

    fn event<'a>(fp: &'a Fingerprint, text: &'a str, prepared: bool) -> QueryEvent<'a> {
        QueryEvent {
            fingerprint: fp,
            text,
            params: &[],
            prepared,
            database: "db",
            user: "u",
            application: "",
            route: Route::Primary,
            split: split_hash("db", "u", "", Route::Primary),
            client_id: 1,
            client_addr: ([127, 0, 0, 1], 1).into(),
            transaction: 1,
            duration: Duration::from_micros(100),
            wait: Duration::ZERO,
            rows: 1,
            error: None,
            trace_id: None,
            writes: false,
        }
    }

    #[test]
    fn an_execute_gives_the_template_and_a_query_the_values() {
        let prepared = "select id from t where state = $1";
        let fp = fingerprint(prepared, parse(prepared).as_deref());
        let mut shard = Shard::default();
        // an Execute known only by its fingerprint gives neither
        shard.record(&event(&fp, &fp.text, true), || 0);
        let d = &shard.fps[&fp.id];
        assert!(d.sample.is_none() && d.template.is_none());
        shard.record(&event(&fp, prepared, true), || 0);
        shard.record(
            &event(&fp, "select id from t where state = 'open'", false),
            || 0,
        );
        // one of each per merge interval: the first template, the slowest values
        shard.record(
            &event(&fp, "select id from t where state = 'held'", false),
            || 0,
        );
        let slow = QueryEvent {
            duration: Duration::from_micros(900),
            ..event(&fp, "select id from t where state = 'done'", false)
        };
        shard.record(&slow, || 0);
        shard.record(
            &event(&fp, "select id from t where state = 'gone'", false),
            || 0,
        );
        shard.record(
            &event(&fp, "select id from t where state = $1 ", true),
            || 0,
        );
        let d = &shard.fps[&fp.id];
        assert_eq!(d.template.as_ref().map(|t| t.text.as_str()), Some(prepared));
        assert_eq!(
            d.sample.as_ref().map(|s| s.text.as_str()),
            Some("select id from t where state = 'done'")
        );
        assert_eq!(d.moments.calls, 7);
    }
}
