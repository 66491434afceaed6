//! The measuring loop: one task per active client, each with its own histogram (no shared
//! state while measuring), merged when the run ends. Closed loop (next request when the
//! answer arrives) or open loop (requests on a fixed schedule; latency counts from the
//! scheduled start, so a stalled proxy cannot hide its queueing — no coordinated omission).

use super::rng::Rng;
use super::stop::Stop;
use hdrhistogram::Histogram;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What one request (or one pipelined batch) did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Done {
    /// Operations completed (commands in a pipelined batch, else 1).
    pub ops: u32,
    /// Of those, reads (for the replica share).
    pub reads: u32,
}

/// A connected client the loop can drive.
pub trait Client: Send + 'static {
    /// One request; `Err` carries a printable reason (the server's SQLSTATE and message).
    fn request(&mut self, rng: &mut Rng) -> impl Future<Output = Result<Done, String>> + Send;
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Each client sends its next request as soon as the previous answer arrives.
    Closed,
    /// Each client sends one request every `interval` (open loop).
    Open { interval: Duration },
}

/// What ends a run besides its duration: a stop request (Ctrl-C), and a cap on requests.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub stop: Stop,
    /// Requests (a pipelined batch counts once) over all clients of one run.
    pub max_requests: Option<u64>,
    /// How long after the deadline a client may still be in a request before its task is
    /// aborted and counted as an error: a hung server cannot hold the run forever.
    pub overrun: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            stop: Stop::new(),
            max_requests: None,
            overrun: Duration::from_secs(10),
        }
    }
}
/// The same after a stop request.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Highest latency the histograms hold (larger values are clamped to it).
const MAX_MICROS: u64 = 30_000_000;

/// Latencies (µs) and counters of one run, or of several merged.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub hist: Histogram<u32>,
    pub ops: u64,
    pub reads: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Default for Measurement {
    fn default() -> Self {
        Measurement::new()
    }
}

impl Measurement {
    pub fn new() -> Measurement {
        let hist = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .unwrap_or_else(|e| panic!("histogram bounds are constants: {e}"));
        Measurement {
            hist,
            ops: 0,
            reads: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn record(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        self.hist.saturating_record(us);
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    /// Add `other` (another client, or another round).
    pub fn merge(&mut self, other: &Measurement) {
        // same bounds on both sides, so `add` cannot fail
        let _ = self.hist.add(&other.hist);
        self.ops += other.ops;
        self.reads += other.reads;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency at `q` (0..=1) in microseconds; 0 when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q)
        }
    }
}

/// Drive `clients` for `duration` (or until `bounds` end the run); the clients come back
/// for the next run, except those still stuck in a request long after the end.
pub async fn drive<C: Client>(
    clients: Vec<C>,
    duration: Duration,
    pace: Pace,
    seed: u64,
    bounds: &Bounds,
) -> (Vec<C>, Measurement) {
    let start = Instant::now();
    let deadline = start + duration;
    let n = clients.len().max(1) as u32;
    let budget = bounds.max_requests.map(|m| Arc::new(AtomicU64::new(m)));
    let mut set = JoinSet::new();
    for (i, c) in clients.into_iter().enumerate() {
        // open loop: spread the clients' first requests over one interval
        let first = match pace {
            Pace::Closed => start,
            Pace::Open { interval } => start + interval * i as u32 / n,
        };
        let rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
        let end = End {
            deadline,
            stop: bounds.stop.clone(),
            budget: budget.clone(),
        };
        set.spawn(worker(c, pace, first, end, rng));
    }
    let mut total = Measurement::new();
    let mut back = Vec::with_capacity(n as usize);
    let (stop, overrun) = (bounds.stop.clone(), bounds.overrun);
    let cut = async move {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline + overrun) => {}
            _ = async { stop.wait().await; tokio::time::sleep(STOP_GRACE).await } => {}
        }
    };
    tokio::pin!(cut);
    let mut cut_off = false;
    loop {
        let joined = tokio::select! {
            j = set.join_next() => j,
            _ = &mut cut, if !cut_off && !set.is_empty() => {
                cut_off = true;
                let stuck = set.len();
                set.abort_all();
                total.error(format!("{stuck} client(s) still in a request at the end: aborted"));
                total.errors += stuck.saturating_sub(1) as u64;
                continue;
            }
        };
        match joined {
            None => break,
            Some(Ok((c, m))) => {
                total.merge(&m);
                back.push(c);
            }
            Some(Err(e)) if e.is_cancelled() => {}
            Some(Err(e)) => total.error(format!("client task failed: {e}")),
        }
    }
    total.elapsed = start.elapsed();
    (back, total)
}

/// When one client stops.
struct End {
    deadline: Instant,
    stop: Stop,
    budget: Option<Arc<AtomicU64>>,
}

impl End {
    fn reached(&self, now: Instant) -> bool {
        now >= self.deadline
            || self.stop.requested()
            || self.budget.as_ref().is_some_and(|b| {
                b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
                    .is_err()
            })
    }
}

async fn worker<C: Client>(
    mut client: C,
    pace: Pace,
    first: Instant,
    end: End,
    mut rng: Rng,
) -> (C, Measurement) {
    let mut m = Measurement::new();
    let mut next = first;
    loop {
        let began = match pace {
            Pace::Closed => Instant::now(),
            Pace::Open { interval } => {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = end.stop.wait() => break,
                }
                let scheduled = next;
                next += interval;
                scheduled
            }
        };
        if end.reached(began) {
            break;
        }
        match client.request(&mut rng).await {
            Ok(done) => {
                m.ops += u64::from(done.ops);
                m.reads += u64::from(done.reads);
                m.record(began.elapsed());
            }
            Err(e) => {
                m.error(e);
                // a dead connection fails at once: do not spin on it
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    (client, m)
}

/// Open `n` connections with at most `parallel` logins in flight; failures are returned
/// one by one (the caller counts them) rather than aborting the whole set.
pub async fn open_many<C, F, Fut>(n: usize, parallel: usize, open: F) -> Vec<Result<C, String>>
where
    C: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<C, String>> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if set.len() >= parallel.max(1) {
            if let Some(r) = set.join_next().await {
                out.push(r.unwrap_or_else(|e| Err(format!("connect task failed: {e}"))));
            }
        }
        set.spawn(open(i));
    }
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap_or_else(|e| Err(format!("connect task failed: {e}"))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sleepy(u32);

    impl Client for Sleepy {
        async fn request(&mut self, _rng: &mut Rng) -> Result<Done, String> {
            self.0 += 1;
            if self.0 % 10 == 0 {
                return Err("every tenth fails".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(Done { ops: 1, reads: 1 })
        }
    }

    #[tokio::test]
    async fn closed_loop_counts_ops_and_errors() {
        let (back, m) = drive(
            vec![Sleepy(0), Sleepy(0)],
            Duration::from_millis(200),
            Pace::Closed,
            1,
            &Bounds::default(),
        )
        .await;
        assert_eq!(back.len(), 2);
        assert!(m.ops > 10, "{m:?}");
        assert!(m.errors > 0);
        assert_eq!(m.first_error.as_deref(), Some("every tenth fails"));
        assert!(m.quantile_us(0.5) >= 2000);
    }

    #[tokio::test]
    async fn open_loop_keeps_the_schedule() {
        let (_, m) = drive(
            vec![Sleepy(0)],
            Duration::from_millis(300),
            Pace::Open {
                interval: Duration::from_millis(20),
            },
            1,
            &Bounds::default(),
        )
        .await;
        // 15 slots, one of them an error
        assert!((10..=15).contains(&(m.ops + m.errors)), "{m:?}");
    }

    #[tokio::test]
    async fn a_stop_or_a_request_cap_ends_the_run_early() {
        let bounds = Bounds {
            max_requests: Some(25),
            ..Bounds::default()
        };
        let (back, m) = drive(
            vec![Sleepy(0), Sleepy(0)],
            Duration::from_secs(30),
            Pace::Closed,
            1,
            &bounds,
        )
        .await;
        assert_eq!(back.len(), 2);
        assert_eq!(m.ops + m.errors, 25, "{m:?}");
        let bounds = Bounds::default();
        let stopper = bounds.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stopper.request();
        });
        let (back, m) = drive(
            vec![Sleepy(0)],
            Duration::from_secs(30),
            Pace::Closed,
            1,
            &bounds,
        )
        .await;
        assert_eq!(back.len(), 1);
        assert!(m.ops > 0 && m.elapsed < Duration::from_secs(30), "{m:?}");
    }

    struct Hung;

    impl Client for Hung {
        async fn request(&mut self, _rng: &mut Rng) -> Result<Done, String> {
            std::future::pending::<()>().await;
            Ok(Done::default())
        }
    }

    #[tokio::test]
    async fn a_client_stuck_in_a_request_is_cut_off() {
        let bounds = Bounds {
            overrun: Duration::from_millis(100),
            ..Bounds::default()
        };
        let (back, m) = drive(
            vec![Hung, Hung],
            Duration::from_millis(50),
            Pace::Closed,
            1,
            &bounds,
        )
        .await;
        assert!(back.is_empty());
        assert_eq!(m.errors, 2, "{m:?}");
        assert!(m.first_error.unwrap().contains("aborted"));
    }
}
