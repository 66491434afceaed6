//! One database's replicas as the router sees them: health, lag, bans, the primary's WAL
//! position, and which functions are safe to run on a replica.
//!
//! A monitor task per database samples everything on its own tokio-postgres connections,
//! off the request path, every `health_check_interval`: the primary's
//! `pg_current_wal_insert_lsn()` (past every record inserted, so past any commit that
//! returned, also with `synchronous_commit = off`) and, per replica, `pg_is_in_recovery()`, `pg_last_wal_replay_lsn()` and
//! `pg_last_xact_replay_timestamp()`. Sessions read the results from atomics: choosing a
//! replica takes no lock.
//!
//! Primary failover: the monitor also reads the writer's timeline. A replica that leaves
//! recovery (`pg_ctl promote`, Patroni, pg_auto_failover) becomes the writer when the
//! current writer is unreachable or in recovery, or when the replica's timeline is newer than
//! the writer's (the old primary still runs but was replaced). Writes then go to the promoted
//! node's pool; the old primary is fenced for the life of the topology (a reload or restart
//! re-reads the configured roles), so Pake never writes to two primaries.

use crate::config::{Balance, LagLimit, Replica, Routing};
use crate::obs::metrics::Metrics;
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Volatile functions that nevertheless cannot change data (safe on a replica).
const HARMLESS_VOLATILE: &[&str] = &[
    "random",
    "random_normal",
    "gen_random_uuid",
    "uuid_generate_v4",
    "clock_timestamp",
    "timeofday",
    "statement_timestamp",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "pg_is_in_recovery",
    "pg_last_wal_replay_lsn",
    "pg_last_wal_receive_lsn",
    "pg_last_xact_replay_timestamp",
];

/// How to log in for the monitor's side connections.
#[derive(Debug, Clone)]
pub struct MonitorLogin {
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub primary_host: String,
    pub primary_port: u16,
}

/// What the router knows about one replica, updated by the monitor.
#[derive(Debug)]
pub struct ReplicaState {
    pub index: usize,
    pub config: Replica,
    /// `host:port`, for logs and metrics.
    pub name: String,
    pub replay_lsn: AtomicU64,
    pub lag_bytes: AtomicU64,
    pub lag_millis: AtomicU64,
    pub healthy: AtomicBool,
    /// Milliseconds since the topology's epoch until which the replica gets no reads.
    banned_until: AtomicU64,
    /// Requests running on this replica (least-outstanding balancing).
    pub outstanding: AtomicUsize,
}

/// Function volatility from the primary's catalog (`pg_proc`).
#[derive(Debug, Default)]
pub struct Catalog {
    /// name → any overload VOLATILE
    volatile: HashMap<Box<str>, bool>,
    loaded: bool,
}

/// Per-database routing state shared by every user's pools.
pub struct Topology {
    pub database: String,
    pub replicas: Vec<ReplicaState>,
    settings: Routing,
    primary_functions: HashSet<String>,
    primary_lsn: AtomicU64,
    /// Number of primary samples started: taken before each position query is sent.
    primary_started: AtomicU64,
    /// The number (in start order) of the sample whose position `primary_lsn` holds.
    /// A sample numbered above what `primary_started` was when a transaction committed
    /// was sent after the commit, so its position covers the commit.
    primary_seq: AtomicU64,
    catalog: ArcSwap<Catalog>,
    epoch: Instant,
    rr: AtomicUsize,
    /// Who takes writes: 0 for the configured primary, `i + 1` for promoted `replicas[i]`.
    writer: AtomicUsize,
    /// The writer's timeline at its last sample (0 until known).
    writer_timeline: AtomicU64,
    metrics: Arc<Metrics>,
    /// Health-check rounds the monitor has completed (start waits for the first).
    rounds: tokio::sync::watch::Sender<u64>,
}

impl Topology {
    pub fn new(
        database: &str,
        replicas: &[Replica],
        settings: Routing,
        metrics: Arc<Metrics>,
    ) -> Arc<Topology> {
        let replicas = replicas
            .iter()
            .enumerate()
            .map(|(index, r)| ReplicaState {
                index,
                name: format!("{}:{}", r.host, r.port),
                config: r.clone(),
                replay_lsn: AtomicU64::new(0),
                lag_bytes: AtomicU64::new(0),
                lag_millis: AtomicU64::new(0),
                // unknown until the first check: no reads until then
                healthy: AtomicBool::new(false),
                banned_until: AtomicU64::new(0),
                outstanding: AtomicUsize::new(0),
            })
            .collect();
        Arc::new(Topology {
            database: database.to_string(),
            replicas,
            primary_functions: settings
                .primary_functions
                .iter()
                .map(|f| f.to_ascii_lowercase())
                .collect(),
            settings,
            primary_lsn: AtomicU64::new(0),
            primary_started: AtomicU64::new(0),
            primary_seq: AtomicU64::new(0),
            catalog: ArcSwap::from_pointee(Catalog::default()),
            epoch: Instant::now(),
            rr: AtomicUsize::new(0),
            writer: AtomicUsize::new(0),
            writer_timeline: AtomicU64::new(0),
            metrics,
            rounds: tokio::sync::watch::channel(0).0,
        })
    }

    /// The replica that was promoted and now takes writes, if the primary failed over.
    pub fn promoted(&self) -> Option<&ReplicaState> {
        match self.writer.load(Ordering::Acquire) {
            0 => None,
            i => self.replicas.get(i - 1),
        }
    }

    /// Move writes to `replicas[index]` (it left recovery); the old writer is fenced.
    fn promote(&self, index: usize, timeline: u64, why: &str) {
        let old = self.writer.swap(index + 1, Ordering::AcqRel);
        if old == index + 1 {
            return;
        }
        self.writer_timeline.store(timeline, Ordering::Release);
        let from = match old {
            0 => "primary".to_string(),
            i => self
                .replicas
                .get(i - 1)
                .map_or("?".into(), |r| r.name.clone()),
        };
        let to = &self.replicas[index];
        to.healthy.store(false, Ordering::Relaxed);
        tracing::warn!(
            database = %self.database, from = %from, to = %to.name, timeline, reason = why,
            "primary failover: writes move to the promoted replica"
        );
        self.metrics
            .primary_failovers
            .with_label_values(&[&self.database, &to.name])
            .inc();
    }

    /// Wait up to `limit` for the monitor's first health-check round (at once without
    /// replicas: there is nothing to sample); whether it has run.
    pub async fn first_sample(&self, limit: Duration) -> bool {
        if self.replicas.is_empty() {
            return true;
        }
        let mut rounds = self.rounds.subscribe();
        let done = tokio::time::timeout(limit, rounds.wait_for(|n| *n > 0)).await;
        matches!(done, Ok(Ok(_)))
    }

    pub fn settings(&self) -> &Routing {
        &self.settings
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn is_banned(&self, r: &ReplicaState) -> bool {
        r.banned_until.load(Ordering::Relaxed) > self.now_ms()
    }

    /// Ban a replica for `ban_time` (lag, failed check, failed connect).
    pub fn ban(&self, r: &ReplicaState, why: &str) {
        let until = self.now_ms() + self.settings.ban_time.0.as_millis() as u64;
        let was = r.banned_until.swap(until, Ordering::Relaxed);
        if was <= self.now_ms() {
            tracing::warn!(database = %self.database, replica = %r.name, reason = why, "replica banned");
        }
        self.metrics
            .replica_banned
            .with_label_values(&[&self.database, &r.name])
            .set(1);
    }

    /// The primary sample sequence now (a session records it when it commits a write).
    /// Call when a write committed: samples numbered above the result started after it.
    pub fn primary_seq(&self) -> u64 {
        self.primary_started.load(Ordering::Acquire)
    }

    /// Number a primary sample before its query is sent: a sample that merely completes
    /// after a commit may have read the position before it.
    fn begin_primary_sample(&self) -> u64 {
        self.primary_started.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Two samplers (health check and position sampler) may finish out of order: positions
    /// only grow on one writer, so the largest one is at least the position of the highest
    /// numbered sample — never older than what `primary_seq` promises.
    fn end_primary_sample(&self, number: u64, lsn: u64) {
        self.primary_lsn.fetch_max(lsn, Ordering::AcqRel);
        self.primary_seq.fetch_max(number, Ordering::AcqRel);
    }

    /// The primary's WAL position from a sample started after `seq`, if there is one yet.
    pub fn primary_lsn_after(&self, seq: u64) -> Option<u64> {
        (self.primary_seq.load(Ordering::Acquire) > seq)
            .then(|| self.primary_lsn.load(Ordering::Acquire))
    }

    /// Are all of these functions safe to run on a replica?
    pub fn functions_safe(&self, functions: &[Box<str>]) -> bool {
        if functions.is_empty() {
            return true;
        }
        let catalog = self.catalog.load();
        functions.iter().all(|f| {
            if self.primary_functions.contains(&**f) {
                return false;
            }
            if HARMLESS_VOLATILE.contains(&&**f) {
                return true;
            }
            // unknown (catalog not loaded, or not a catalog function): not sure, so no
            catalog.loaded && catalog.volatile.get(f).is_some_and(|v| !v)
        })
    }

    /// Pick a replica for a read, or `None` for the primary. `min_lsn`: the replica must
    /// have replayed at least this far (read-your-writes).
    pub fn choose(&self, min_lsn: Option<u64>) -> Option<&ReplicaState> {
        let now = self.now_ms();
        let eligible: Vec<&ReplicaState> = self
            .replicas
            .iter()
            .filter(|r| {
                r.index + 1 != self.writer.load(Ordering::Relaxed)
                    && r.healthy.load(Ordering::Relaxed)
                    && r.banned_until.load(Ordering::Relaxed) <= now
                    && min_lsn.is_none_or(|m| r.replay_lsn.load(Ordering::Acquire) >= m)
            })
            .collect();
        let local: Vec<&ReplicaState> = match &self.settings.zone {
            Some(zone) => eligible
                .iter()
                .copied()
                .filter(|r| r.config.zone.as_deref() == Some(zone.as_str()))
                .collect(),
            None => Vec::new(),
        };
        let pool = if local.is_empty() { eligible } else { local };
        if pool.is_empty() {
            return None;
        }
        let pick = match self.settings.load_balancing {
            Balance::LeastOutstanding => {
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                (0..pool.len())
                    .map(|i| pool[(start + i) % pool.len()])
                    .min_by_key(|r| r.outstanding.load(Ordering::Relaxed))?
            }
            Balance::RoundRobin => pool[self.rr.fetch_add(1, Ordering::Relaxed) % pool.len()],
            Balance::Random => pool[rand::random_range(0..pool.len())],
            Balance::Weighted => {
                let total: u64 = pool.iter().map(|r| u64::from(r.config.weight.max(1))).sum();
                let mut x = rand::random_range(0..total);
                *pool
                    .iter()
                    .find(|r| {
                        let w = u64::from(r.config.weight.max(1));
                        if x < w {
                            true
                        } else {
                            x -= w;
                            false
                        }
                    })
                    .unwrap_or(&pool[0])
            }
        };
        Some(pick)
    }

    fn lag_over_limit(&self, lag_bytes: u64, lag: Duration) -> bool {
        match self.settings.max_replica_lag {
            LagLimit::Bytes(b) => lag_bytes > b,
            LagLimit::Time(t) => lag > t.0,
        }
    }
}

/// Parse a `pg_lsn` text (`16/B374D848`) into a byte position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Start the monitor of `topology` (and its position sampler); they stop when the topology
/// is dropped.
pub fn spawn_monitor(topology: &Arc<Topology>, login: MonitorLogin) {
    if topology.replicas.is_empty() {
        return;
    }
    let weak = Arc::downgrade(topology);
    if topology.settings.position_interval.enabled().is_some() {
        tokio::spawn(positions(weak.clone(), login.clone()));
    }
    tokio::spawn(monitor(weak, login));
}

/// Sample positions only, every `position_interval`: the writer's WAL insert position and
/// the replay position of every replica the health check lets take reads. Health, lag bans,
/// roles and failover stay with the health check; a failed query here just waits for the
/// next round (and a stale replica position only keeps reads on the primary longer).
async fn positions(topology: Weak<Topology>, login: MonitorLogin) {
    let mut writer: (usize, Option<tokio_postgres::Client>) = (0, None);
    let mut replicas: Vec<Option<tokio_postgres::Client>> = Vec::new();
    loop {
        let Some(t) = topology.upgrade() else {
            return;
        };
        let Some(interval) = t.settings.position_interval.enabled() else {
            return;
        };
        let timeout = t.settings.health_check_timeout.0;
        let now = t.writer.load(Ordering::Acquire);
        if writer.0 != now {
            writer = (now, None);
        }
        let (host, port) = match t.promoted() {
            Some(r) => (r.config.host.as_str(), r.config.port),
            None => (login.primary_host.as_str(), login.primary_port),
        };
        if let Some(c) = connect_if_needed(&mut writer.1, &login, host, port, timeout).await {
            let number = t.begin_primary_sample();
            let q = c.query_one("select pg_current_wal_insert_lsn()::text", &[]);
            match tokio::time::timeout(timeout, q).await {
                Ok(Ok(row)) => {
                    let lsn = row.try_get::<_, String>(0).ok();
                    if let Some(lsn) = lsn.as_deref().and_then(parse_lsn) {
                        t.end_primary_sample(number, lsn);
                    }
                }
                _ => writer.1 = None,
            }
        }
        replicas.resize_with(t.replicas.len(), || None);
        for (r, slot) in t.replicas.iter().zip(replicas.iter_mut()) {
            if !r.healthy.load(Ordering::Relaxed) {
                continue;
            }
            let Some(c) =
                connect_if_needed(slot, &login, &r.config.host, r.config.port, timeout).await
            else {
                continue;
            };
            let q = c.query_one("select pg_last_wal_replay_lsn()::text", &[]);
            match tokio::time::timeout(timeout, q).await {
                Ok(Ok(row)) => {
                    let lsn = row.try_get::<_, Option<String>>(0).ok().flatten();
                    if let Some(lsn) = lsn.as_deref().and_then(parse_lsn) {
                        r.replay_lsn.store(lsn, Ordering::Release);
                    }
                }
                _ => *slot = None,
            }
        }
        drop(t);
        tokio::time::sleep(interval).await;
    }
}

#[derive(Default)]
struct Side {
    /// The writer `primary` is connected to (see [`Topology::promoted`]).
    writer: usize,
    primary: Option<tokio_postgres::Client>,
    replicas: Vec<Option<tokio_postgres::Client>>,
    catalog_at: Option<Instant>,
    /// When the primary reached each WAL position (oldest first, one entry per change):
    /// a replica at position R lags by the time since the primary first passed R.
    history: std::collections::VecDeque<(u64, Instant)>,
}

/// Primary positions kept for lag-time estimates (at 100 ms checks: a minute).
const HISTORY: usize = 600;

impl Side {
    fn record_primary(&mut self, lsn: u64) {
        if self.history.back().is_none_or(|(last, _)| *last != lsn) {
            self.history.push_back((lsn, Instant::now()));
            if self.history.len() > HISTORY {
                self.history.pop_front();
            }
        }
    }
}

/// How long the primary has been past `replay` (zero when the replica has caught up).
fn lag_time(history: &std::collections::VecDeque<(u64, Instant)>, replay: u64) -> Duration {
    history
        .iter()
        .find(|(lsn, _)| *lsn > replay)
        .map(|(_, at)| at.elapsed())
        .unwrap_or(Duration::ZERO)
}

async fn monitor(topology: Weak<Topology>, login: MonitorLogin) {
    let mut side = Side::default();
    loop {
        let Some(t) = topology.upgrade() else {
            return;
        };
        if side.replicas.len() != t.replicas.len() {
            side.replicas = (0..t.replicas.len()).map(|_| None).collect();
        }
        let interval = t.settings.health_check_interval.0;
        sample(&t, &login, &mut side).await;
        t.rounds.send_modify(|n| *n += 1);
        drop(t);
        tokio::time::sleep(interval).await;
    }
}

/// The writer's WAL insert position and timeline (the first 8 hex digits of its current
/// WAL file name). Fails on a server in recovery: it is no writer.
const WRITER_SAMPLE: &str = "select pg_current_wal_insert_lsn()::text, \
    ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int8";

async fn sample(t: &Topology, login: &MonitorLogin, side: &mut Side) {
    let timeout = t.settings.health_check_timeout.0;
    let writer = t.writer.load(Ordering::Acquire);
    if side.writer != writer {
        // a failover: sample the new primary from now on, with a fresh position history
        side.writer = writer;
        side.primary = None;
        side.history.clear();
    }
    let (host, port) = match t.promoted() {
        Some(r) => (r.config.host.as_str(), r.config.port),
        None => (login.primary_host.as_str(), login.primary_port),
    };
    // the writer first: a replica's lag is measured against this position
    let writer_up = sample_writer(t, login, side, host, port, timeout).await;
    let primary_lsn = t.primary_lsn.load(Ordering::Acquire);
    for (i, r) in t.replicas.iter().enumerate() {
        if i + 1 == writer {
            continue;
        }
        let slot = &mut side.replicas[i];
        let client = connect_if_needed(slot, login, &r.config.host, r.config.port, timeout).await;
        let role = match client {
            Some(c) => read_replica(c, timeout).await,
            None => None,
        };
        let ok = match role {
            Some(Role::Standby(replay)) => {
                let lag = lag_time(&side.history, replay);
                record_replica(t, r, replay, primary_lsn, lag);
                true
            }
            Some(Role::Primary { timeline }) => {
                // promoted: it takes the writes when the writer is gone or on an older
                // timeline; otherwise its data may have diverged, so it gets nothing
                let newer = timeline > t.writer_timeline.load(Ordering::Acquire);
                r.healthy.store(false, Ordering::Relaxed);
                if !writer_up || newer {
                    let why = if writer_up {
                        "newer timeline"
                    } else {
                        "primary unreachable"
                    };
                    t.promote(i, timeline, why);
                    continue;
                }
                t.ban(
                    r,
                    "out of recovery while the primary is up on the same timeline",
                );
                false
            }
            None => {
                *slot = None;
                r.healthy.store(false, Ordering::Relaxed);
                t.ban(r, "health check failed");
                false
            }
        };
        let result = if ok { "ok" } else { "failed" };
        t.metrics
            .replica_checks
            .with_label_values(&[&t.database, &r.name, result])
            .inc();
    }
}

/// Sample the writer's position and timeline; whether it answered as a primary.
async fn sample_writer(
    t: &Topology,
    login: &MonitorLogin,
    side: &mut Side,
    host: &str,
    port: u16,
    timeout: Duration,
) -> bool {
    let Some(client) = connect_if_needed(&mut side.primary, login, host, port, timeout).await
    else {
        return false;
    };
    let number = t.begin_primary_sample();
    let row = match tokio::time::timeout(timeout, client.query_one(WRITER_SAMPLE, &[])).await {
        Ok(Ok(row)) => row,
        _ => {
            side.primary = None;
            return false;
        }
    };
    let lsn = row
        .try_get::<_, String>(0)
        .ok()
        .as_deref()
        .and_then(parse_lsn);
    let timeline = row
        .try_get::<_, i64>(1)
        .ok()
        .and_then(|v| u64::try_from(v).ok());
    let (Some(lsn), Some(timeline)) = (lsn, timeline) else {
        return false;
    };
    t.end_primary_sample(number, lsn);
    t.writer_timeline.fetch_max(timeline, Ordering::AcqRel);
    side.record_primary(lsn);
    let stale = side
        .catalog_at
        .is_none_or(|at| at.elapsed() > Duration::from_secs(60));
    if stale {
        if let Some(client) = side.primary.as_ref() {
            if load_catalog(t, client, timeout).await {
                side.catalog_at = Some(Instant::now());
            }
        }
    }
    true
}

/// What a replica's health check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// In recovery, replayed this far.
    Standby(u64),
    /// Out of recovery (promoted), on this timeline.
    Primary { timeline: u64 },
}

/// A replica's role and replay position; `None` when the check failed.
async fn read_replica(client: &tokio_postgres::Client, timeout: Duration) -> Option<Role> {
    let q = client.query_one(
        "select pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, \
         case when pg_is_in_recovery() then 0 else \
         ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int8 end",
        &[],
    );
    let row = tokio::time::timeout(timeout, q).await.ok()?.ok()?;
    let in_recovery: bool = row.try_get(0).ok()?;
    if !in_recovery {
        let timeline: i64 = row.try_get(2).ok()?;
        return Some(Role::Primary {
            timeline: u64::try_from(timeline).ok()?,
        });
    }
    let replay: Option<String> = row.try_get(1).ok()?;
    replay.as_deref().and_then(parse_lsn).map(Role::Standby)
}

/// Store one replica sample; ban it when it lags past `max_replica_lag`.
fn record_replica(t: &Topology, r: &ReplicaState, replay: u64, primary_lsn: u64, lag: Duration) {
    let lag_bytes = primary_lsn.saturating_sub(replay);
    r.replay_lsn.store(replay, Ordering::Release);
    r.lag_bytes.store(lag_bytes, Ordering::Relaxed);
    r.lag_millis
        .store(lag.as_millis() as u64, Ordering::Relaxed);
    let m = &t.metrics;
    let labels = [t.database.as_str(), r.name.as_str()];
    m.replica_lag_bytes
        .with_label_values(&labels)
        .set(lag_bytes as i64);
    m.replica_lag_seconds
        .with_label_values(&labels)
        .set(lag.as_secs_f64());
    if t.lag_over_limit(lag_bytes, lag) {
        r.healthy.store(false, Ordering::Relaxed);
        t.ban(r, "replication lag over max_replica_lag");
        return;
    }
    let was_healthy = r.healthy.swap(true, Ordering::Relaxed);
    if !t.is_banned(r) {
        m.replica_banned.with_label_values(&labels).set(0);
        if !was_healthy {
            tracing::info!(database = %t.database, replica = %r.name, "replica takes reads");
        }
    }
}

async fn connect_if_needed<'a>(
    slot: &'a mut Option<tokio_postgres::Client>,
    login: &MonitorLogin,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Option<&'a tokio_postgres::Client> {
    if slot.as_ref().is_some_and(|c| c.is_closed()) {
        *slot = None;
    }
    if slot.is_none() {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(host)
            .port(port)
            .user(&login.user)
            .dbname(&login.dbname)
            .application_name("pake-monitor")
            .connect_timeout(timeout);
        if let Some(p) = &login.password {
            cfg.password(p);
        }
        match tokio::time::timeout(timeout, cfg.connect(tokio_postgres::NoTls)).await {
            Ok(Ok((client, conn))) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                *slot = Some(client);
            }
            Ok(Err(e)) => {
                tracing::debug!(host, port, error = %e, "monitor cannot connect");
            }
            Err(_) => tracing::debug!(host, port, "monitor connect timed out"),
        }
    }
    slot.as_ref()
}

async fn load_catalog(t: &Topology, client: &tokio_postgres::Client, timeout: Duration) -> bool {
    let q = client.query(
        "select proname::text, bool_or(provolatile = 'v') from pg_proc group by proname",
        &[],
    );
    let Ok(Ok(rows)) = tokio::time::timeout(timeout, q).await else {
        return false;
    };
    let volatile = rows
        .iter()
        .filter_map(|r| {
            let name: String = r.try_get(0).ok()?;
            let v: bool = r.try_get(1).ok()?;
            Some((name.into_boxed_str(), v))
        })
        .collect();
    t.catalog.store(Arc::new(Catalog {
        volatile,
        loaded: true,
    }));
    true
}

#[cfg(test)]
mod tests;
