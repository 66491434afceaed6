//! Results of a scenario: the types written as JSON (`OUT/NAME.json`), and the table
//! printed after each run — ops/s, latency percentiles, errors and the ratio to the
//! baseline target, per case (client count).

use super::measure::Measurement;
use super::scenario::{Scenario, Workload};
use super::BenchError;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One scenario run against all its targets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub machine: Machine,
    /// Unix time the run started.
    pub started_at: u64,
    /// Targets that could not run, with why (a missing program, a Pake without the flags…).
    pub unavailable: Vec<Unavailable>,
    pub cases: Vec<CaseReport>,
    /// What makes the figures less trustworthy: a saturated load generator or machine.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Stopped early (Ctrl-C): the rounds run so far.
    #[serde(default)]
    pub partial: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unavailable {
    pub target: String,
    pub reason: String,
}

/// One client count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseReport {
    /// Connected clients.
    pub clients: usize,
    /// Of those, clients sending requests (open loop), else all.
    pub active: usize,
    /// Offered requests per second (open loop).
    pub rate: Option<f64>,
    pub targets: Vec<TargetReport>,
}

/// One target in one case, all rounds together.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetReport {
    pub name: String,
    /// Median over the rounds of completed operations per second.
    pub ops_per_sec: f64,
    pub rounds_ops_per_sec: Vec<f64>,
    /// Latency percentiles over all rounds, microseconds.
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// ops/s divided by the baseline target's.
    pub ratio: Option<f64>,
    /// Share of reads that Pake sent to the replica (from its /metrics).
    pub replica_share: Option<f64>,
    /// Share of Redis L1 lookups that hit, while measured (Pake with its L1 on).
    #[serde(default)]
    pub l1_hit_rate: Option<f64>,
    /// Redis loads: share of the reads while measured that asked for a key not read
    /// before through this target. A cache filled by reads misses each of them, so
    /// `1 − share` bounds its hit rate on the run (a cache filled by writes may pass it).
    #[serde(default)]
    pub first_read_share: Option<f64>,
    /// Redis loads with `client_tracking`: keys invalidated by the pushes the clients
    /// received, per operation, while measured.
    #[serde(default)]
    pub pushes_per_op: Option<f64>,
    /// CPU (user + system) of the target's process tree per operation, microseconds: its
    /// utime+stime from `/proc` over the measured windows ÷ the operations in them.
    #[serde(default)]
    pub cpu_us_per_op: Option<f64>,
    /// Each measured round: CPU, the load generator's own use, the machine's load.
    #[serde(default)]
    pub rounds_env: Vec<RoundEnv>,
    /// Idle-memory scenario: resident memory of the proxy before and after, and the
    /// difference per idle client.
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub rss_per_client_kib: Option<f64>,
}

impl TargetReport {
    /// Fill the throughput and latency fields from the merged rounds.
    pub fn from_measurement(name: &str, rounds: Vec<f64>, m: &Measurement) -> TargetReport {
        TargetReport {
            name: name.into(),
            ops_per_sec: median(&rounds),
            rounds_ops_per_sec: rounds,
            p50_us: m.quantile_us(0.50),
            p95_us: m.quantile_us(0.95),
            p99_us: m.quantile_us(0.99),
            p999_us: m.quantile_us(0.999),
            max_us: m.hist.max(),
            ops: m.ops,
            errors: m.errors,
            first_error: m.first_error.clone(),
            ..TargetReport::default()
        }
    }
}

/// One measured round of one target, as the machine saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundEnv {
    /// 1-based.
    pub round: usize,
    pub ops: u64,
    /// Seconds measured.
    pub secs: f64,
    /// CPU seconds of the target's process tree (none without a known local pid).
    pub cpu_secs: Option<f64>,
    /// Cores the load generator kept busy on average.
    pub loadgen_cores: Option<f64>,
    /// Share of the machine's cores busy, any process.
    pub machine_busy: Option<f64>,
    pub loadavg_before: Option<[f64; 3]>,
    pub loadavg_after: Option<[f64; 3]>,
}

impl RoundEnv {
    pub fn new(round: usize, m: &Measurement, w: &super::procfs::WindowFigures) -> RoundEnv {
        RoundEnv {
            round,
            ops: m.ops,
            secs: m.elapsed.as_secs_f64(),
            cpu_secs: w.target_cpu_secs,
            loadgen_cores: w.loadgen_cores,
            machine_busy: w.machine_busy,
            loadavg_before: w.loadavg_before,
            loadavg_after: w.loadavg_after,
        }
    }
}

/// Share of its cores past which the load generator counts as saturated: its clients then
/// wait for CPU, not for the target, and every target looks slower than it is.
const LOADGEN_SATURATED: f64 = 0.9;
/// Share of the machine busy past which the ratios measure CPU sharing between the load
/// generator, the proxies and the servers more than the targets themselves.
const MACHINE_SATURATED: f64 = 0.95;

/// Warnings about the rounds of `cases`, one line per target and kind.
pub fn warnings(cases: &[CaseReport], nproc: usize) -> Vec<String> {
    let mut out = Vec::new();
    let cores = nproc.max(1) as f64;
    for case in cases {
        for t in &case.targets {
            let rounds = t.rounds_env.len();
            let peak = |f: fn(&RoundEnv) -> Option<f64>| {
                t.rounds_env
                    .iter()
                    .filter_map(f)
                    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
            };
            let gen: Vec<_> = t
                .rounds_env
                .iter()
                .filter(|r| {
                    r.loadgen_cores
                        .is_some_and(|c| c >= LOADGEN_SATURATED * cores)
                })
                .collect();
            if let (false, Some(p)) = (gen.is_empty(), peak(|r| r.loadgen_cores)) {
                out.push(format!(
                    "{} clients, {}: the load generator itself was saturated in {} of {rounds} \
                     round(s) (up to {p:.2} of {nproc} cores): the figures understate the target; \
                     run pake bench on another machine or with fewer clients",
                    case.clients,
                    t.name,
                    gen.len()
                ));
            }
            let busy = t
                .rounds_env
                .iter()
                .filter(|r| r.machine_busy.is_some_and(|b| b >= MACHINE_SATURATED))
                .count();
            if busy > 0 {
                out.push(format!(
                    "{} clients, {}: the machine's {nproc} cores were at least {:.0}% busy in \
                     {busy} of {rounds} round(s): ops/s then measures who gets the CPU; compare \
                     CPU per operation instead",
                    case.clients,
                    t.name,
                    MACHINE_SATURATED * 100.0
                ));
            }
        }
    }
    out
}

/// CPU µs per operation over the rounds that have a CPU figure.
pub fn cpu_us_per_op(rounds: &[RoundEnv]) -> Option<f64> {
    let (cpu, ops) = rounds
        .iter()
        .filter_map(|r| Some((r.cpu_secs?, r.ops)))
        .fold((0.0, 0u64), |(c, o), (rc, ro)| (c + rc, o + ro));
    (ops > 0).then(|| cpu * 1e6 / ops as f64)
}

/// CPU per operation for humans.
pub fn fmt_cpu(us: Option<f64>) -> String {
    match us {
        None => "-".into(),
        Some(u) if u < 10.0 => format!("{u:.2}µs"),
        Some(u) if u < 1000.0 => format!("{u:.1}µs"),
        Some(u) => format!("{:.2}ms", u / 1000.0),
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub memory_mib: u64,
    pub kernel: String,
    /// `program: version` lines for the servers and proxies involved.
    pub versions: Vec<String>,
}

impl Machine {
    pub fn probe() -> Machine {
        let mem_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let mut versions = vec![format!("pake {}", env!("CARGO_PKG_VERSION"))];
        let pg = crate::lab::postgres::bindir()
            .map(|d| d.join("postgres"))
            .unwrap_or_else(|_| PathBuf::from("postgres"));
        for (prog, arg) in [
            (pg, "--version"),
            (PathBuf::from("pgbouncer"), "--version"),
            (PathBuf::from("redis-server"), "--version"),
            (PathBuf::from("nutcracker"), "--version"),
        ] {
            let prog = super::peers::which(&prog.to_string_lossy()).unwrap_or(prog);
            if let Ok(out) = std::process::Command::new(&prog).arg(arg).output() {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                if let Some(first) = text.lines().find(|l| !l.trim().is_empty()) {
                    versions.push(first.trim().to_string());
                }
            }
        }
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib: mem_kib / 1024,
            kernel,
            versions,
        }
    }
}

/// Latency for humans: µs below a millisecond, else ms.
pub fn fmt_us(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 100_000 {
        format!("{:.2}ms", us as f64 / 1000.0)
    } else {
        format!("{:.0}ms", us as f64 / 1000.0)
    }
}

impl ScenarioReport {
    /// The table printed after a run.
    pub fn table(&self) -> String {
        let s = &self.scenario;
        let mut out = format!("\n## {} — {}\n", s.name, s.description);
        for u in &self.unavailable {
            let _ = writeln!(out, "target unavailable: {}: {}", u.target, u.reason);
        }
        let idle = s.workload == Workload::IdleMemory;
        // as wide as the longest target name (`pake-nol1-r1`…)
        let w = self
            .cases
            .iter()
            .flat_map(|c| &c.targets)
            .map(|t| t.name.len())
            .fold(11, usize::max);
        let _ = writeln!(
            out,
            "{:>7} {:<w$} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}  note",
            "clients",
            "target",
            if idle { "KiB/client" } else { "ops/s" },
            "CPU/op",
            "p50",
            "p95",
            "p99",
            "p99.9",
            "errors",
            format!("/{}", s.baseline()),
        );
        for case in &self.cases {
            for t in &case.targets {
                let main = if idle {
                    t.rss_per_client_kib
                        .map_or("-".into(), |k| format!("{k:.2}"))
                } else {
                    format!("{:.0}", t.ops_per_sec)
                };
                let lat = |us: u64| if idle { "-".into() } else { fmt_us(us) };
                let _ = writeln!(
                    out,
                    "{:>7} {:<w$} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}  {}",
                    case.clients,
                    t.name,
                    main,
                    fmt_cpu(t.cpu_us_per_op),
                    lat(t.p50_us),
                    lat(t.p95_us),
                    lat(t.p99_us),
                    lat(t.p999_us),
                    t.errors,
                    t.ratio.map_or("-".into(), |r| format!("{r:.2}")),
                    note(t)
                );
            }
        }
        if self.partial {
            out.push_str("stopped early (Ctrl-C): these are the rounds run so far\n");
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }

    /// Write `DIR/NAME.json`, `.svg`, `.html` and `.md`; returns the JSON path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, BenchError> {
        std::fs::create_dir_all(dir)?;
        let json = dir.join(format!("{}.json", self.scenario.name));
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| BenchError::Client(format!("encoding results: {e}")))?;
        std::fs::write(&json, text)?;
        let name = &self.scenario.name;
        std::fs::write(dir.join(format!("{name}.svg")), super::svg::chart(self))?;
        std::fs::write(dir.join(format!("{name}.html")), super::html::page(self))?;
        std::fs::write(
            dir.join(format!("{name}.md")),
            super::summary::scenario_table(self),
        )?;
        Ok(json)
    }

    pub fn read(path: &Path) -> Result<ScenarioReport, BenchError> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| BenchError::Scenario {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

fn note(t: &TargetReport) -> String {
    let mut parts = notes(t, 90);
    if let (Some(b), Some(a)) = (t.rss_before_kib, t.rss_after_kib) {
        parts.insert(0, format!("RSS {b} → {a} KiB"));
    }
    parts.join("; ")
}

/// The note column of every table: idle memory, replica share, L1 hit rate, the first
/// error (cut to `max` characters).
pub fn notes(t: &TargetReport, max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(k) = t.rss_per_client_kib {
        parts.push(format!("{k:.2} KiB per idle client"));
    }
    if let Some(share) = t.replica_share {
        parts.push(format!("{:.0}% of reads on the replica", share * 100.0));
    }
    if let Some(h) = t.l1_hit_rate {
        match t.first_read_share {
            Some(first) => parts.push(format!(
                "L1 hit rate {:.1}% ({:.1}% of reads were a key's first)",
                h * 100.0,
                first * 100.0
            )),
            None => parts.push(format!("L1 hit rate {:.1}%", h * 100.0)),
        }
    }
    if let Some(p) = t.pushes_per_op {
        parts.push(format!("{:.1} keys invalidated per 100 ops", p * 100.0));
    }
    if let Some(e) = &t.first_error {
        let short: String = e.chars().take(max).collect();
        parts.push(format!("first error: {short}"));
    }
    parts
}

/// A target's figures in the order of the Markdown and HTML tables: ops/s, CPU/op, p50,
/// p95, p99, p99.9, errors, ratio.
pub fn figures(t: &TargetReport) -> [String; 8] {
    [
        format!("{:.0}", t.ops_per_sec),
        fmt_cpu(t.cpu_us_per_op),
        fmt_us(t.p50_us),
        fmt_us(t.p95_us),
        fmt_us(t.p99_us),
        fmt_us(t.p999_us),
        t.errors.to_string(),
        t.ratio.map_or("-".into(), |x| format!("{x:.2}")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn cpu_per_op_and_saturation_warnings() {
        let round = |cpu: Option<f64>, gen: f64, busy: f64| RoundEnv {
            round: 1,
            ops: 1000,
            secs: 1.0,
            cpu_secs: cpu,
            loadgen_cores: Some(gen),
            machine_busy: Some(busy),
            ..RoundEnv::default()
        };
        let rounds = vec![round(Some(0.01), 0.5, 0.5), round(Some(0.03), 1.9, 0.99)];
        assert_eq!(cpu_us_per_op(&rounds).map(|v| v.round()), Some(20.0));
        assert_eq!(cpu_us_per_op(&[round(None, 0.1, 0.1)]), None);
        let case = CaseReport {
            clients: 10,
            active: 10,
            rate: None,
            targets: vec![TargetReport {
                name: "pake".into(),
                rounds_env: rounds,
                ..TargetReport::default()
            }],
        };
        let w = warnings(std::slice::from_ref(&case), 2);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("load generator itself was saturated in 1 of 2"),
            "{w:?}"
        );
        assert!(warnings(&[case], 4)
            .iter()
            .all(|w| !w.contains("load generator")));
        assert_eq!(fmt_cpu(Some(12.345)), "12.3µs");
    }

    #[test]
    fn table_columns_fit_the_longest_target_name() {
        let text = "name = 'x'\nworkload = 'redis-getset'\ntargets = ['direct', 'pake-nol1']\n";
        let scenario = Scenario::parse(text, "t").unwrap();
        let target = |name: &str| TargetReport {
            name: name.into(),
            ops_per_sec: 12345.0,
            ..TargetReport::default()
        };
        let report = ScenarioReport {
            scenario,
            machine: Machine::default(),
            started_at: 0,
            unavailable: Vec::new(),
            cases: vec![CaseReport {
                clients: 50,
                active: 50,
                rate: None,
                targets: vec![target("direct"), target("pake-nol1-r1-long")],
            }],
            warnings: Vec::new(),
            partial: false,
        };
        let table = report.table();
        // the ops/s column ends at the same place on every row
        let ends: Vec<usize> = table
            .lines()
            .filter(|l| l.contains("12345"))
            .filter_map(|l| l.find("12345"))
            .collect();
        assert_eq!(ends.len(), 2, "{table}");
        assert_eq!(ends[0], ends[1], "{table}");
    }

    #[test]
    fn latency_formats() {
        assert_eq!(fmt_us(850), "850µs");
        assert_eq!(fmt_us(1500), "1.50ms");
        assert_eq!(fmt_us(250_000), "250ms");
    }
}
