//! Scenario files (`loadtests/*.toml`, read by `pake bench --scenario FILE`): what load to
//! offer, to which targets, for how long. One scenario, several targets, interleaved rounds.
//! Typed and `deny_unknown_fields`, so a typo in a scenario is an error naming the key.

use super::BenchError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The scenario run when `pake bench` (or `pake performance --benchmark`) gets no file:
/// pgbench -S shape against direct, Pake and PgBouncer.
pub const DEFAULT: &str = include_str!("../../loadtests/pg-select-only.toml");

/// One scenario file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; results go to `OUT/NAME.json` and `OUT/NAME.svg`.
    pub name: String,
    /// One line printed above the table.
    #[serde(default)]
    pub description: String,
    /// What each client does.
    pub workload: Workload,
    /// Targets in the order they run in each round (`direct`, `pake`, `pgbouncer`,
    /// `pake-nol1`, `twemproxy`); `--target` replaces them.
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
    /// The target the ratios are taken against; the first target when absent.
    #[serde(default)]
    pub baseline: Option<String>,
    /// Client connections, one case per entry. Closed loop (each client sends its next
    /// request when the answer arrives) unless `rate` is set; for `idle-memory`, the number
    /// of idle clients.
    #[serde(default = "default_clients")]
    pub clients: Vec<usize>,
    /// Open loop: total requests per second offered, spread evenly over `active` clients
    /// (latency is measured from each request's scheduled start, so queueing counts).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Open loop: how many of the connected clients send requests; the rest stay idle.
    #[serde(default)]
    pub active: Option<usize>,
    /// Measured seconds per target per round.
    #[serde(default = "default_duration")]
    pub duration_secs: f64,
    /// Rounds; each round runs every target once, in order (A B C A B C…).
    #[serde(default = "default_rounds")]
    pub rounds: usize,
    /// Unmeasured load per target before the first round of each case.
    #[serde(default = "default_warmup")]
    pub warmup_secs: f64,
    /// Pake worker threads; more than one value runs one Pake per value (`pake-w1`,
    /// `pake-w2`…) side by side. 0 means one per CPU.
    #[serde(default = "default_workers")]
    pub pake_workers: Vec<usize>,
    /// Postgres settings (pg-* workloads and idle-memory).
    #[serde(default)]
    pub pg: PgSettings,
    /// Redis settings (redis-* workloads).
    #[serde(default)]
    pub redis: RedisSettings,
    /// Lab Redis scenarios: put Redis behind a simulated network link for every target
    /// (direct clients, twemproxy and Pake reach it through a delaying relay).
    #[serde(default)]
    pub link: Option<super::link::LinkSettings>,
}

/// What a client does per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// pgbench -S: one SELECT by primary key.
    PgSelect,
    /// pgbench's TPC-B-like transaction: BEGIN, 3 UPDATEs, a SELECT, an INSERT, END.
    PgTpcb,
    /// Autocommit reads and writes (`pg.write_percent`), for replica routing.
    PgMixed,
    /// Idle logged-in clients: the proxy's resident memory per client.
    IdleMemory,
    /// GET/SET over a Zipf-distributed key space (`redis.*`).
    RedisGetset,
    /// Your own statements with parameter generators (`[[pg.statements]]`).
    PgSql,
}

impl Workload {
    pub fn is_redis(self) -> bool {
        matches!(self, Workload::RedisGetset)
    }
}

/// Postgres query protocol, as pgbench -M.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueryMode {
    /// Literals inlined, one Query message.
    #[default]
    Simple,
    /// Unnamed statement per request: Parse, Bind, Execute, Sync in one round trip.
    Extended,
    /// Each statement prepared once per connection, then Bind/Execute.
    Prepared,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgSettings {
    pub mode: QueryMode,
    /// pgbench -i scale (100,000 accounts per unit).
    pub scale: u32,
    /// Server connections per pool, the same for Pake and PgBouncer.
    pub pool_size: usize,
    /// `transaction` or `session`, the same for Pake and PgBouncer.
    pub pool_mode: String,
    /// Client and server authentication: `scram-sha-256` or `md5` (md5 keeps thousands of
    /// logins cheap for the client side of the benchmark).
    pub auth: String,
    /// Start a streaming replica and give it to Pake (`--pg-replica`).
    pub replica: bool,
    /// pg-mixed: percent of requests that write (or of clients, with `split_roles`).
    pub write_percent: u32,
    /// pg-mixed: each client only writes or only reads (`write_percent` of the clients
    /// write), instead of every client mixing both.
    pub split_roles: bool,
    /// The schema of the pgbench-like tables. Lab runs: none (pgbench -i, `public`); runs
    /// against your targets: `pake_bench` unless set, created by `--prepare`.
    pub schema: Option<String>,
    /// pg-sql: the statements, one picked per request by weight.
    pub statements: Vec<super::sql_load::SqlStatement>,
    /// pg-sql: SQL run by `--prepare` (and in the lab before the run), in order.
    pub prepare: Vec<String>,
    /// pg-sql: SQL run by `--cleanup`, in order.
    pub cleanup: Vec<String>,
    /// Lab runs: extra postgresql.conf lines for the lab's primary (and replica), after the
    /// lab's own (`fsync = off`, `synchronous_commit = off`, ...), so a scenario can put back
    /// a server default that its measurement depends on.
    pub server_conf: Vec<String>,
    /// Beside the `pake_workers` ones, one Pake per value with its Postgres clients on that
    /// many reactor threads (`[general] pg_threads`, one worker for the rest), named
    /// `pake-r1`, `pake-r2`…
    pub pake_reactors: Vec<usize>,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            mode: QueryMode::Simple,
            scale: 10,
            pool_size: 20,
            pool_mode: "transaction".into(),
            auth: "scram-sha-256".into(),
            replica: false,
            write_percent: 10,
            split_roles: false,
            schema: None,
            statements: Vec::new(),
            prepare: Vec::new(),
            cleanup: Vec::new(),
            server_conf: Vec::new(),
            pake_reactors: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// Percent of requests that are GET (the rest SET).
    pub read_percent: u32,
    /// Distinct keys, all written before the first round.
    pub keys: u64,
    /// Zipf exponent over key ranks (0 = uniform).
    pub zipf: f64,
    /// Bytes per value.
    pub value_size: usize,
    /// Commands sent per round trip; ops/s count commands, latency is per batch.
    pub pipeline: usize,
    /// Run against a Redis Cluster (the direct client routes by slot).
    pub cluster: bool,
    /// Server connections: Pake's `redis.pool_size` and twemproxy's `server_connections`.
    pub pool_size: usize,
    /// Prefix of every key. Lab runs: `key:`; runs against your targets: `pake_bench:`
    /// unless set (`--prepare` writes the keys, `--cleanup` deletes them).
    pub prefix: Option<String>,
    /// Beside the `pake_workers` ones, one Pake per value with its Redis clients on that
    /// many reactor threads (`[redis] threads`, one worker for the rest), named `pake-r1`,
    /// `pake-r2`… (`pake-nol1-r1`… for `pake-nol1`). Without it Pake runs one reactor
    /// thread per CPU, its default.
    pub pake_reactors: Vec<usize>,
    /// Every client says `HELLO 3` and `CLIENT TRACKING ON` first (RESP3 invalidations),
    /// as a library's client-side cache does, without caching anything itself: each GET is
    /// a tracked read, each SET an invalidation for every client that read the key since.
    /// The target must speak RESP3 (not twemproxy).
    pub client_tracking: bool,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            read_percent: 90,
            keys: 100_000,
            zipf: 0.99,
            value_size: 100,
            pipeline: 1,
            cluster: false,
            pool_size: 4,
            prefix: None,
            pake_reactors: Vec::new(),
            client_tracking: false,
        }
    }
}

fn default_targets() -> Vec<String> {
    vec!["direct".into(), "pake".into()]
}
fn default_clients() -> Vec<usize> {
    vec![100]
}
fn default_duration() -> f64 {
    10.0
}
fn default_rounds() -> usize {
    3
}
fn default_warmup() -> f64 {
    2.0
}
fn default_workers() -> Vec<usize> {
    vec![0]
}

/// Command-line changes to a scenario.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub clients: Option<Vec<usize>>,
    pub duration_secs: Option<f64>,
    pub rounds: Option<usize>,
    pub targets: Option<Vec<String>>,
    pub pake_workers: Option<Vec<usize>>,
    /// A seconds-long run that only proves the scenario works end to end.
    pub smoke: bool,
}

impl Scenario {
    /// The reactor-thread settings that add Pake targets beside `pake_workers`, from the
    /// side the workload runs on.
    pub fn pake_reactors(&self) -> &[usize] {
        if self.workload.is_redis() {
            &self.redis.pake_reactors
        } else {
            &self.pg.pake_reactors
        }
    }

    /// Targets measured in each round: every `pake…` target once per worker setting and
    /// once per reactor setting, the others once.
    pub fn measured_targets(&self) -> usize {
        let per_pake = self.pake_workers.len().max(1) + self.pake_reactors().len();
        self.targets
            .iter()
            .map(|t| if t.starts_with("pake") { per_pake } else { 1 })
            .sum()
    }

    pub fn load(path: &Path) -> Result<Scenario, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|e| BenchError::Scenario {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Scenario, BenchError> {
        let de = toml::Deserializer::parse(text).map_err(|e| BenchError::Scenario {
            path: origin.into(),
            reason: e.to_string(),
        })?;
        let s: Scenario =
            serde_path_to_error::deserialize(de).map_err(|e| BenchError::Scenario {
                path: origin.into(),
                reason: format!("{}: {}", e.path(), e.inner()),
            })?;
        s.validate().map_err(|reason| BenchError::Scenario {
            path: origin.into(),
            reason,
        })?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        self.validate_own()?;
        let known: &[&str] = if self.workload.is_redis() {
            &["direct", "pake", "pake-nol1", "twemproxy"]
        } else {
            &["direct", "pake", "pake-noinsight", "pgbouncer"]
        };
        if self.targets.is_empty() {
            return Err("targets: name at least one".into());
        }
        if let Some(t) = self.targets.iter().find(|t| !known.contains(&t.as_str())) {
            return Err(format!(
                "targets: unknown {t:?} (known: {})",
                known.join(", ")
            ));
        }
        if let Some(b) = &self.baseline {
            if !self.targets.contains(b) {
                return Err(format!("baseline: {b:?} is not among the targets"));
            }
        }
        if self.clients.is_empty() || self.clients.contains(&0) {
            return Err("clients: give one or more counts, each at least 1".into());
        }
        if self.rate.is_some() != self.active.is_some() {
            return Err("rate and active go together (open loop)".into());
        }
        if self.duration_secs <= 0.0 || self.rounds == 0 {
            return Err("duration_secs and rounds must be positive".into());
        }
        if self.redis.pipeline == 0 || self.redis.keys == 0 {
            return Err("redis.pipeline and redis.keys must be at least 1".into());
        }
        if self.redis.client_tracking {
            if let Some(t) = self
                .targets
                .iter()
                .find(|t| ["twemproxy", "pake-nol1"].contains(&t.as_str()))
            {
                return Err(format!(
                    "targets: {t:?} cannot take redis.client_tracking (twemproxy has no \
                     HELLO 3, Pake tracks for its clients only with its L1)"
                ));
            }
        }
        Ok(())
    }

    /// Apply command-line overrides; `smoke` shrinks everything to a seconds-long run.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(c) = &o.clients {
            self.clients = c.clone();
        }
        if let Some(t) = &o.targets {
            self.targets.retain(|x| t.contains(x));
            if self
                .baseline
                .as_ref()
                .is_some_and(|b| !self.targets.contains(b))
            {
                self.baseline = None;
            }
        }
        if let Some(w) = &o.pake_workers {
            self.pake_workers = w.clone();
        }
        if o.smoke {
            self.duration_secs = 1.0;
            self.rounds = 1;
            self.warmup_secs = 0.2;
            self.pg.scale = 1;
            self.redis.keys = self.redis.keys.min(1000);
            let cap = if self.workload == Workload::IdleMemory {
                200
            } else {
                8
            };
            for c in &mut self.clients {
                *c = (*c).min(cap);
            }
            self.clients.dedup();
            if let (Some(rate), Some(active)) = (self.rate.as_mut(), self.active.as_mut()) {
                *active = (*active).min(4);
                *rate = rate.min(200.0);
            }
        }
        if let Some(d) = o.duration_secs {
            self.duration_secs = d;
        }
        if let Some(r) = o.rounds {
            self.rounds = r;
        }
    }

    /// The checks that hold for lab runs and runs against your targets alike.
    fn validate_own(&self) -> Result<(), String> {
        if self.workload == Workload::PgSql {
            if self.pg.statements.is_empty() {
                return Err("pg.statements: a pg-sql scenario needs at least one".into());
            }
            for (i, st) in self.pg.statements.iter().enumerate() {
                st.validate()
                    .map_err(|e| format!("pg.statements[{i}]: {e}"))?;
            }
        }
        if let Some(l) = &self.link {
            if !self.workload.is_redis() || self.redis.cluster {
                return Err("link: only for standalone Redis scenarios".into());
            }
            l.validate().map_err(|e| format!("link: {e}"))?;
        }
        Ok(())
    }

    /// Whether the scenario writes, and what: runs against your targets refuse it without
    /// `--allow-writes`.
    pub fn writes(&self) -> Option<String> {
        match self.workload {
            Workload::PgTpcb => Some("pg-tpcb updates and inserts".into()),
            Workload::PgMixed if self.pg.write_percent > 0 || self.pg.split_roles => Some(format!(
                "pg-mixed updates ({}% of requests)",
                self.pg.write_percent
            )),
            Workload::RedisGetset if self.redis.read_percent < 100 => Some(format!(
                "redis-getset SETs ({}% of commands)",
                100 - self.redis.read_percent.min(100)
            )),
            Workload::PgSql => self
                .pg
                .statements
                .iter()
                .find(|st| !st.is_read())
                .map(|st| format!("a statement that may write: {}", st.sql.trim())),
            _ => None,
        }
    }

    /// Point the scenario at your targets (`--target NAME=URL`): their names replace the
    /// lab's, and data lives in a schema / key prefix of its own.
    pub fn for_own(&mut self, names: Vec<String>) -> Result<(), String> {
        if self.pg.replica {
            return Err("pg.replica: a lab-only setting".into());
        }
        if self.redis.cluster {
            return Err("redis.cluster: not supported against your own targets yet".into());
        }
        if self.link.is_some() {
            return Err("link: a lab-only setting".into());
        }
        if self.workload == Workload::IdleMemory {
            return Err("idle-memory: a lab-only scenario".into());
        }
        if self.baseline.as_ref().is_some_and(|b| !names.contains(b)) {
            self.baseline = None;
        }
        self.targets = names;
        self.pake_workers = vec![0];
        self.pg.schema.get_or_insert_with(|| "pake_bench".into());
        self.redis
            .prefix
            .get_or_insert_with(|| "pake_bench:".into());
        Ok(())
    }

    /// The target ratios are taken against.
    pub fn baseline(&self) -> &str {
        self.baseline
            .as_deref()
            .or(self.targets.first().map(String::as_str))
            .unwrap_or("direct")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scenario_parses() {
        let s = Scenario::parse(DEFAULT, "default").unwrap();
        assert_eq!(s.workload, Workload::PgSelect);
        assert_eq!(s.baseline(), "direct");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Scenario::parse(
            "name = 'x'\nworkload = 'pg-select'\ntargets = ['direct']\n[pg]\nscael = 3\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("scael"), "{e}");
    }

    #[test]
    fn unknown_target_is_rejected() {
        let e = Scenario::parse(
            "name = 'x'\nworkload = 'redis-getset'\ntargets = ['pgbouncer']\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("pgbouncer"), "{e}");
    }

    #[test]
    fn reactor_settings_add_targets_on_their_side() {
        let text = "name = 'x'\nworkload = 'redis-getset'\n\
                    targets = ['direct', 'pake', 'pake-nol1', 'twemproxy']\n\
                    [redis]\npake_reactors = [1, 2]\n[pg]\npake_reactors = [4]\n";
        let s = Scenario::parse(text, "t").unwrap();
        assert_eq!(s.pake_reactors(), &[1, 2]);
        // direct, twemproxy, and pake / pake-nol1 each as pake, -r1, -r2
        assert_eq!(s.measured_targets(), 2 + 2 * 3);
        let pg = text
            .replace("redis-getset", "pg-select")
            .replace("pake-nol1", "pake-noinsight")
            .replace("twemproxy", "pgbouncer");
        let s = Scenario::parse(&pg, "t").unwrap();
        assert_eq!(s.pake_reactors(), &[4]);
        assert_eq!(s.measured_targets(), 2 + 2 * 2);
    }

    #[test]
    fn smoke_shrinks_the_run() {
        let mut s = Scenario::parse(DEFAULT, "default").unwrap();
        s.clients = vec![100, 1000];
        s.apply(&Overrides {
            smoke: true,
            ..Overrides::default()
        });
        assert_eq!(s.clients, vec![8]);
        assert_eq!(s.rounds, 1);
        assert!(s.duration_secs <= 1.0);
    }
}
