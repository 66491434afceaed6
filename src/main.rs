//! The `pake` command: parses the CLI and calls into the library; no logic of its own.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use pake::config::{Config, LogFormat, PoolMode, QuickStart};
use pake::pg::auth::Method;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("features mimalloc and jemalloc each choose the allocator: enable one");

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Start lab servers (real PostgreSQL in a temp dir), print their URLs, stop on Ctrl-C.
    Lab(pake::lab::cli::LabArgs),
    /// For orchestrators: `--health-check` probes every backend and Pake's own listeners.
    Orchestration(OrchestrationArgs),
    /// Write the query report (Markdown, JSON, HTML) from a running Pake's admin API.
    Report(ReportArgs),
    /// Show query insight from a running Pake: top fingerprints, statements of one trace.
    Observability(ObservabilityArgs),
    /// Load benchmark: one scenario against direct, Pake and its peers, interleaved rounds.
    Bench(pake::bench::cli::BenchArgs),
    /// `pake performance --benchmark [--connections=N]`: the same as `pake bench`.
    Performance(pake::bench::cli::PerformanceArgs),
    /// Chaos suite: kill servers under load through Pake; errors, recovery, writes kept.
    Chaos(pake::bench::chaos::cli::ChaosArgs),
}

#[derive(Args)]
struct ReportArgs {
    /// Admin HTTP address of the running Pake.
    #[arg(long, default_value = "http://127.0.0.1:9930")]
    admin: String,
    /// Directory for report.md, report.json and report.html.
    #[arg(long, default_value = "pake-report")]
    out: PathBuf,
    /// Top queries to include.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Use the last advisor run instead of running the index advisor now (the report then
    /// says how old the advice is).
    #[arg(long)]
    no_advise: bool,
}

#[derive(Args)]
struct ObservabilityArgs {
    /// Admin HTTP address of the running Pake.
    #[arg(long, default_value = "http://127.0.0.1:9930")]
    admin: String,
    /// Print the top fingerprints with their latency percentiles.
    #[arg(long)]
    metrics: bool,
    /// List the statements seen under this trace id (32 hex digits, from sqlcommenter).
    #[arg(long)]
    trace_id: Option<String>,
    /// Top fingerprints to print.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(Args)]
struct OrchestrationArgs {
    /// Check backends and Pake's listeners; exit non-zero, one line per failure, if one is down.
    #[arg(long, required = true)]
    health_check: bool,
    /// What to check: all, postgres, postgres:<database>, redis or pake.
    #[arg(long, default_value = "all", value_parser = parse_service)]
    service: pake::ops::health::Service,
    /// Deadline of each check (e.g. 2s, 500ms).
    #[arg(long, default_value = "5s", value_parser = pake::config::units::parse_duration)]
    timeout: std::time::Duration,
    /// Config file (TOML), as for `pake serve`.
    #[arg(long, env = "PAKE_CONFIG")]
    config: Option<PathBuf>,
    /// Pake's Postgres listener, as for `pake serve`.
    #[arg(long, env = "PAKE_PG_LISTEN")]
    pg_listen: Option<SocketAddr>,
    /// Pake's admin HTTP listener (/ready), as for `pake serve`.
    #[arg(long, env = "PAKE_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// The Postgres primary: postgres://USER:PASS@HOST:PORT/DB.
    #[arg(long, env = "PAKE_PG_PRIMARY")]
    pg_primary: Option<String>,
    /// A streaming replica of the primary (repeatable).
    #[arg(long = "pg-replica")]
    pg_replica: Vec<String>,
    /// A Redis backend, redis[s]://[USER:PASS@]HOST:PORT (repeatable; any cluster node).
    #[arg(long = "redis", env = "PAKE_REDIS", value_delimiter = ',')]
    redis: Vec<String>,
    /// PEM CA bundle a rediss:// --redis must chain to ([redis] server_tls_ca_file).
    #[arg(long, env = "PAKE_REDIS_TLS_CA_FILE")]
    redis_tls_ca_file: Option<PathBuf>,
    /// Pake's Redis listener, checked with PING through Pake (over TLS when the config's
    /// [redis] client_tls_sslmode is not disable).
    #[arg(long, env = "PAKE_REDIS_LISTEN")]
    redis_listen: Option<SocketAddr>,
}

fn parse_service(s: &str) -> Result<pake::ops::health::Service, String> {
    s.parse()
        .map_err(|e: pake::ops::health::HealthError| e.to_string())
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
    /// A streaming replica of the primary (repeatable): read-only statements may go there.
    #[arg(long = "pg-replica")]
    pg_replica: Vec<String>,
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
    /// Reactor threads for Postgres clients (0: on the worker threads).
    #[arg(long, env = "PAKE_PG_THREADS")]
    pg_threads: Option<usize>,
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
    /// PEM CA bundle a rediss:// --redis must chain to ([redis] server_tls_ca_file).
    #[arg(long, env = "PAKE_REDIS_TLS_CA_FILE")]
    redis_tls_ca_file: Option<PathBuf>,
    /// Export one span per client transaction to this OTLP/HTTP collector
    /// (e.g. http://127.0.0.1:4318; /v1/traces is appended).
    #[arg(long, env = "PAKE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Find the Redis primary through these sentinels (HOST:PORT[,HOST:PORT…]) and follow
    /// its failovers; --redis then only gives the user, password and database.
    #[arg(
        long = "redis-sentinel",
        env = "PAKE_REDIS_SENTINEL",
        value_delimiter = ','
    )]
    redis_sentinel: Vec<String>,
    /// The name the sentinels monitor the primary under (with --redis-sentinel).
    #[arg(long, env = "PAKE_REDIS_MASTER")]
    redis_master: Option<String>,
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
        Command::Lab(args) => pake::lab::cli::run(args),
        Command::Orchestration(args) => health_check(args),
        Command::Report(a) => pake::insight::cli::report(&a.admin, &a.out, a.limit, !a.no_advise)
            .map(|files| files.iter().for_each(|f| println!("{}", f.display())))
            .map_err(Into::into),
        Command::Observability(a) => pake::insight::cli::observability(
            &a.admin,
            a.metrics || a.trace_id.is_none(),
            a.trace_id.as_deref(),
            a.limit,
        )
        .map(|text| print!("{text}"))
        .map_err(Into::into),
        Command::Bench(args) => pake::bench::cli::run(args),
        Command::Performance(args) => pake::bench::cli::performance(args),
        Command::Chaos(args) => pake::bench::chaos::cli::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pake: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The config file when given, else the defaults (quick-start flags go on top).
fn base_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Config::load(path).with_context(|| format!("config {}", path.display())),
        None => Ok(Config::default()),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let base = base_config(args.config.as_deref())?;
    let quick = QuickStart {
        pg_listen: args.pg_listen,
        pg_primary: args.pg_primary,
        pg_replicas: args.pg_replica,
        pool_size: args.pool_size,
        pool_mode: args.pool_mode,
        admin_listen: args.admin_listen,
        log_format: args.log_format,
        workers: args.workers,
        pg_threads: args.pg_threads,
        auth_type: args.auth_type,
        redis_listen: args.redis_listen,
        redis_url: args.redis,
        redis_cluster: args.redis_cluster,
        redis_tls_ca_file: args.redis_tls_ca_file,
        otlp_endpoint: args.otlp_endpoint,
        redis_sentinels: args.redis_sentinel,
        redis_master: args.redis_master,
    };
    let config = quick.apply(base)?;
    let source = pake::pg::proxy::ConfigSource {
        path: args.config.clone(),
        overrides: quick,
    };
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
    pake::app::run(config, source)
}

fn health_check(args: OrchestrationArgs) -> anyhow::Result<()> {
    let base = base_config(args.config.as_deref())?;
    let quick = QuickStart {
        pg_listen: args.pg_listen,
        admin_listen: args.admin_listen,
        pg_primary: args.pg_primary,
        pg_replicas: args.pg_replica,
        ..QuickStart::default()
    };
    let mut config = quick.apply(base)?;
    // a config file's [redis] section is checked like --redis/--redis-listen, unless
    // the flags name other targets
    let mut redis = args.redis;
    let mut redis_listen = args.redis_listen;
    if let Some(r) = &config.redis {
        // under Sentinel the URL's host is not the primary: the listener check stands for it
        if redis.is_empty() && !r.uses_sentinel() {
            redis.push(r.url.clone());
        }
        redis_listen = redis_listen.or(Some(r.listen));
    }
    // after the defaults above: the CA alone adds no target to check
    if let Some(ca) = args.redis_tls_ca_file {
        config
            .redis
            .get_or_insert_with(Default::default)
            .server_tls_ca_file = Some(ca);
    }
    let opts = pake::ops::health::Options {
        service: args.service,
        redis,
        redis_listen,
        timeout: args.timeout,
    };
    let report = pake::ops::health::check(&config, &opts)?;
    print!("{report}");
    anyhow::ensure!(report.is_healthy(), "health check: {}", report.summary());
    Ok(())
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
