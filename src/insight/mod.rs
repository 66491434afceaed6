//! Query insight: what every statement through the proxy cost, and what would make it cheaper.
//!
//! The proxy session calls [`Insight::record`] once per completed statement with a
//! [`QueryEvent`]; the fingerprint in it was computed once per statement shape
//! ([`fingerprint::fingerprint`], on the proxy's statement-cache miss). Everything else happens
//! off the request path:
//!
//! ```text
//! session --record()--> per-thread shard (uncontended lock) --merge every interval--> Aggregate
//!            |                                                                       |  ^
//!            +--slow? try_send--> slowlog task --EXPLAIN (side conn)--> plans -------+  |
//! /api/queries, /metrics top-N, pake report  <-- readers (merge first) ----------------+
//! advisor (hypopg, side conn) <-- plans + real-valued samples
//! ```
//!
//! Modules: [`fingerprint`] (identity), [`stats`] / [`collector`] / [`aggregate`] (numbers),
//! [`slowlog`] / [`explain`] (plans), [`advisor`] (indexes, N+1), [`http`] (admin API),
//! [`report`] (Markdown/JSON/HTML), [`cli`] (`pake report`, `pake observability`),
//! [`load`] (the analysis-on-vs-off load driver).

pub mod advisor;
pub mod aggregate;
pub mod cli;
pub mod collector;
pub mod config;
pub mod explain;
pub mod fingerprint;
pub mod http;
pub mod load;
pub mod metrics;
pub mod model;
pub mod report;
pub mod slowlog;
pub mod stats;

pub use config::InsightConfig;
pub use explain::ConnTarget;
pub use fingerprint::{fingerprint, parse, Fingerprint};

use aggregate::Aggregate;
use collector::{parse_trace_id, Shards};
use model::{AdviceReport, NPlusOne, QueryStats, ReportData, SlowSample, SortBy, Summary};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Where a statement was routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Route {
    Primary,
    Replica,
}

/// One completed statement, as the proxy session saw it.
#[derive(Debug, Clone, Copy)]
pub struct QueryEvent<'a> {
    /// Computed once per statement shape.
    pub fingerprint: &'a Fingerprint,
    /// The raw statement text as sent (kept only for slow samples, redacted by default).
    pub text: &'a str,
    /// Bound parameter values in text format when known (may be empty).
    pub params: &'a [Option<&'a [u8]>],
    /// An Execute: `text` is the statement as prepared, placeholders where each execution
    /// binds its values (or the fingerprint when the proxy does not know it).
    pub prepared: bool,
    pub database: &'a str,
    pub user: &'a str,
    pub application: &'a str,
    pub route: Route,
    /// [`collector::split_hash`] of database, user, application and route: statements are
    /// split by these, and a client's stay the same for many statements.
    pub split: u64,
    pub client_id: u64,
    pub client_addr: SocketAddr,
    /// Per-client transaction sequence number (N+1 within a transaction).
    pub transaction: u64,
    /// Execution time: request forwarded → completion, pool wait excluded.
    pub duration: Duration,
    /// Pool checkout wait attributed to this statement.
    pub wait: Duration,
    /// From CommandComplete.
    pub rows: u64,
    /// SQLSTATE when it failed.
    pub error: Option<&'a str>,
    /// From a sqlcommenter `traceparent`.
    pub trace_id: Option<&'a str>,
    /// The statement may write: never EXPLAIN ANALYZE it.
    pub writes: bool,
}

impl QueryEvent<'_> {
    /// An Execute with no bound values kept: `text` is its statement as prepared (or the
    /// fingerprint), a template for the shape rather than one execution.
    pub fn is_template(&self) -> bool {
        self.prepared && self.params.is_empty()
    }

    /// The bound values as owned text (NULL as `None`), for samples kept past the call.
    pub fn owned_params(&self) -> Vec<Option<String>> {
        self.params
            .iter()
            .map(|p| p.map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InsightError {
    #[error("unknown fingerprint {0}")]
    UnknownFingerprint(String),
    #[error("not a trace id (32 hex digits): {0:?}")]
    BadTraceId(String),
    #[error(transparent)]
    Advisor(#[from] advisor::AdvisorError),
}

/// The query-insight engine; one per process, shared by every session.
pub struct Insight {
    pub(crate) config: InsightConfig,
    shards: Shards,
    pub(crate) agg: Mutex<Aggregate>,
    slow_tx: mpsc::Sender<slowlog::SlowEvent>,
    slow_rx: Mutex<Option<mpsc::Receiver<slowlog::SlowEvent>>>,
    slow: AtomicU64,
    slow_dropped: AtomicU64,
    pub(crate) databases: RwLock<HashMap<String, ConnTarget>>,
    metrics: metrics::InsightMetrics,
    advice: Mutex<AdviceReport>,
    /// Serialises advisor runs (hypopg state lives in its side connection).
    advising: tokio::sync::Mutex<()>,
    started: AtomicBool,
}

impl Insight {
    /// Build the engine and, when called inside a tokio runtime, start its background tasks
    /// (merger, slow-query task, periodic advisor); otherwise call [`Insight::start`] later.
    pub fn new(config: InsightConfig, registry: &prometheus::Registry) -> Arc<Insight> {
        let (slow_tx, slow_rx) = mpsc::channel(config.slow_queue.max(1));
        let insight = Arc::new(Insight {
            shards: Shards::new(),
            agg: Mutex::new(Aggregate::default()),
            slow_tx,
            slow_rx: Mutex::new(Some(slow_rx)),
            slow: AtomicU64::new(0),
            slow_dropped: AtomicU64::new(0),
            databases: RwLock::new(HashMap::new()),
            metrics: metrics::InsightMetrics::new(registry),
            advice: Mutex::new(AdviceReport::default()),
            advising: tokio::sync::Mutex::new(()),
            started: AtomicBool::new(false),
            config,
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            insight.start();
        }
        insight
    }

    /// Start the background tasks on the current runtime (once; later calls do nothing).
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(rx) = self.slow_rx.lock().take() {
            tokio::spawn(slowlog::run(Arc::downgrade(self), rx));
        }
        let weak = Arc::downgrade(self);
        let every = self.config.merge_interval.0.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(ins) = weak.upgrade() else { break };
                ins.flush();
            }
        });
        if let Some(every) = self.config.advisor_interval.enabled() {
            tokio::spawn(advisor::run_periodically(Arc::downgrade(self), every));
        }
    }

    pub fn config(&self) -> &InsightConfig {
        &self.config
    }

    /// Hot path: called once per completed statement. Takes only this thread's shard lock
    /// (uncontended in steady state); a slow statement is also queued without blocking.
    #[inline]
    pub fn record(&self, ev: &QueryEvent<'_>) {
        if !self.config.enabled {
            return;
        }
        self.shards
            .local()
            .lock()
            .record(ev, || stats::unix_ms(SystemTime::now()));
        if ev.duration >= self.config.slow_query_threshold.0 {
            self.record_slow(ev);
        }
    }

    #[cold]
    fn record_slow(&self, ev: &QueryEvent<'_>) {
        self.slow.fetch_add(1, Ordering::Relaxed);
        if self
            .slow_tx
            .try_send(slowlog::SlowEvent::from_event(ev))
            .is_err()
        {
            self.slow_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Where EXPLAIN/hypopg side-channel connections go for database `name`.
    pub fn register_database(&self, name: &str, conn: ConnTarget) {
        self.databases.write().insert(name.to_string(), conn);
    }

    /// Merge every thread's shard into the aggregate and refresh the Prometheus top N.
    /// Runs every `merge_interval`; readers call it first so they see every recorded call.
    pub fn flush(&self) {
        let shards = self.shards.drain();
        let (top, summary) = {
            let mut agg = self.agg.lock();
            agg.merge(shards, &self.config, SystemTime::now());
            agg.counters.slow = self.slow.load(Ordering::Relaxed);
            agg.counters.slow_dropped = self.slow_dropped.load(Ordering::Relaxed);
            (
                top_n(&agg, SortBy::TotalTime, self.config.metrics_top_n, None),
                agg.summary(),
            )
        };
        self.metrics.refresh(&top, &summary);
    }

    pub fn summary(&self) -> Summary {
        self.flush();
        self.agg.lock().summary()
    }

    /// Fingerprints sorted by `sort` (descending), at most `limit`, optionally of one database.
    pub fn queries(&self, sort: SortBy, limit: usize, database: Option<&str>) -> Vec<QueryStats> {
        self.flush();
        top_n(&self.agg.lock(), sort, limit, database)
    }

    /// One fingerprint by its hex id.
    pub fn query(&self, id: &str) -> Result<QueryStats, InsightError> {
        self.flush();
        let agg = self.agg.lock();
        let all = agg.total_ns();
        u64::from_str_radix(id, 16)
            .ok()
            .and_then(|n| agg.fps.get(&n))
            .map(|e| agg.query_stats(e, all))
            .ok_or_else(|| InsightError::UnknownFingerprint(id.to_string()))
    }

    /// The captured plan of one fingerprint, if any.
    pub fn plan(&self, id: &str) -> Option<model::CapturedPlan> {
        let n = u64::from_str_radix(id, 16).ok()?;
        self.agg.lock().fps.get(&n)?.plan.clone()
    }

    /// Recent slow samples, newest first.
    pub fn slow_samples(&self, limit: usize) -> Vec<SlowSample> {
        let agg = self.agg.lock();
        let mut v: Vec<SlowSample> = agg
            .fps
            .values()
            .flat_map(|e| e.samples.iter().cloned())
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.at_ms));
        v.truncate(limit);
        v
    }

    pub fn n_plus_one(&self) -> Vec<NPlusOne> {
        self.flush();
        self.agg.lock().n_plus_one()
    }

    /// Statements seen under one trace id (oldest first).
    pub fn trace(&self, trace_id: &str) -> Result<Vec<model::TraceStatement>, InsightError> {
        let t = parse_trace_id(&trace_id.to_ascii_lowercase())
            .ok_or_else(|| InsightError::BadTraceId(trace_id.to_string()))?;
        self.flush();
        Ok(self.agg.lock().trace(t))
    }

    /// Run the index advisor now (one run at a time) and keep its report.
    pub async fn advise(&self) -> Result<AdviceReport, InsightError> {
        let _one = self.advising.lock().await;
        self.flush();
        let report = advisor::advise(self).await?;
        *self.advice.lock() = report.clone();
        Ok(report)
    }

    /// Everything `pake report` renders, with advice run now on the current statistics
    /// (`advise`), or the last run's advice, whose age and coverage the report states. A
    /// failed run never fails the report: its error becomes a note.
    pub async fn report_with_advice(&self, limit: usize, advise: bool) -> ReportData {
        let fresh = if advise {
            match self.advise().await {
                Ok(mut a) => {
                    a.fresh = true;
                    Some(a)
                }
                Err(e) => {
                    let mut a = self.last_advice();
                    a.notes.push(format!("the advisor could not run now: {e}"));
                    Some(a)
                }
            }
        } else {
            None
        };
        let mut data = self.report(limit);
        if let Some(a) = fresh {
            data.advice = a;
        }
        data
    }

    /// The last advisor report, with current N+1 findings.
    pub fn last_advice(&self) -> AdviceReport {
        let mut a = self.advice.lock().clone();
        a.n_plus_one = self.n_plus_one();
        a
    }

    /// Everything `pake report` renders.
    pub fn report(&self, limit: usize) -> ReportData {
        let queries = self.queries(SortBy::TotalTime, limit, None);
        // one statement per lock: a guard held across the next call would deadlock
        let summary = self.agg.lock().summary();
        ReportData {
            queries,
            summary,
            slow: self.slow_samples(limit * 2),
            advice: self.last_advice(),
        }
    }
}

fn top_n(agg: &Aggregate, sort: SortBy, limit: usize, database: Option<&str>) -> Vec<QueryStats> {
    let all = agg.total_ns();
    let mut v: Vec<QueryStats> = agg
        .fps
        .values()
        .filter(|e| e.stats.moments.calls > 0)
        .filter(|e| database.is_none_or(|d| e.stats.splits.iter().any(|(k, _)| &*k.database == d)))
        .map(|e| agg.query_stats(e, all))
        .collect();
    v.sort_by(|a, b| sort.key(b).total_cmp(&sort.key(a)).then(a.id.cmp(&b.id)));
    v.truncate(limit);
    v
}
