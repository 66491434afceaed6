//! What the clients of a chaos scenario saw, op by op: successes and errors with their
//! times, the ids of writes that were acknowledged (and of those that failed, whose fate is
//! unknown), and each worker's current streak — so the runner can tell online when every
//! client is being served again, and the report can say afterwards how long that took.
//!
//! Times are offsets from the ledger's origin, so the arithmetic is plain and testable.

use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What one operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Write the row or key with this id (ids are never reused).
    Write(u64),
    Read,
}

/// One worker's record.
#[derive(Debug, Default)]
struct WorkerLog {
    ops: u64,
    /// Completion times of prompt successful ops (not stalls), in order.
    ok_at: Vec<Duration>,
    /// Completion times of failed ops, in order.
    err_at: Vec<Duration>,
    /// Completion times of ops that succeeded but took longer than the stall threshold.
    stalls: Vec<Duration>,
    max_latency: Duration,
    /// Error text (shortened) → count.
    kinds: BTreeMap<String, u64>,
    acked: Vec<u64>,
    /// Writes that failed: maybe applied, maybe not.
    unacked: Vec<u64>,
    /// Start times of the latest consecutive successes (at most [`KEEP`]); an error clears it.
    recent_ok: VecDeque<Duration>,
    in_flight_since: Option<Duration>,
}

/// Successes remembered per worker for [`Ledger::settled`].
const KEEP: usize = 8;

/// Shared by the load's workers and the runner.
#[derive(Clone)]
pub struct Ledger {
    origin: Instant,
    /// An op slower than this is a stall even when it succeeds.
    stall: Duration,
    workers: Arc<Vec<Mutex<WorkerLog>>>,
}

/// Everything after the run, merged over workers.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub ops: u64,
    pub errors: u64,
    /// Successful ops slower than the stall threshold.
    pub stalled: u64,
    pub max_latency: Duration,
    /// Most frequent error texts first.
    pub kinds: Vec<(String, u64)>,
    pub acked: Vec<u64>,
    pub unacked: Vec<u64>,
    /// From the fault to the first prompt success after the last disrupted op (an error or a
    /// stall); `Some(ZERO)` when no op was disrupted, `None` when service never came back.
    pub recovery: Option<Duration>,
    /// Errors completed before the fault: the steady state was not clean.
    pub errors_before_fault: u64,
}

impl Ledger {
    pub fn new(workers: usize, stall: Duration) -> Ledger {
        Ledger {
            origin: Instant::now(),
            stall,
            workers: Arc::new((0..workers).map(|_| Mutex::default()).collect()),
        }
    }

    /// Now, as an offset from the origin.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Worker `w` starts an op now; returns its start offset for [`Ledger::done`].
    pub fn start(&self, w: usize) -> Duration {
        let at = self.now();
        if let Some(log) = self.workers.get(w) {
            log.lock().in_flight_since = Some(at);
        }
        at
    }

    /// Worker `w`'s op that started at `start` has finished with `result`.
    pub fn done(&self, w: usize, op: Op, start: Duration, result: Result<(), String>) {
        let end = self.now();
        let Some(log) = self.workers.get(w) else {
            return;
        };
        let mut log = log.lock();
        log.ops += 1;
        log.in_flight_since = None;
        let took = end.saturating_sub(start);
        log.max_latency = log.max_latency.max(took);
        match result {
            Ok(()) => {
                if took > self.stall {
                    log.stalls.push(end);
                } else {
                    log.ok_at.push(end);
                }
                if let Op::Write(id) = op {
                    log.acked.push(id);
                }
                if log.recent_ok.len() == KEEP {
                    log.recent_ok.pop_front();
                }
                log.recent_ok.push_back(start);
            }
            Err(e) => {
                log.err_at.push(end);
                *log.kinds.entry(shorten(&e)).or_default() += 1;
                if let Op::Write(id) = op {
                    log.unacked.push(id);
                }
                log.recent_ok.clear();
            }
        }
    }

    /// Every worker's latest `streak` ops (at most 8) succeeded and started at or after
    /// `since`, and none is stuck in an op for longer than the stall threshold: clients are
    /// served.
    pub fn settled(&self, since: Duration, streak: usize) -> bool {
        let now = self.now();
        let streak = streak.clamp(1, KEEP);
        self.workers.iter().all(|log| {
            let log = log.lock();
            let n = log.recent_ok.len();
            n >= streak
                && log.recent_ok[n - streak] >= since
                && log
                    .in_flight_since
                    .is_none_or(|s| now.saturating_sub(s) <= self.stall)
        })
    }

    /// Merge the workers' records; `fault` is when the fault was injected.
    pub fn summary(&self, fault: Duration) -> Summary {
        let mut s = Summary::default();
        let (mut ok_at, mut disrupted) = (Vec::new(), Vec::new());
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for log in self.workers.iter() {
            let log = log.lock();
            s.ops += log.ops;
            s.errors += log.err_at.len() as u64;
            s.stalled += log.stalls.len() as u64;
            s.max_latency = s.max_latency.max(log.max_latency);
            s.acked.extend_from_slice(&log.acked);
            s.unacked.extend_from_slice(&log.unacked);
            for (k, n) in &log.kinds {
                *kinds.entry(k.clone()).or_default() += n;
            }
            ok_at.extend_from_slice(&log.ok_at);
            disrupted.extend_from_slice(&log.err_at);
            disrupted.extend_from_slice(&log.stalls);
            s.errors_before_fault += log.err_at.iter().filter(|t| **t < fault).count() as u64;
        }
        s.kinds = kinds.into_iter().collect();
        s.kinds
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        s.recovery = recovery(fault, &disrupted, &ok_at);
        s
    }
}

/// From `fault` to the first success completed after the last disruption at or after the
/// fault. `Some(ZERO)` with no disruption, `None` when no success followed the last one.
pub fn recovery(fault: Duration, disrupted: &[Duration], ok_at: &[Duration]) -> Option<Duration> {
    let Some(last) = disrupted.iter().copied().filter(|t| *t >= fault).max() else {
        return Some(Duration::ZERO);
    };
    ok_at
        .iter()
        .copied()
        .filter(|t| *t > last)
        .min()
        .map(|t| t.saturating_sub(fault))
}

/// An error text short enough to group by: the first line, at most 120 characters, every
/// number (with its dots and unit: `127.0.0.1`, `820ms`, `1.02s`) folded to `N`, so that the
/// same failure counts as one kind — except a SQLSTATE, a word of five digits or capitals
/// before `:` (`FATAL 57P01: …`).
fn shorten(e: &str) -> String {
    let line = e.lines().next().unwrap_or_default();
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() && out.chars().count() < 120 {
        let c = chars[i];
        let word_start = i == 0 || chars[i - 1] == ' ';
        if word_start && is_sqlstate(&chars[i..]) {
            out.extend(&chars[i..i + 5]);
            i += 5;
        } else if c.is_ascii_digit() {
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || chars[i].is_ascii_lowercase()
                    || chars[i] == 'µ'
                    || (chars[i] == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
            {
                i += 1;
            }
            out.push('N');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_sqlstate(rest: &[char]) -> bool {
    rest.len() > 5
        && rest[5] == ':'
        && rest[..5]
            .iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        && rest[..5].iter().any(char::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn recovery_is_first_success_after_last_disruption() {
        let errs = [ms(1100), ms(1500), ms(2900)];
        let oks = [ms(900), ms(1000), ms(1200), ms(3050), ms(3100)];
        assert_eq!(recovery(ms(1000), &errs, &oks), Some(ms(2050)));
    }

    #[test]
    fn no_disruption_is_zero_and_no_success_is_none() {
        assert_eq!(recovery(ms(1000), &[ms(500)], &[ms(1200)]), Some(ms(0)));
        assert_eq!(recovery(ms(1000), &[ms(1500)], &[ms(1200)]), None);
    }

    #[test]
    fn ledger_counts_acks_errors_and_streaks() {
        let l = Ledger::new(2, ms(1000));
        let s = l.start(0);
        l.done(0, Op::Write(1), s, Ok(()));
        let s = l.start(1);
        l.done(1, Op::Write(2), s, Err("08006: lost".into()));
        assert!(!l.settled(Duration::ZERO, 1), "worker 1 has no streak");
        assert!(!l.settled(l.now(), 1), "nothing started since now");
        let s = l.start(1);
        l.done(1, Op::Read, s, Ok(()));
        assert!(l.settled(Duration::ZERO, 1));
        assert!(!l.settled(Duration::ZERO, 2));
        let sum = l.summary(Duration::ZERO);
        assert_eq!((sum.ops, sum.errors, sum.errors_before_fault), (3, 1, 0));
        assert_eq!(sum.acked, vec![1]);
        assert_eq!(sum.unacked, vec![2]);
        assert_eq!(sum.kinds, vec![("08006: lost".to_string(), 1)]);
        assert!(sum.recovery.is_some_and(|r| r > Duration::ZERO));
    }

    #[test]
    fn error_texts_fold_numbers_but_keep_sqlstates() {
        assert_eq!(
            shorten("FATAL 08006: server at 127.0.0.1:41235: gone\nDETAIL: x"),
            "FATAL 08006: server at N:N: gone"
        );
        assert_eq!(shorten("os error 111"), "os error N");
        assert_eq!(shorten("retry in 820ms"), shorten("retry in 1.02s"));
        assert_eq!(shorten("FATAL 57P01: bye"), "FATAL 57P01: bye");
        assert_eq!(shorten("XX000: internal"), "XX000: internal");
    }

    #[test]
    fn a_stuck_op_is_not_settled() {
        let l = Ledger::new(1, ms(0));
        let s = l.start(0);
        l.done(0, Op::Read, s, Ok(()));
        l.start(0);
        std::thread::sleep(ms(5));
        assert!(!l.settled(Duration::ZERO, 1));
    }
}
