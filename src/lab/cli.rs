//! `pake lab`: start lab servers from the shell (for load-test scripts and manual poking),
//! print their URLs as `KEY=value` lines on stdout, and delete everything on SIGINT/SIGTERM.

use super::{HbaAuth, PgLab, PgOptions, RedisLab, RedisOptions};

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Also start a streaming replica of the primary.
    #[arg(long)]
    pub replica: bool,
    /// Server authentication for TCP clients: scram-sha-256 (default), md5 or trust.
    #[arg(long, default_value = "scram-sha-256")]
    pub auth: String,
    /// Extra postgresql.conf lines, e.g. --conf "max_connections = 500".
    #[arg(long)]
    pub conf: Vec<String>,
    /// Also start Redis: standalone, cluster (3 primaries) or sentinel (primary, replica,
    /// three sentinels; prints REDIS_SENTINELS and REDIS_MASTER for --redis-sentinel).
    #[arg(long, value_parser = ["standalone", "cluster", "sentinel"])]
    pub redis: Option<String>,
    /// Redis on TLS only (standalone or cluster), with a fresh lab CA; prints REDIS_CA_FILE
    /// for Pake's `server_tls_ca_file` and TLS_CERT_FILE / TLS_KEY_FILE it can present.
    #[arg(long, requires = "redis")]
    pub redis_tls: bool,
    /// Start no PostgreSQL (with --redis).
    #[arg(long, requires = "redis")]
    pub no_postgres: bool,
}

pub fn run(args: LabArgs) -> anyhow::Result<()> {
    let auth = match args.auth.as_str() {
        "scram-sha-256" => HbaAuth::ScramSha256,
        "md5" => HbaAuth::Md5,
        "trust" => HbaAuth::Trust,
        other => anyhow::bail!("--auth must be scram-sha-256, md5 or trust, not {other:?}"),
    };
    let pg = match args.no_postgres {
        true => None,
        false => Some(PgLab::start(PgOptions {
            auth,
            replica: args.replica,
            conf: args.conf,
            ..PgOptions::default()
        })?),
    };
    if let Some(lab) = &pg {
        println!("PG_PRIMARY_URL={}", lab.url("postgres"));
        if let Some(url) = lab.replica_url("postgres") {
            println!("PG_REPLICA_URL={url}");
        }
        println!("PG_BINDIR={}", super::postgres::bindir()?.display());
    }
    let tls = |opts: RedisOptions| RedisOptions {
        tls: args.redis_tls,
        ..opts
    };
    let redis = match args.redis.as_deref() {
        Some("cluster") => Some(RedisLab::start(tls(RedisOptions::cluster(3, 0)))?),
        Some("sentinel") => Some(RedisLab::start(tls(RedisOptions::sentinel()))?),
        Some(_) => Some(RedisLab::start(tls(RedisOptions::default()))?),
        None => None,
    };
    if let Some(lab) = &redis {
        println!("REDIS_URL={}", lab.url());
        if let Some(certs) = &lab.certs {
            println!("REDIS_CA_FILE={}", certs.ca.display());
            println!("TLS_CERT_FILE={}", certs.cert.display());
            println!("TLS_KEY_FILE={}", certs.key.display());
        }
        if lab.is_sentinel() {
            println!("REDIS_SENTINELS={}", lab.sentinel_addrs().join(","));
            println!("REDIS_MASTER={}", lab.master_name());
        }
    }
    println!("LAB_READY=1");
    use std::io::Write;
    std::io::stdout().flush()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(redis);
    drop(pg);
    Ok(())
}
