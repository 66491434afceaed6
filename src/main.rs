//! The `pake` command: parses the CLI and calls into the library; no logic of its own.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use pake::config::{Config, LogFormat, PoolMode, QuickStart};
use pake::pg::auth::Method;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pake",
    version,
    about = "Performance-tuning proxy for PostgreSQL and Redis"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (from a config file, quick-start flags, or both: flags win).
    Serve(ServeArgs),
    /// Validate a config file; names the offending key and why.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Start a local lab (Postgres), put Pake in front, run a short pgbench, print how to connect.
    Demo(pake::demo::DemoArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Config file (TOML); see config/pake.toml.
    #[arg(long, env = "PAKE_CONFIG")]
    config: Option<PathBuf>,
    /// Address for Postgres clients.
    #[arg(long, env = "PAKE_PG_LISTEN")]
    pg_listen: Option<SocketAddr>,
    /// The Postgres primary: postgres://USER:PASS@HOST:PORT/DB.
    #[arg(long, env = "PAKE_PG_PRIMARY")]
    pg_primary: Option<String>,
    /// Server connections per (database, user) pool.
    #[arg(long, env = "PAKE_POOL_SIZE")]
    pool_size: Option<usize>,
    /// transaction (default) or session.
    #[arg(long, env = "PAKE_POOL_MODE")]
    pool_mode: Option<PoolMode>,
    /// Address for /metrics, /health, /ready.
    #[arg(long, env = "PAKE_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// text (default) or json.
    #[arg(long, env = "PAKE_LOG_FORMAT", value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// Worker threads (0: one per CPU).
    #[arg(long, env = "PAKE_WORKERS")]
    workers: Option<usize>,
    /// Client authentication: scram-sha-256 (default), md5 or trust.
    #[arg(long, env = "PAKE_AUTH_TYPE", value_parser = parse_method)]
    auth_type: Option<Method>,
    /// Address for Redis clients (default 127.0.0.1:6380 once --redis is given).
    #[arg(long, env = "PAKE_REDIS_LISTEN")]
    redis_listen: Option<SocketAddr>,
    /// The Redis to front: redis://[USER:PASS@]HOST:PORT[/DB] (any node of a cluster).
    #[arg(long = "redis", env = "PAKE_REDIS")]
    redis: Option<String>,
    /// The --redis URL is a Redis Cluster node (detected when not given).
    #[arg(long, env = "PAKE_REDIS_CLUSTER")]
    redis_cluster: bool,
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("log format must be text or json, not {s:?}")),
    }
}

fn parse_method(s: &str) -> Result<Method, String> {
    match s {
        "scram-sha-256" => Ok(Method::ScramSha256),
        "md5" => Ok(Method::Md5),
        "trust" => Ok(Method::Trust),
        _ => Err(format!(
            "auth type must be scram-sha-256, md5 or trust, not {s:?}"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Demo(args) => pake::demo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pake: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let base = match &args.config {
        Some(path) => Config::load(path).with_context(|| format!("config {}", path.display()))?,
        None => Config::default(),
    };
    let quick = QuickStart {
        pg_listen: args.pg_listen,
        pg_primary: args.pg_primary,
        pool_size: args.pool_size,
        pool_mode: args.pool_mode,
        admin_listen: args.admin_listen,
        log_format: args.log_format,
        workers: args.workers,
        auth_type: args.auth_type,
        redis_listen: args.redis_listen,
        redis_url: args.redis,
        redis_cluster: args.redis_cluster,
    };
    let config = quick.apply(base)?;
    if let Err(errors) = config.validate() {
        for e in &errors {
            eprintln!("pake: {e}");
        }
        anyhow::bail!(
            "invalid configuration ({} problem(s)); pass --config FILE, --pg-primary URL or --redis URL",
            errors.len()
        );
    }
    pake::obs::logging::init(config.general.log_format, &config.general.log_level);
    pake::app::run(config)
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    println!(
        "{}: OK ({} database(s), {} user(s))",
        file.display(),
        config.databases.len(),
        config.users.len()
    );
    Ok(())
}
