//! `pake bench` and its alias `pake performance --benchmark`: parse the flags, raise the
//! open-files limit (thousands of client sockets here and in the Pake subprocess, which
//! inherits it), run each scenario in a runtime of its own, print, write, summarise.

use super::env::Env;
use super::measure::Bounds;
use super::peers::pake::PakeBinary;
use super::scenario::{Overrides, Scenario, DEFAULT};
use super::stop::Stop;
use super::{summary, BenchError};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Scenario files (TOML, see loadtests/); without one, pgbench -S against direct, Pake
    /// and PgBouncer.
    #[arg(long = "scenario", num_args = 1..)]
    pub scenarios: Vec<PathBuf>,
    /// Where results go: NAME.json and NAME.svg per scenario.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Client counts instead of the scenario's (comma-separated).
    #[arg(long, alias = "connections", value_delimiter = ',')]
    pub clients: Option<Vec<usize>>,
    /// Measured seconds per target per round.
    #[arg(long)]
    pub duration: Option<f64>,
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Only these of the scenario's targets (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// Pake worker threads; several values run one Pake each (e.g. 1,2).
    #[arg(long, value_delimiter = ',')]
    pub pake_workers: Option<Vec<usize>>,
    /// A seconds-long run that proves each scenario works end to end (no usable numbers).
    #[arg(long)]
    pub smoke: bool,
    /// The pake binary run as the proxy under test (default: this executable).
    #[arg(long)]
    pub pake_bin: Option<PathBuf>,
    /// Afterwards, rewrite this Markdown file's results block from every JSON in --out.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Run nothing; only rewrite --markdown from the results already in --out.
    #[arg(long, requires = "markdown")]
    pub summarize_only: bool,
    /// Your own server as a target, `NAME=URL` (postgres:// or redis://); repeat for each
    /// (direct, your Pake, your PgBouncer…). Without any, the lab runs.
    #[arg(long = "target", value_name = "NAME=URL")]
    pub own_targets: Vec<String>,
    /// The process behind a target, `NAME=PID`, for its CPU per operation (by default the
    /// process listening on the target's port, when it runs on this machine).
    #[arg(long = "pid", value_name = "NAME=PID")]
    pub pids: Vec<String>,
    /// Create the scenario's tables (schema `pg.schema`) or keys (`redis.prefix`) through
    /// the first target before the run.
    #[arg(long, requires = "own_targets")]
    pub prepare: bool,
    /// Remove them after the run.
    #[arg(long, requires = "own_targets")]
    pub cleanup: bool,
    /// Only --prepare and/or --cleanup, no measurement.
    #[arg(long, requires = "own_targets")]
    pub no_run: bool,
    /// Let a scenario that writes (pg-tpcb, pg-mixed, redis SETs, your INSERTs…) run
    /// against your targets.
    #[arg(long)]
    pub allow_writes: bool,
    /// At most this many requests per target per round (a pipelined batch counts once).
    #[arg(long)]
    pub max_requests: Option<u64>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PerformanceArgs {
    /// Run the load benchmark (`pake bench`).
    #[arg(long)]
    pub benchmark: bool,
    #[command(flatten)]
    pub bench: BenchArgs,
}

pub fn performance(args: PerformanceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.benchmark,
        "pake performance needs --benchmark (the same as pake bench)"
    );
    run(args.bench)
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::obs::logging::init(crate::config::LogFormat::Text, "warn");
    if !args.summarize_only {
        raise_open_files();
        run_scenarios(&args)?;
    }
    if let Some(md) = &args.markdown {
        let reports = summary::load_all(&args.out)?;
        summary::rewrite(md, &summary::markdown(&reports))?;
        eprintln!("rewrote {} from {} result(s)", md.display(), reports.len());
    }
    Ok(())
}

fn load(args: &BenchArgs) -> Result<Vec<Scenario>, BenchError> {
    let overrides = Overrides {
        clients: args.clients.clone(),
        duration_secs: args.duration,
        rounds: args.rounds,
        targets: args.targets.clone(),
        pake_workers: args.pake_workers.clone(),
        smoke: args.smoke,
    };
    let mut scenarios = if args.scenarios.is_empty() {
        vec![Scenario::parse(DEFAULT, "built-in pg-select-only")?]
    } else {
        args.scenarios
            .iter()
            .map(|p| Scenario::load(p))
            .collect::<Result<_, _>>()?
    };
    for s in &mut scenarios {
        s.apply(&overrides);
    }
    Ok(scenarios)
}

fn run_scenarios(args: &BenchArgs) -> anyhow::Result<()> {
    let scenarios = load(args)?;
    let own = if args.own_targets.is_empty() {
        None
    } else {
        Some(super::own::OwnRun::from_args(args, &scenarios)?)
    };
    let bin = PakeBinary::new(args.pake_bin.as_deref())?;
    let bounds = Bounds {
        stop: Stop::new(),
        max_requests: args.max_requests,
        ..Bounds::default()
    };
    let steps: usize = scenarios.iter().map(steps).sum();
    let progress = ProgressBar::new(steps as u64);
    if let Ok(style) =
        ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
    {
        progress.set_style(style);
    }
    let mut failed = Vec::new();
    for s in &scenarios {
        if bounds.stop.requested() {
            break;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let run = async {
            bounds.stop.on_ctrl_c();
            match &own {
                Some(own) => own.run(s, &progress, &bounds).await,
                None => {
                    progress.set_message(format!("{}: starting servers and peers", s.name));
                    let env = Env::start(s, &bin).await?;
                    Ok(Some(super::runner::run(s, &env, &progress, &bounds).await))
                }
            }
        };
        match runtime.block_on(run) {
            Ok(Some(report)) => {
                let path = report.write(&args.out)?;
                progress.suspend(|| {
                    println!("{}", report.table());
                    println!("results: {}", path.display());
                });
            }
            Ok(None) => {}
            Err(e) => {
                progress.suspend(|| eprintln!("scenario {} failed: {e}", s.name));
                failed.push(s.name.clone());
            }
        }
        // the scenario's clients and servers go with the runtime
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    }
    progress.finish_and_clear();
    anyhow::ensure!(
        failed.is_empty(),
        "scenario(s) failed: {}",
        failed.join(", ")
    );
    Ok(())
}

/// Progress steps of a scenario: one per target per round per case.
fn steps(s: &Scenario) -> usize {
    let targets = s.measured_targets();
    let rounds = if s.workload == super::scenario::Workload::IdleMemory {
        1
    } else {
        s.rounds
    };
    targets * rounds * s.clients.len()
}

/// Soft RLIMIT_NOFILE up to the hard limit; children (Pake, PgBouncer) inherit it.
#[allow(unsafe_code)]
fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the plain struct we pass, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
