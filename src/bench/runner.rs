//! Running one scenario: for each case (client count), an unmeasured warm-up per target,
//! then rounds that visit every target in turn (A B C A B C…) so machine drift hits all
//! alike. Each visit opens the clients (not timed), drives them, closes them.

use super::env::{Endpoint, Env, Target};
use super::measure::{self, open_many, Bounds, Client, Done, Measurement, Pace};
use super::peers::pake::{l1_lookups, routed};
use super::pg_load::{self, PgClient, PgShape};
use super::procfs::{Window, WindowFigures};
use super::redis_load::{self, RedisClient, RedisShape};
use super::report::{self, CaseReport, Machine, RoundEnv, ScenarioReport, TargetReport};
use super::rng::Rng;
use super::scenario::{Scenario, Workload};
use super::sql_load::{self, SqlClient, SqlShape};
use indicatif::ProgressBar;
use std::time::Duration;

/// Logins in flight at once while opening a case's clients.
const PARALLEL_LOGINS: usize = 64;

/// A Postgres or Redis client.
pub enum AnyClient {
    Pg(PgClient),
    Sql(SqlClient),
    Redis(RedisClient),
}

impl Client for AnyClient {
    async fn request(&mut self, rng: &mut Rng) -> Result<Done, String> {
        match self {
            AnyClient::Pg(c) => c.request(rng).await,
            AnyClient::Sql(c) => c.request(rng).await,
            AnyClient::Redis(c) => c.request(rng).await,
        }
    }
}

/// What each client of the scenario needs to build requests.
#[derive(Clone)]
pub enum Shape {
    Pg(PgShape),
    Sql(SqlShape),
    Redis(RedisShape),
}

impl Shape {
    pub fn of(s: &Scenario) -> Shape {
        if s.workload.is_redis() {
            Shape::Redis(RedisShape::of(s))
        } else if s.workload == Workload::PgSql {
            Shape::Sql(SqlShape::new(&s.pg.statements, s.pg.mode))
        } else {
            Shape::Pg(PgShape::of(s))
        }
    }

    /// The same load for target number `index` (a Redis load on keys of its own).
    fn for_target(&self, index: usize) -> Shape {
        match self {
            Shape::Redis(r) => Shape::Redis(r.for_target(index)),
            other => other.clone(),
        }
    }

    /// Reads of a key not read before through this target, so far (Redis loads).
    fn first_reads(&self) -> Option<u64> {
        match self {
            Shape::Redis(r) => Some(r.first_reads.count()),
            _ => None,
        }
    }

    /// Invalidation pushes the target's clients received so far (Redis loads with
    /// `client_tracking`).
    fn pushes(&self) -> Option<u64> {
        match self {
            Shape::Redis(r) if r.client_tracking => {
                Some(r.pushes.load(std::sync::atomic::Ordering::Relaxed))
            }
            _ => None,
        }
    }
}

/// Open `n` clients to `target`; failed logins come back as errors, one each.
pub async fn open_clients(
    target: &Target,
    shape: &Shape,
    n: usize,
) -> Vec<Result<AnyClient, String>> {
    let (endpoint, slots) = (target.endpoint.clone(), target.slots.clone());
    let auth = target.redis_auth.clone();
    let shape = shape.clone();
    open_many(n, PARALLEL_LOGINS, move |i| {
        let (endpoint, slots, shape) = (endpoint.clone(), slots.clone(), shape.clone());
        let auth = auth.clone();
        async move {
            match (endpoint, shape) {
                (Endpoint::Pg(url), Shape::Pg(shape)) => {
                    pg_load::connect(url, shape, i).await.map(AnyClient::Pg)
                }
                (Endpoint::Pg(url), Shape::Sql(shape)) => {
                    sql_load::connect(url, shape).await.map(AnyClient::Sql)
                }
                (Endpoint::Redis(addr), Shape::Redis(shape)) => {
                    redis_load::connect(addr, slots, shape, auth.as_deref())
                        .await
                        .map(AnyClient::Redis)
                }
                _ => Err("scenario and target speak different protocols".into()),
            }
        }
    })
    .await
}

/// Open `n` clients: those that logged in, and the failed logins counted as errors.
pub async fn open_counted(t: &Target, shape: &Shape, n: usize) -> (Vec<AnyClient>, Measurement) {
    let mut conns = Vec::with_capacity(n);
    let mut failed = Measurement::new();
    for r in open_clients(t, shape, n).await {
        match r {
            Ok(c) => conns.push(c),
            Err(e) => {
                failed.errors += 1;
                failed.first_error.get_or_insert(format!("connect: {e}"));
            }
        }
    }
    (conns, failed)
}

/// Run the whole scenario against the targets of `env` (lab or the user's own).
pub async fn run(
    s: &Scenario,
    env: &Env,
    progress: &ProgressBar,
    bounds: &Bounds,
) -> ScenarioReport {
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for u in &env.unavailable {
        progress.suspend(|| eprintln!("target unavailable: {}: {}", u.target, u.reason));
    }
    let mut cases = Vec::new();
    for &clients in &s.clients {
        if bounds.stop.requested() {
            break;
        }
        let case = if s.workload == Workload::IdleMemory {
            super::idle::run_case(s, env, clients, progress).await
        } else {
            run_case(s, env, clients, progress, bounds).await
        };
        cases.push(case);
    }
    let machine = Machine::probe();
    let warnings = report::warnings(&cases, machine.nproc);
    ScenarioReport {
        scenario: s.clone(),
        machine,
        started_at,
        unavailable: env.unavailable.clone(),
        cases,
        warnings,
        partial: bounds.stop.requested(),
    }
}

/// Per target: each round's ops/s, all rounds merged, reads Pake sent to the replica.
struct Tally {
    rounds: Vec<f64>,
    merged: Measurement,
    replica_reads: Option<f64>,
    /// Redis L1 (hits, misses) while measured, for Pake with its L1 on.
    l1: Option<(f64, f64)>,
    /// Redis loads: reads of a key for the first time through the target, while measured.
    first_reads: Option<u64>,
    /// Redis loads with client tracking: invalidation pushes received while measured.
    pushes: Option<u64>,
    /// CPU and machine load of each round.
    envs: Vec<RoundEnv>,
}

/// What one visit measured.
struct Visit {
    m: Measurement,
    replica_reads: Option<f64>,
    l1: Option<(f64, f64)>,
    first_reads: Option<u64>,
    pushes: Option<u64>,
    window: WindowFigures,
}

async fn run_case(
    s: &Scenario,
    env: &Env,
    clients: usize,
    progress: &ProgressBar,
    bounds: &Bounds,
) -> CaseReport {
    let shape = Shape::of(s);
    let active = s.active.map_or(clients, |a| a.min(clients));
    let pace = match s.rate {
        Some(rate) if rate > 0.0 => Pace::Open {
            interval: Duration::from_secs_f64(active as f64 / rate),
        },
        _ => Pace::Closed,
    };
    let shapes: Vec<Shape> = (0..env.targets.len())
        .map(|i| shape.for_target(i))
        .collect();
    let go = |i: usize, secs: f64, seed: u64| {
        let (shape, t) = (shapes[i].clone(), env.targets[i].clone());
        let replica = env.replica;
        let bounds = bounds.clone();
        async move {
            let secs = Duration::from_secs_f64(secs);
            let load = Load {
                clients,
                active,
                secs,
                pace,
                seed,
            };
            visit(&t, &shape, &load, replica, &bounds).await
        }
    };
    if s.warmup_secs > 0.0 {
        for (i, t) in env.targets.iter().enumerate() {
            if bounds.stop.requested() {
                break;
            }
            progress.set_message(format!("{} {clients} clients: warm-up {}", s.name, t.name));
            drop(go(i, s.warmup_secs, 0).await);
        }
    }
    let mut tallies: Vec<Tally> = env
        .targets
        .iter()
        .map(|_| Tally {
            rounds: Vec::new(),
            merged: Measurement::new(),
            replica_reads: None,
            l1: None,
            first_reads: None,
            pushes: None,
            envs: Vec::new(),
        })
        .collect();
    for round in 0..s.rounds {
        for (i, (t, tally)) in env.targets.iter().zip(&mut tallies).enumerate() {
            if bounds.stop.requested() {
                break;
            }
            progress.set_message(format!(
                "{} {clients} clients: round {}/{} {}",
                s.name,
                round + 1,
                s.rounds,
                t.name
            ));
            let v = go(i, s.duration_secs, round as u64 + 1).await;
            if let Some(n) = v.first_reads {
                *tally.first_reads.get_or_insert(0) += n;
            }
            if let Some(n) = v.pushes {
                *tally.pushes.get_or_insert(0) += n;
            }
            if let Some((h, miss)) = v.l1.filter(|(h, miss)| h + miss > 0.0) {
                let sum = tally.l1.get_or_insert((0.0, 0.0));
                *sum = (sum.0 + h, sum.1 + miss);
            }
            tally.envs.push(RoundEnv::new(round + 1, &v.m, &v.window));
            tally.rounds.push(v.m.ops_per_sec());
            tally.merged.merge(&v.m);
            if let Some(r) = v.replica_reads {
                *tally.replica_reads.get_or_insert(0.0) += r;
            }
            progress.inc(1);
        }
    }
    case_report(s, env, clients, active, tallies)
}

fn case_report(
    s: &Scenario,
    env: &Env,
    clients: usize,
    active: usize,
    tallies: Vec<Tally>,
) -> CaseReport {
    let mut targets: Vec<TargetReport> = env
        .targets
        .iter()
        .zip(tallies)
        .map(|(t, tally)| {
            let mut r = TargetReport::from_measurement(&t.name, tally.rounds, &tally.merged);
            r.replica_share = tally
                .replica_reads
                .filter(|_| tally.merged.reads > 0)
                .map(|n| n / tally.merged.reads as f64);
            r.l1_hit_rate = tally.l1.map(|(h, miss)| h / (h + miss));
            r.first_read_share = tally
                .first_reads
                .filter(|_| tally.merged.reads > 0)
                .map(|n| n as f64 / tally.merged.reads as f64);
            r.pushes_per_op = tally
                .pushes
                .filter(|_| tally.merged.ops > 0)
                .map(|n| n as f64 / tally.merged.ops as f64);
            r.cpu_us_per_op = report::cpu_us_per_op(&tally.envs);
            r.rounds_env = tally.envs;
            r
        })
        .collect();
    let base = targets
        .iter()
        .find(|t| t.name == s.baseline())
        .map(|t| t.ops_per_sec);
    for t in &mut targets {
        t.ratio = base.filter(|b| *b > 0.0).map(|b| t.ops_per_sec / b);
    }
    CaseReport {
        clients,
        active,
        rate: s.rate,
        targets,
    }
}

/// The load of one visit.
struct Load {
    clients: usize,
    active: usize,
    secs: Duration,
    pace: Pace,
    seed: u64,
}

/// One visit: open `clients`, drive `active` of them for `secs`, keep the rest idle.
/// Besides the measurement: for Pake in front of a replica the reads it routed there, for
/// Pake with a Redis L1 its (hits, misses) meanwhile, and the CPU of the target's process
/// and of the machine over the measured window.
async fn visit(t: &Target, shape: &Shape, load: &Load, replica: bool, bounds: &Bounds) -> Visit {
    let (mut conns, failed) = open_counted(t, shape, load.clients).await;
    let idle = conns.split_off(load.active.min(conns.len()));
    let redis = matches!(shape, Shape::Redis(_));
    let admin = t.admin.filter(|_| replica);
    let before = match admin {
        Some(a) => routed(a).await.ok(),
        None => None,
    };
    let l1_admin = t.admin.filter(|_| redis);
    let l1_before = match l1_admin {
        Some(a) => l1_lookups(a).await.ok(),
        None => None,
    };
    let first_before = shape.first_reads();
    let pushes_before = shape.pushes();
    let window = Window::start(t.pid);
    let (_, mut m) = measure::drive(conns, load.secs, load.pace, load.seed, bounds).await;
    let window = window.end();
    let first_reads = shape.first_reads().zip(first_before).map(|(a, b)| a - b);
    let pushes = shape.pushes().zip(pushes_before).map(|(a, b)| a - b);
    let after = match admin {
        Some(a) => routed(a).await.ok(),
        None => None,
    };
    let l1_after = match l1_admin {
        Some(a) => l1_lookups(a).await.ok(),
        None => None,
    };
    drop(idle);
    m.merge(&failed);
    Visit {
        m,
        replica_reads: before.zip(after).map(|(b, a)| a.1 - b.1),
        l1: l1_before.zip(l1_after).map(|(b, a)| (a.0 - b.0, a.1 - b.1)),
        first_reads,
        pushes,
        window,
    }
}
