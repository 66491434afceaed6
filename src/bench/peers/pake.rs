//! Pake under test: `pake serve` as a subprocess of the given binary (by default this
//! executable), with quick-start flags plus a small generated config file for the settings
//! that have no flag (client limit, log level, the Redis L1 switch).

use super::{free_addr, Peer};
use crate::bench::BenchError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What every Pake of a scenario shares.
#[derive(Debug, Clone)]
pub struct PakeBinary {
    pub path: PathBuf,
}

/// A running Pake.
pub struct Pake {
    pub peer: Peer,
    /// Where clients connect (Postgres or Redis listener, per the scenario).
    pub addr: SocketAddr,
    /// `/metrics`.
    pub admin: SocketAddr,
}

/// Postgres-side settings, the same as the peers get.
#[derive(Debug, Clone)]
pub struct PgSide {
    pub primary_url: String,
    pub replica_url: Option<String>,
    pub pool_size: usize,
    pub pool_mode: String,
    pub auth: String,
    pub max_clients: usize,
    /// Query insight on (`pake`) or off (`pake-noinsight`, to measure what it costs).
    pub insight: bool,
    /// Reactor threads for Postgres clients (`[general] pg_threads`; 0: the workers).
    pub pg_threads: usize,
}

/// Redis-side settings.
#[derive(Debug, Clone)]
pub struct RedisSide {
    pub url: String,
    pub cluster: bool,
    pub l1: bool,
    pub pool_size: usize,
    /// Sentinel topology: the sentinels' `host:port` and the monitored name (`url` then
    /// only gives the credentials).
    pub sentinel: Option<(Vec<String>, String)>,
    /// `[redis] threads`; 0 leaves Pake's default (one per CPU).
    pub threads: usize,
}

impl PakeBinary {
    /// `path`, or this executable.
    pub fn new(path: Option<&Path>) -> Result<PakeBinary, BenchError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe()?,
        };
        Ok(PakeBinary { path })
    }

    /// Whether this build's `pake serve` has the Redis proxy flags.
    pub fn supports_redis(&self) -> Result<(), BenchError> {
        let out = Command::new(&self.path)
            .args(["serve", "--help"])
            .output()?;
        let help = String::from_utf8_lossy(&out.stdout);
        if help.contains("--redis-listen") {
            Ok(())
        } else {
            Err(BenchError::Unavailable(
                "`pake serve` has no --redis-listen (the Redis proxy is not in this build)".into(),
            ))
        }
    }

    fn base(&self, dir: &Path, config: &str, workers: usize) -> Result<Command, BenchError> {
        let file = dir.join("pake.toml");
        std::fs::write(&file, config)?;
        let mut cmd = Command::new(&self.path);
        cmd.arg("serve")
            .arg("--config")
            .arg(&file)
            .arg("--workers")
            .arg(workers.to_string());
        Ok(cmd)
    }

    /// Pake in front of Postgres.
    pub fn start_pg(&self, pg: &PgSide, workers: usize) -> Result<Pake, BenchError> {
        let dir = Peer::dir("pake-bench-pake-")?;
        // the file must name a database to load; --pg-primary replaces this entry
        let t = crate::config::parse_url(&pg.primary_url).map_err(BenchError::Client)?;
        let config = format!(
            "[general]\nmax_client_conn = {}\nlog_level = \"warn\"\nshutdown_timeout = \"1s\"\n{}\n\
             [insight]\nenabled = {}\n\n\
             [[databases]]\nname = \"{}\"\nhost = \"{}\"\nport = {}\n",
            pg.max_clients,
            match pg.pg_threads {
                0 => String::new(),
                n => format!("pg_threads = {n}\n"),
            },
            pg.insight,
            t.dbname,
            t.host,
            t.port
        );
        let (addr, admin) = (free_addr()?, free_addr()?);
        let mut cmd = self.base(dir.path(), &config, workers)?;
        cmd.arg("--pg-listen")
            .arg(addr.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--pg-primary")
            .arg(&pg.primary_url)
            .arg("--pool-size")
            .arg(pg.pool_size.to_string())
            .arg("--pool-mode")
            .arg(&pg.pool_mode)
            .arg("--auth-type")
            .arg(&pg.auth);
        if let Some(r) = &pg.replica_url {
            cmd.arg("--pg-replica").arg(r);
        }
        let mut peer = Peer::spawn("pake", cmd, dir)?;
        peer.wait_listening(addr, Duration::from_secs(30))?;
        Ok(Pake { peer, addr, admin })
    }

    /// Pake in front of Redis (standalone or cluster), L1 on or off.
    pub fn start_redis(&self, redis: &RedisSide, workers: usize) -> Result<Pake, BenchError> {
        self.supports_redis()?;
        let dir = Peer::dir("pake-bench-pake-")?;
        let config = format!(
            "[general]\nlog_level = \"warn\"\nshutdown_timeout = \"1s\"\n\n[redis]\nl1 = {}\npool_size = {}\n{}",
            redis.l1,
            redis.pool_size,
            match redis.threads {
                0 => String::new(),
                n => format!("threads = {n}\n"),
            }
        );
        let (addr, pg, admin) = (free_addr()?, free_addr()?, free_addr()?);
        let mut cmd = self.base(dir.path(), &config, workers)?;
        cmd.arg("--redis-listen")
            .arg(addr.to_string())
            .arg("--redis")
            .arg(&redis.url)
            .arg("--pg-listen")
            .arg(pg.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string());
        if redis.cluster {
            cmd.arg("--redis-cluster");
        }
        if let Some((sentinels, master)) = &redis.sentinel {
            cmd.arg("--redis-sentinel")
                .arg(sentinels.join(","))
                .arg("--redis-master")
                .arg(master);
        }
        let mut peer = Peer::spawn("pake", cmd, dir)?;
        peer.wait_listening(addr, Duration::from_secs(30))?;
        Ok(Pake { peer, addr, admin })
    }
}

/// The text of Pake's `/metrics`.
async fn metrics(admin: SocketAddr) -> Result<String, BenchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: pake\r\n\r\n")
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body)
}

/// The value of an unlabelled counter in a `/metrics` text (0 when absent).
fn counter(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The Redis L1's (hits, other cacheable reads) so far: a read forwarded without a lookup
/// (behind an earlier command in flight) counts as not served from the L1, like a miss.
pub async fn l1_lookups(admin: SocketAddr) -> Result<(f64, f64), BenchError> {
    let body = metrics(admin).await?;
    Ok((
        counter(&body, "pake_redis_l1_hits_total"),
        counter(&body, "pake_redis_l1_misses_total")
            + counter(&body, "pake_redis_l1_forwarded_total"),
    ))
}

/// Read `/metrics` and sum `pake_pg_routed_total` by its `target` label: (primary, replicas).
pub async fn routed(admin: SocketAddr) -> Result<(f64, f64), BenchError> {
    let body = metrics(admin).await?;
    let (mut primary, mut replicas) = (0.0, 0.0);
    for line in body
        .lines()
        .filter(|l| l.starts_with("pake_pg_routed_total{"))
    {
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if line.contains("target=\"primary\"") {
            primary += value;
        } else {
            replicas += value;
        }
    }
    Ok((primary, replicas))
}

#[cfg(test)]
mod tests {
    use super::counter;

    #[test]
    fn counters_are_read_by_exact_name() {
        let body = "# HELP pake_redis_l1_hits_total Hits.\n\
                    pake_redis_l1_hits_total_extra 9\n\
                    pake_redis_l1_hits_total 1234\n\
                    pake_redis_l1_misses_total 5e1\n";
        assert_eq!(counter(body, "pake_redis_l1_hits_total"), 1234.0);
        assert_eq!(counter(body, "pake_redis_l1_misses_total"), 50.0);
        assert_eq!(counter(body, "pake_absent_total"), 0.0);
    }
}
