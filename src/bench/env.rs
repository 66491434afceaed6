//! A scenario's world: the lab servers, the data, and every target named in the scenario
//! started side by side on free ports. A target that cannot start is listed as unavailable
//! with the reason, and the others still run.

use super::link::Relay;
use super::peers::pake::{Pake, PakeBinary, PgSide, RedisSide};
use super::peers::pgbouncer::{self, PgBouncer};
use super::peers::redis::{self, RedisLab};
use super::peers::twemproxy::{self, Twemproxy};
use super::pg_load;
use super::redis_load::{self, SlotMap};
use super::report::Unavailable;
use super::scenario::Scenario;
use super::BenchError;
use crate::lab::{HbaAuth, PgLab, PgOptions};
use std::net::SocketAddr;

/// How clients reach a target.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Pg(String),
    Redis(SocketAddr),
}

/// One target, ready for clients.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub endpoint: Endpoint,
    /// The proxy's process (resident memory); none for direct.
    pub pid: Option<u32>,
    /// Pake's admin HTTP (`/metrics`).
    pub admin: Option<SocketAddr>,
    /// Clients route by slot themselves (direct to a Redis Cluster).
    pub slots: Option<SlotMap>,
    /// Redis `AUTH` arguments (user and password, or password alone) for each client.
    pub redis_auth: Option<Vec<String>>,
}

/// Servers and proxies of one scenario; all stopped on drop (proxies first).
pub struct Env {
    pub targets: Vec<Target>,
    pub unavailable: Vec<Unavailable>,
    pub replica: bool,
    _pakes: Vec<Pake>,
    _pgbouncer: Option<PgBouncer>,
    _twemproxy: Option<Twemproxy>,
    _redis: Option<RedisLab>,
    _relay: Option<Relay>,
    _pg: Option<PgLab>,
}

/// Pake targets as (name, workers, reactor threads for its clients, 0: Pake's default):
/// `pake` with one worker setting, `pake-w1`, `pake-w2`… with several; then `pake-r1`,
/// `pake-r2`… for `reactors` (one worker each).
fn pake_names(base: &str, workers: &[usize], reactors: &[usize]) -> Vec<(String, usize, usize)> {
    let by_workers = match workers {
        [w] => vec![(base.to_string(), *w, 0)],
        many => many
            .iter()
            .map(|w| (format!("{base}-w{w}"), *w, 0))
            .collect(),
    };
    let by_reactors = reactors.iter().map(|r| (format!("{base}-r{r}"), 1, *r));
    by_workers.into_iter().chain(by_reactors).collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BenchError> + Send + 'static,
) -> Result<T, BenchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BenchError::Client(format!("setup thread: {e}")))?
}

impl Env {
    fn empty(replica: bool) -> Env {
        Env {
            targets: Vec::new(),
            unavailable: Vec::new(),
            replica,
            _pakes: Vec::new(),
            _pgbouncer: None,
            _twemproxy: None,
            _redis: None,
            _relay: None,
            _pg: None,
        }
    }

    /// Targets that are already running (yours, given by URL): nothing to start or stop.
    pub fn external(targets: Vec<Target>) -> Env {
        Env {
            targets,
            ..Env::empty(false)
        }
    }

    fn skip(&mut self, target: &str, e: BenchError) {
        self.unavailable.push(Unavailable {
            target: target.into(),
            reason: e
                .to_string()
                .lines()
                .take(6)
                .collect::<Vec<_>>()
                .join(" | "),
        });
    }

    pub async fn start(s: &Scenario, bin: &PakeBinary) -> Result<Env, BenchError> {
        if s.workload.is_redis() {
            Env::start_redis(s, bin).await
        } else {
            Env::start_pg(s, bin).await
        }
    }

    async fn start_pg(s: &Scenario, bin: &PakeBinary) -> Result<Env, BenchError> {
        let most = s.clients.iter().copied().max().unwrap_or(1);
        let poolers = s.measured_targets() - s.targets.iter().filter(|t| *t == "direct").count();
        let direct = if s.targets.iter().any(|t| t == "direct") {
            most
        } else {
            0
        };
        let max_conn = (direct + s.pg.pool_size * poolers * 2 + 50).max(100);
        let auth = match s.pg.auth.as_str() {
            "md5" => HbaAuth::Md5,
            _ => HbaAuth::ScramSha256,
        };
        let opts = PgOptions {
            auth,
            replica: s.pg.replica,
            conf: std::iter::once(format!("max_connections = {max_conn}"))
                .chain(s.pg.server_conf.iter().cloned())
                .collect(),
            ..PgOptions::default()
        };
        let lab = blocking(move || Ok(PgLab::start(opts)?)).await?;
        let url = lab.url("postgres");
        let scale = s.pg.scale;
        let init_url = url.clone();
        blocking(move || pg_load::init_data(&init_url, scale)).await?;
        super::prepare::run_sql(&url, &s.pg.prepare).await?;
        let replica_url = lab.replica_url("postgres");
        if let Some(r) = &replica_url {
            pg_load::wait_replica_caught_up(&url, r).await?;
        }
        let side = PgSide {
            primary_url: url.clone(),
            replica_url,
            pool_size: s.pg.pool_size,
            pool_mode: s.pg.pool_mode.clone(),
            auth: s.pg.auth.clone(),
            max_clients: most + 100,
            insight: true,
            pg_threads: 0,
        };
        let mut env = Env::empty(s.pg.replica);
        for t in &s.targets {
            match t.as_str() {
                "direct" => env.add(t, Endpoint::Pg(url.clone()), None, None),
                "pake" | "pake-noinsight" => {
                    let side = PgSide {
                        insight: t == "pake",
                        ..side.clone()
                    };
                    env.add_pakes(s, bin, t, PakeKind::Pg(side)).await
                }
                _ => {
                    let side = side.clone();
                    match blocking(move || pgbouncer::start(&side)).await {
                        Ok(b) => {
                            let endpoint = Endpoint::Pg(with_port(&url, b.addr.port()));
                            env.add(t, endpoint, Some(b.peer.pid()), None);
                            env._pgbouncer = Some(b);
                        }
                        Err(e) => env.skip(t, e),
                    }
                }
            }
        }
        env._pg = Some(lab);
        Ok(env)
    }

    async fn start_redis(s: &Scenario, bin: &PakeBinary) -> Result<Env, BenchError> {
        let lab = if s.redis.cluster {
            redis::cluster().await?
        } else {
            blocking(redis::standalone).await?
        };
        let slots = if lab.is_cluster() {
            Some(SlotMap::discover(lab.addr()).await?)
        } else {
            None
        };
        let prefix = s.redis.prefix.as_deref().unwrap_or(redis_load::LAB_PREFIX);
        let targets = s.measured_targets();
        redis_load::preload(lab.addr(), slots.clone(), s, prefix, targets, None).await?;
        let mut env = Env::empty(false);
        // with a simulated link, every target reaches Redis through the relay
        let relay = match s.link {
            Some(link) => Some(Relay::start(lab.addr(), link).await?),
            None => None,
        };
        let redis_addr = relay.as_ref().map_or(lab.addr(), |r| r.addr);
        env._relay = relay;
        for t in &s.targets {
            let side = |l1| RedisSide {
                url: format!("redis://{redis_addr}"),
                cluster: lab.is_cluster(),
                l1,
                pool_size: s.redis.pool_size,
                sentinel: None,
                threads: 0,
            };
            match t.as_str() {
                "direct" => {
                    env.add(t, Endpoint::Redis(redis_addr), None, None);
                    if let Some(last) = env.targets.last_mut() {
                        last.slots = slots.clone();
                    }
                }
                "pake" => env.add_pakes(s, bin, t, PakeKind::Redis(side(true))).await,
                "pake-nol1" => env.add_pakes(s, bin, t, PakeKind::Redis(side(false))).await,
                _ if lab.is_cluster() => env.skip(
                    t,
                    BenchError::Unavailable("twemproxy does not speak Redis Cluster".into()),
                ),
                _ => {
                    let (addr, conns) = (redis_addr, s.redis.pool_size);
                    match blocking(move || twemproxy::start(addr, conns)).await {
                        Ok(tw) => {
                            env.add(t, Endpoint::Redis(tw.addr), Some(tw.peer.pid()), None);
                            env._twemproxy = Some(tw);
                        }
                        Err(e) => env.skip(t, e),
                    }
                }
            }
        }
        env._redis = Some(lab);
        Ok(env)
    }

    fn add(&mut self, name: &str, endpoint: Endpoint, pid: Option<u32>, admin: Option<SocketAddr>) {
        self.targets.push(Target {
            name: name.into(),
            endpoint,
            pid,
            admin,
            slots: None,
            redis_auth: None,
        });
    }

    async fn add_pakes(&mut self, s: &Scenario, bin: &PakeBinary, base: &str, kind: PakeKind) {
        for (name, workers, threads) in pake_names(base, &s.pake_workers, s.pake_reactors()) {
            let (bin, kind2) = (bin.clone(), kind.clone());
            let started = blocking(move || match &kind2 {
                PakeKind::Pg(side) => bin.start_pg(
                    &PgSide {
                        pg_threads: threads,
                        ..side.clone()
                    },
                    workers,
                ),
                PakeKind::Redis(side) => bin.start_redis(
                    &RedisSide {
                        threads,
                        ..side.clone()
                    },
                    workers,
                ),
            })
            .await;
            match started {
                Ok(p) => {
                    let endpoint = match &kind {
                        PakeKind::Pg(side) => {
                            Endpoint::Pg(with_port(&side.primary_url, p.addr.port()))
                        }
                        PakeKind::Redis(_) => Endpoint::Redis(p.addr),
                    };
                    self.add(&name, endpoint, Some(p.peer.pid()), Some(p.admin));
                    self._pakes.push(p);
                }
                Err(e) => self.skip(&name, e),
            }
        }
    }
}

#[derive(Clone)]
enum PakeKind {
    Pg(PgSide),
    Redis(RedisSide),
}

/// The same `postgres://` URL on another local port.
fn with_port(url: &str, port: u16) -> String {
    match url.rsplit_once(':') {
        Some((head, tail)) => {
            let path = tail.find('/').map_or("", |i| &tail[i..]);
            format!("{head}:{port}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_port_is_replaced() {
        assert_eq!(
            with_port("postgres://u:p@127.0.0.1:5432/postgres", 6432),
            "postgres://u:p@127.0.0.1:6432/postgres"
        );
    }

    #[test]
    fn pake_names_follow_workers() {
        assert_eq!(
            pake_names("pake", &[0], &[]),
            vec![("pake".to_string(), 0, 0)]
        );
        assert_eq!(
            pake_names("pake", &[1, 2], &[1])
                .into_iter()
                .map(|p| (p.0, p.1, p.2))
                .collect::<Vec<_>>(),
            vec![
                ("pake-w1".to_string(), 1, 0),
                ("pake-w2".to_string(), 2, 0),
                ("pake-r1".to_string(), 1, 1)
            ]
        );
    }
}
