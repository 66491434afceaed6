//! `pake chaos`: pick scenarios, run each in a runtime of its own (its servers and clients
//! go with it), print the table, write `OUT/chaos.json`. Exits non-zero when a scenario
//! failed, did not recover, or lost an acknowledged write it must not lose; a scenario the
//! lab cannot build yet is listed as not available and fails nothing.

use super::report::{ChaosReport, Row};
use super::{Ctx, Plan, SCENARIOS};
use crate::bench::peers::pake::PakeBinary;
use crate::bench::report::Machine;
use crate::bench::BenchError;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Scenarios to run (comma-separated); all when absent. `--list` names them.
    #[arg(long = "scenario", value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Where `chaos.json` goes.
    #[arg(long, default_value = "bench-results/chaos")]
    pub out: PathBuf,
    /// Fractions of a second per phase and fewer clients: proves the scenarios run.
    #[arg(long)]
    pub smoke: bool,
    /// Concurrent clients through Pake.
    #[arg(long)]
    pub clients: Option<usize>,
    /// Ops per second per client.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of load before the fault.
    #[arg(long)]
    pub steady: Option<f64>,
    /// Seconds a killed server stays down before its restart.
    #[arg(long)]
    pub down: Option<f64>,
    /// Seconds of load after every client is served again.
    #[arg(long)]
    pub settle: Option<f64>,
    /// The pake binary run as the proxy (default: this executable).
    #[arg(long)]
    pub pake_bin: Option<PathBuf>,
}

impl ChaosArgs {
    fn plan(&self) -> Plan {
        let mut p = if self.smoke {
            Plan::smoke()
        } else {
            Plan::standard()
        };
        p.clients = self.clients.unwrap_or(p.clients).max(1);
        p.rate = self.rate.unwrap_or(p.rate);
        p.steady_secs = self.steady.unwrap_or(p.steady_secs);
        p.down_secs = self.down.unwrap_or(p.down_secs);
        p.settle_secs = self.settle.unwrap_or(p.settle_secs);
        p
    }
}

pub fn run(args: ChaosArgs) -> anyhow::Result<()> {
    crate::obs::logging::init(crate::config::LogFormat::Text, "warn");
    if args.list {
        for s in SCENARIOS {
            println!("{:<28} {}", s.name, s.what);
        }
        return Ok(());
    }
    let chosen = choose(&args.scenarios)?;
    let ctx = Ctx {
        plan: args.plan(),
        bin: PakeBinary::new(args.pake_bin.as_deref())?,
    };
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rows = Vec::new();
    for s in chosen {
        eprintln!("chaos: {} — {}", s.name, s.what);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let row = match runtime.block_on((s.run)(ctx.clone())) {
            Ok(outcome) => Row::ran(s, outcome),
            Err(BenchError::Unavailable(reason)) => Row::unavailable(s, reason),
            Err(e) => Row::failed(s, e.to_string()),
        };
        // the scenario's clients, Pake and servers go with the runtime
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        rows.push(row);
    }
    let report = ChaosReport {
        machine: Machine::probe(),
        started_at,
        plan: ctx.plan,
        rows,
    };
    println!("{}", report.table());
    let path = report.write(&args.out)?;
    println!("results: {}", path.display());
    let problems: Vec<String> = report.rows.iter().filter_map(Row::problem).collect();
    anyhow::ensure!(problems.is_empty(), "chaos: {}", problems.join("; "));
    Ok(())
}

fn choose(names: &[String]) -> anyhow::Result<Vec<&'static super::Scenario>> {
    if names.is_empty() {
        return Ok(SCENARIOS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            super::scenario(n).ok_or_else(|| {
                let known: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                anyhow::anyhow!("unknown scenario {n:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}
