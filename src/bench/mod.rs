//! The load generator behind `pake bench` and the scenarios in `loadtests/`: one scenario
//! (a TOML file) against several targets — direct Postgres/Redis, Pake, PgBouncer,
//! twemproxy — started side by side on free ports with equivalent configs, visited in
//! interleaved rounds so machine drift hits all alike. Results are ratios to a baseline
//! target, printed as a table and written as JSON and SVG; `summary` checks them against
//! the targets and rewrites BENCHMARKS.md.
//!
//! * [`scenario`]: the scenario file. [`env`] and [`peers`]: servers and targets.
//! * [`measure`]: the closed/open-loop driver and histograms. [`pg_load`], [`redis_load`]
//!   (over [`resp`]): the requests. [`idle`]: memory per idle client.
//! * [`runner`]: cases and rounds. [`report`], [`svg`], [`summary`]: the outputs.
//! * [`chaos`]: `pake chaos`, faults injected under load (kills, failovers) and acknowledged
//!   writes checked afterwards.

pub mod chaos;
pub mod cli;
pub mod env;
pub mod html;
pub mod idle;
pub mod link;
pub mod measure;
pub mod own;
pub mod peers;
pub mod pg_load;
pub mod prepare;
pub mod procfs;
pub mod redis_load;
pub mod report;
pub mod resp;
pub mod rng;
pub mod runner;
pub mod scenario;
pub mod sql_load;
pub mod stop;
pub mod summary;
pub mod svg;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("scenario {path}: {reason}")]
    Scenario { path: String, reason: String },
    /// A target that cannot run here (a program missing, a flag this build lacks).
    #[error("{0}")]
    Unavailable(String),
    #[error("{what} failed:\n{output}")]
    Peer { what: String, output: String },
    #[error("client: {0}")]
    Client(String),
    #[error(transparent)]
    Lab(#[from] crate::lab::LabError),
    #[error("bench I/O: {0}")]
    Io(#[from] std::io::Error),
}
