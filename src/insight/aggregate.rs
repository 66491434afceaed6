//! The merged, bounded state of the insight engine: per-fingerprint statistics, slow samples,
//! captured plans, N+1 findings and the per-trace statement rings. Touched only by the merger,
//! the background slow-query task and readers (API, metrics, advisor) — never by `record`.
//!
//! Memory is bounded everywhere: `max_fingerprints` (least total time evicted first, with its
//! samples and plan), `max_splits` per fingerprint, `samples_per_fingerprint`, and
//! `trace_ids` × `trace_statements`.

use super::collector::{format_trace_id, Shard, TraceEntry};
use super::config::InsightConfig;
use super::fingerprint::Fingerprint;
use super::model::{
    hex_id, CapturedPlan, ErrorCount, NPlusOne, QueryStats, SlowSample, SplitStats, Summary,
    TraceStatement,
};
use super::stats::{sqlstate_str, unix_ms, FpStats, Moments};
use std::collections::{HashMap, VecDeque};
use std::time::{Instant, SystemTime};

/// A slow execution as the advisor needs it: the real text and values, never shown.
#[derive(Debug, Clone)]
pub struct RawSample {
    pub database: String,
    pub text: String,
    pub params: Vec<Option<String>>,
    pub writes: bool,
    /// How long the execution took (ns): the slowest kept is planned first.
    pub ns: u64,
}

/// Real-valued samples kept per fingerprint for the advisor (never shown): two are planned,
/// all of them decide which literals are constant.
pub const RAW_SAMPLES: usize = 4;

/// Keep `sample` among at most [`RAW_SAMPLES`] distinct ones: the newest, and the slowest
/// seen however old. Values that take the most time are what an index must serve; a
/// multi-tenant shape run mostly for small tenants would otherwise be planned only with
/// theirs (on a stranger's logistics workload, a count by status lost its index for the
/// big tenant: 14 → 55 ms).
pub fn keep_raw(raw: &mut VecDeque<RawSample>, sample: RawSample) {
    if let Some(r) = raw
        .iter_mut()
        .find(|r| r.text == sample.text && r.params == sample.params)
    {
        r.ns = r.ns.max(sample.ns);
        return;
    }
    if raw.len() >= RAW_SAMPLES {
        let slowest = slowest(raw);
        let drop = usize::from(slowest == Some(0));
        raw.remove(drop);
    }
    raw.push_back(sample);
}

/// The position of the slowest of `raw` (the oldest of equals).
pub fn slowest(raw: &VecDeque<RawSample>) -> Option<usize> {
    (0..raw.len()).rev().max_by_key(|&i| raw[i].ns)
}

/// One fingerprint and everything known about it.
pub struct Entry {
    pub stats: FpStats,
    pub samples: VecDeque<SlowSample>,
    pub raw: VecDeque<RawSample>,
    /// The text the shape was last seen prepared with (placeholders for bound values).
    pub template: Option<RawSample>,
    pub plan: Option<CapturedPlan>,
    pub last_explain: Option<Instant>,
    pub n_plus_one: Option<NPlusOne>,
}

/// The bounded ring of recent statements per trace id.
#[derive(Default)]
pub struct Traces {
    rings: HashMap<u128, (u64, VecDeque<TraceEntry>)>,
    seq: u64,
}

impl Traces {
    fn add(&mut self, e: TraceEntry, max_ids: usize, per_id: usize) {
        self.seq += 1;
        if !self.rings.contains_key(&e.trace) && self.rings.len() >= max_ids {
            // evict the trace seen least recently
            if let Some(oldest) = self
                .rings
                .iter()
                .min_by_key(|(_, (s, _))| *s)
                .map(|(k, _)| *k)
            {
                self.rings.remove(&oldest);
            }
        }
        let (seen, ring) = self.rings.entry(e.trace).or_default();
        *seen = self.seq;
        if ring.len() >= per_id {
            ring.pop_front();
        }
        ring.push_back(e);
    }

    pub fn get(&self, trace: u128) -> Vec<TraceEntry> {
        self.rings
            .get(&trace)
            .map(|(_, r)| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[derive(Default)]
pub struct Aggregate {
    pub fps: HashMap<u64, Entry>,
    pub traces: Traces,
    /// The engine's own counters (evicted, dropped, slow, explains…); the other fields of
    /// this `Summary` are computed by [`Aggregate::summary`].
    pub counters: Summary,
}

impl Aggregate {
    /// Add what the shards collected; then enforce `max_fingerprints`.
    pub fn merge(&mut self, shards: Vec<Shard>, config: &InsightConfig, now: SystemTime) {
        for shard in shards {
            self.counters.dropped += shard.dropped;
            for (id, d) in shard.fps {
                debug_assert_eq!(id, d.fingerprint.id);
                let s = &mut self.entry_for(&d.fingerprint, now).stats;
                s.moments.merge(&d.moments);
                // auto-resizing histograms only fail to add on a u64 overflow of a count
                let _ = s.hist.add(&d.hist);
                s.errors.merge(&d.errors);
                for (_, key, m) in &d.splits {
                    s.add_split(key, m, config.max_splits);
                }
                s.last_seen = now;
                if let Some(e) = self.fps.get_mut(&id) {
                    if let Some(sample) = d.sample {
                        keep_raw(&mut e.raw, sample);
                    }
                    if d.template.is_some() {
                        e.template = d.template;
                    }
                }
            }
            for ((client, id), r) in shard.repeats {
                let in_txn = r.max_in_transaction >= config.n_plus_one_per_transaction;
                let burst = r.runs >= config.n_plus_one_burst;
                if !(in_txn || burst) {
                    continue;
                }
                if let Some(e) = self.fps.get_mut(&id) {
                    let n = e.n_plus_one.get_or_insert_with(|| NPlusOne {
                        fingerprint: hex_id(id),
                        query: e.stats.fingerprint.text.to_string(),
                        max_per_transaction: 0,
                        max_burst: 0,
                        occurrences: 0,
                        last_client_id: client,
                        last_seen_ms: 0,
                    });
                    n.max_per_transaction = n.max_per_transaction.max(r.max_in_transaction);
                    n.max_burst = n.max_burst.max(r.runs);
                    n.occurrences += 1;
                    n.last_client_id = client;
                    n.last_seen_ms = unix_ms(now);
                }
            }
            for t in shard.traces {
                self.traces
                    .add(t, config.trace_ids, config.trace_statements);
            }
        }
        self.evict(config.max_fingerprints);
    }

    fn evict(&mut self, max: usize) {
        if self.fps.len() <= max {
            return;
        }
        let mut by_time: Vec<(u64, u64)> = self
            .fps
            .iter()
            .map(|(id, e)| (e.stats.moments.total_ns, *id))
            .collect();
        by_time.sort_unstable();
        let excess = self.fps.len() - max;
        for (_, id) in by_time.into_iter().take(excess) {
            self.fps.remove(&id);
            self.counters.evicted += 1;
        }
    }

    /// The entry of `fp`, created (with no executions yet) if it is new.
    pub fn entry_for(&mut self, fp: &Fingerprint, now: SystemTime) -> &mut Entry {
        self.fps.entry(fp.id).or_insert_with(|| Entry {
            stats: FpStats::new(fp.clone(), now),
            samples: VecDeque::new(),
            raw: VecDeque::new(),
            template: None,
            plan: None,
            last_explain: None,
            n_plus_one: None,
        })
    }

    pub fn total_ns(&self) -> u64 {
        self.fps.values().map(|e| e.stats.moments.total_ns).sum()
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            fingerprints: self.fps.len(),
            calls: 0,
            errors: 0,
            total_ms: 0.0,
            at_ms: unix_ms(SystemTime::now()),
            ..self.counters.clone()
        };
        for e in self.fps.values() {
            s.calls += e.stats.moments.calls;
            s.errors += e.stats.moments.errors;
            s.total_ms += ms(e.stats.moments.total_ns);
        }
        s
    }

    /// The statistics of one fingerprint, as the API shows them.
    pub fn query_stats(&self, e: &Entry, all_ns: u64) -> QueryStats {
        let s = &e.stats;
        let m = &s.moments;
        QueryStats {
            id: hex_id(s.fingerprint.id),
            query: s.fingerprint.text.to_string(),
            kind: format!("{:?}", s.fingerprint.kind).to_lowercase(),
            calls: m.calls,
            errors: m.errors,
            errors_by_sqlstate: s
                .errors
                .0
                .iter()
                .map(|(c, n)| ErrorCount {
                    sqlstate: sqlstate_str(c),
                    count: *n,
                })
                .collect(),
            rows: m.rows,
            total_ms: ms(m.total_ns),
            min_ms: ms(m.min_ns),
            max_ms: ms(m.max_ns),
            mean_ms: m.mean_ns / 1e6,
            stddev_ms: m.stddev_ns() / 1e6,
            p50_ms: s.quantile_ms(0.50),
            p95_ms: s.quantile_ms(0.95),
            p99_ms: s.quantile_ms(0.99),
            p999_ms: s.quantile_ms(0.999),
            wait_total_ms: ms(m.wait_ns),
            wait_max_ms: ms(m.wait_max_ns),
            time_share: if all_ns == 0 {
                0.0
            } else {
                m.total_ns as f64 / all_ns as f64
            },
            first_seen_ms: unix_ms(s.first_seen),
            last_seen_ms: unix_ms(s.last_seen),
            splits: s.splits.iter().map(|(k, m)| split_stats(k, m)).collect(),
            histogram: s.buckets(),
            has_plan: e.plan.is_some(),
        }
    }

    pub fn n_plus_one(&self) -> Vec<NPlusOne> {
        let mut v: Vec<NPlusOne> = self
            .fps
            .values()
            .filter_map(|e| e.n_plus_one.clone())
            .collect();
        v.sort_by(|a, b| {
            b.max_per_transaction
                .max(b.max_burst)
                .cmp(&a.max_per_transaction.max(a.max_burst))
        });
        v
    }

    pub fn trace(&self, trace: u128) -> Vec<TraceStatement> {
        self.traces
            .get(trace)
            .into_iter()
            .map(|t| TraceStatement {
                trace_id: format_trace_id(t.trace),
                fingerprint: hex_id(t.fingerprint),
                query: self
                    .fps
                    .get(&t.fingerprint)
                    .map(|e| e.stats.fingerprint.text.to_string())
                    .unwrap_or_else(|| "(evicted)".into()),
                at_ms: t.at_ms,
                duration_ms: ms(t.duration_ns),
                rows: t.rows,
                error: t.error.as_ref().map(sqlstate_str),
                database: t.database.to_string(),
                client_id: t.client_id,
            })
            .collect()
    }
}

fn split_stats(k: &super::stats::SplitKey, m: &Moments) -> SplitStats {
    SplitStats {
        database: k.database.to_string(),
        user: k.user.to_string(),
        application: k.application.to_string(),
        route: k.route,
        calls: m.calls,
        errors: m.errors,
        rows: m.rows,
        total_ms: ms(m.total_ns),
        mean_ms: m.mean_ns / 1e6,
        wait_total_ms: ms(m.wait_ns),
    }
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, ns: u64) -> RawSample {
        RawSample {
            database: "db".into(),
            text: text.into(),
            params: Vec::new(),
            writes: false,
            ns,
        }
    }

    fn texts(raw: &VecDeque<RawSample>) -> Vec<&str> {
        raw.iter().map(|r| r.text.as_str()).collect()
    }

    #[test]
    fn the_newest_samples_are_kept_and_the_slowest_however_old() {
        let mut raw = VecDeque::new();
        keep_raw(&mut raw, sample("big", 900));
        for (i, t) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            keep_raw(&mut raw, sample(t, 10 + i as u64));
        }
        assert_eq!(texts(&raw), ["big", "c", "d", "e"]);
        assert_eq!(slowest(&raw), Some(0));
        // a repeat takes no place of its own, and counts at its slowest
        keep_raw(&mut raw, sample("d", 2000));
        assert_eq!(texts(&raw), ["big", "c", "d", "e"]);
        assert_eq!(slowest(&raw), Some(2));
        keep_raw(&mut raw, sample("f", 1));
        assert_eq!(texts(&raw), ["c", "d", "e", "f"]);
        keep_raw(&mut raw, sample("g", 1));
        assert_eq!(texts(&raw), ["d", "e", "f", "g"]);
        keep_raw(&mut raw, sample("h", 1));
        assert_eq!(texts(&raw), ["d", "f", "g", "h"]);
    }
}
