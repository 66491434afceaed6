//! `pake orchestration --health-check`: what a Docker HEALTHCHECK, a script or an on-call
//! engineer runs to ask "is everything Pake depends on up?".
//!
//! The checks come from the same configuration as `pake serve` (a file, quick-start flags, or
//! both), so the health check can never look at different backends than the proxy does.
//! [`plan`] turns the config and a [`Service`] filter into a list of [`Check`]s; [`run`]
//! runs them concurrently, each under its own deadline, and returns a [`Report`] with one
//! line per check. The probes themselves are in [`super::probe`].

use super::probe::{self, PgTarget, ProbeError, RedisTarget, RedisTls};
use crate::config::{Config, Database};
use crate::pg::auth::Secret;
use crate::redis::config::{ClientTlsMode, RedisConfig, ServerTlsVerify};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Which part of the deployment to check (`--service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// Every backend and every listener of Pake.
    All,
    /// Every Postgres primary and replica.
    Postgres,
    /// The primary and replicas of one configured database.
    PostgresDb(String),
    /// Every Redis backend (`--redis`).
    Redis,
    /// Pake's own listeners (Postgres, admin HTTP, Redis when given).
    Pake,
}

impl FromStr for Service {
    type Err = HealthError;
    fn from_str(s: &str) -> Result<Service, HealthError> {
        match s {
            "all" => Ok(Service::All),
            "postgres" => Ok(Service::Postgres),
            "redis" => Ok(Service::Redis),
            "pake" => Ok(Service::Pake),
            _ => match s.strip_prefix("postgres:") {
                Some(db) if !db.is_empty() => Ok(Service::PostgresDb(db.to_string())),
                _ => Err(HealthError::UnknownService(s.to_string())),
            },
        }
    }
}

impl Service {
    fn covers_database(&self, name: &str) -> bool {
        match self {
            Service::All | Service::Postgres => true,
            Service::PostgresDb(db) => db == name,
            Service::Redis | Service::Pake => false,
        }
    }
}

/// Why no check could be run at all (as opposed to a check that failed).
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("unknown service {0:?}: use all, postgres, postgres:<database>, redis or pake")]
    UnknownService(String),
    #[error("database {name:?} is not configured (configured: {known})")]
    NoSuchDatabase { name: String, known: String },
    #[error("no Postgres database configured: pass --config FILE or --pg-primary URL")]
    NoDatabases,
    #[error("no Redis backend to check: pass --redis URL")]
    NoRedis,
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// What to check, besides the config.
#[derive(Debug, Clone)]
pub struct Options {
    pub service: Service,
    /// Redis backends (`--redis URL`, repeatable). A `rediss://` URL is checked over TLS
    /// against the config's `[redis] server_tls_ca_file`.
    pub redis: Vec<String>,
    /// Pake's Redis listener (`--redis-listen`), checked with PING through Pake; over TLS
    /// when the config's `[redis] client_tls_sslmode` is not `disable`.
    pub redis_listen: Option<SocketAddr>,
    /// Deadline of each check.
    pub timeout: Duration,
}

/// One check: a labelled probe.
#[derive(Debug, Clone)]
pub struct Check {
    /// The service it belongs to: `postgres:app`, `redis`, `pake`.
    pub service: String,
    /// What is probed: `primary 10.0.0.5:5432`, `admin http://127.0.0.1:9930/ready`.
    pub what: String,
    probe: Probe,
}

#[derive(Debug, Clone)]
enum Probe {
    Postgres(PgTarget),
    Redis(RedisTarget, Option<RedisTls>),
    PakePostgres(SocketAddr),
    PakeRedis(SocketAddr, Option<RedisTls>),
    PakeAdmin(SocketAddr),
    /// Nothing to send: the config itself makes the check fail (no credentials, bad URL).
    Unusable(String),
}

/// Build the checks `opts.service` asks for.
pub fn plan(config: &Config, opts: &Options) -> Result<Vec<Check>, HealthError> {
    let mut checks = Vec::new();
    match &opts.service {
        Service::Postgres if config.databases.is_empty() => return Err(HealthError::NoDatabases),
        Service::PostgresDb(name) if config.database(name).is_none() => {
            let known: Vec<&str> = config.databases.iter().map(|d| d.name.as_str()).collect();
            return Err(HealthError::NoSuchDatabase {
                name: name.clone(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        }
        Service::Redis if opts.redis.is_empty() => return Err(HealthError::NoRedis),
        _ => {}
    }
    let tls = server_tls(config);
    // the wildcard entry is no database of its own: the named entries cover its server
    let named = config
        .databases
        .iter()
        .filter(|d| d.name != crate::config::WILDCARD_DATABASE);
    for db in named {
        if opts.service.covers_database(&db.name) {
            checks.extend(postgres_checks(config, db, &tls));
        }
    }
    if matches!(opts.service, Service::All | Service::Redis) {
        let redis = config.redis.as_ref();
        checks.extend(opts.redis.iter().map(|url| redis_check(url, redis)));
    }
    if matches!(opts.service, Service::All | Service::Pake) {
        checks.extend(pake_checks(config, opts));
    }
    Ok(checks)
}

/// The primary and each replica of `db`, with the login and TLS Pake itself would use.
fn postgres_checks(
    config: &Config,
    db: &Database,
    tls: &Result<Option<probe::PgTls>, String>,
) -> Vec<Check> {
    let service = format!("postgres:{}", db.name);
    let login = server_login(config, db).and_then(|l| Ok((l, tls.clone()?)));
    let mut servers = vec![("primary", db.host.as_str(), db.port)];
    servers.extend(
        db.replicas
            .iter()
            .map(|r| ("replica", r.host.as_str(), r.port)),
    );
    servers
        .into_iter()
        .map(|(role, host, port)| Check {
            service: service.clone(),
            what: format!("{role} {}", host_port(host, port)),
            probe: match &login {
                Ok(((user, password), tls)) => Probe::Postgres(PgTarget {
                    host: host.to_string(),
                    port,
                    user: user.clone(),
                    password: password.clone(),
                    dbname: db.server_dbname().to_string(),
                    tls: tls.clone(),
                }),
                Err(why) => Probe::Unusable(why.clone()),
            },
        })
        .collect()
}

/// TLS to the Postgres servers as Pake's own server connections do it.
fn server_tls(config: &Config) -> Result<Option<probe::PgTls>, String> {
    use crate::tls::ServerTlsMode;
    let require = match config.tls.server_tls_sslmode {
        ServerTlsMode::Disable => return Ok(None),
        ServerTlsMode::Prefer => false,
        _ => true,
    };
    match crate::tls::client_config(&config.tls) {
        Ok(Some(config)) => Ok(Some(probe::PgTls {
            config: Box::new(config),
            require,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("TLS to servers ([tls] server_tls_*): {e}")),
    }
}

/// Who to log in to `db`'s servers as: its `server_user`, else the first user whose server
/// password Pake knows (`server_password` or a plaintext `password`), else the first user
/// without a password (trust).
fn server_login(config: &Config, db: &Database) -> Result<(String, Option<String>), String> {
    if let Some(user) = &db.server_user {
        return Ok((user.clone(), db.server_password.clone()));
    }
    let known = config.users.iter().find_map(|u| {
        let password = u.server_password.clone().or_else(|| {
            u.password
                .as_deref()
                .and_then(|p| Secret::from_config(&u.name, p).plaintext)
        })?;
        Some((u.name.clone(), Some(password)))
    });
    known
        .or_else(|| {
            config
                .users
                .iter()
                .find(|u| u.password.is_none())
                .map(|u| (u.name.clone(), None))
        })
        .ok_or_else(|| {
            "no user to log in with: give a user a plaintext password or server_password, or the database a server_user".to_string()
        })
}

fn redis_check(url: &str, config: Option<&RedisConfig>) -> Check {
    let parsed = RedisTarget::parse(url);
    Check {
        service: "redis".into(),
        what: match &parsed {
            Ok(t) => t.addr.clone(),
            Err(_) => url.split('@').next_back().unwrap_or(url).to_string(),
        },
        probe: match parsed {
            Ok(t) if t.tls => match upstream_tls(config) {
                Ok(tls) => Probe::Redis(t, Some(tls)),
                Err(why) => Probe::Unusable(why),
            },
            Ok(t) => Probe::Redis(t, None),
            Err(why) => Probe::Unusable(format!("bad --redis URL: {why}")),
        },
    }
}

/// TLS to a `rediss://` backend, built as the proxy builds it: the chain must verify
/// against `[redis] server_tls_ca_file`, in the `server_tls_sslmode` Pake itself uses.
fn upstream_tls(config: Option<&RedisConfig>) -> Result<RedisTls, String> {
    let Some(config) = config.filter(|c| c.server_tls_ca_file.is_some()) else {
        return Err("a rediss:// URL needs [redis] server_tls_ca_file (or --redis-tls-ca-file): the CA its certificate must chain to".into());
    };
    let connector = config
        .server_tls_connector()
        .map_err(|e| format!("TLS to Redis (redis.server_tls_ca_file): {e}"))?;
    let mode = match config.server_tls_sslmode {
        ServerTlsVerify::VerifyFull => "verify-full",
        ServerTlsVerify::VerifyCa => "verify-ca",
    };
    Ok(RedisTls {
        connector,
        trust: format!("{mode} against redis.server_tls_ca_file"),
    })
}

/// TLS to Pake's own Redis listener, when `client_tls_sslmode` is not `disable` (with
/// `allow`/`prefer` plaintext would also do, but TLS is what the operator set up).
///
/// How its certificate is trusted: the config names no CA for Pake's client-facing
/// certificates (neither `[redis]` nor `[tls]` has a client-side CA key), so
/// * if `client_tls_cert_file` holds a self-signed certificate (the certificate itself, or
///   the root its chain ends in), that certificate is the trust anchor: the listener must
///   present it or a certificate chaining to it. The name is not checked: the probe dials
///   the loopback form of the listen address, which the certificate need not name.
/// * otherwise (a CA-signed certificate whose CA is not in the file, or a file the health
///   check cannot read) there is nothing to verify against: the handshake is not verified.
///   That is only acceptable because this probe sends Pake nothing secret (PING, never
///   AUTH) to an address from Pake's own config, and only asks "is it serving?".
fn pake_redis_tls(config: Option<&RedisConfig>) -> Result<Option<RedisTls>, String> {
    let Some(config) = config.filter(|c| c.client_tls_sslmode != ClientTlsMode::Disable) else {
        return Ok(None);
    };
    let anchors: Result<Vec<_>, String> = match &config.client_tls_cert_file {
        Some(file) => crate::tls::read_certs(file)
            .map(|certs| {
                certs
                    .into_iter()
                    .filter(crate::tls::is_self_signed)
                    .collect()
            })
            .map_err(|e| format!("cannot read it ({e})")),
        None => Err("it is not set".into()),
    };
    let (connector, trust) = match anchors {
        Ok(anchors) if !anchors.is_empty() => (
            crate::tls::anchored_connector(anchors),
            "certificate checked against redis.client_tls_cert_file".to_string(),
        ),
        Ok(_) => (
            crate::tls::unverified_connector(),
            "certificate not verified: redis.client_tls_cert_file has no self-signed certificate to trust".to_string(),
        ),
        Err(why) => (
            crate::tls::unverified_connector(),
            format!("certificate not verified: redis.client_tls_cert_file: {why}"),
        ),
    };
    let connector = connector.map_err(|e| format!("TLS to Pake's Redis listener: {e}"))?;
    Ok(Some(RedisTls { connector, trust }))
}

fn pake_checks(config: &Config, opts: &Options) -> Vec<Check> {
    let pg = reachable(config.general.pg_listen);
    let mut checks = vec![Check {
        service: "pake".into(),
        what: format!("postgres listener {pg}"),
        probe: Probe::PakePostgres(pg),
    }];
    if let Some(admin) = config.general.admin_listen.map(reachable) {
        checks.push(Check {
            service: "pake".into(),
            what: format!("admin http://{admin}/ready"),
            probe: Probe::PakeAdmin(admin),
        });
    }
    if let Some(redis) = opts.redis_listen.map(reachable) {
        checks.push(Check {
            service: "pake".into(),
            what: format!("redis listener {redis}"),
            probe: match pake_redis_tls(config.redis.as_ref()) {
                Ok(tls) => Probe::PakeRedis(redis, tls),
                Err(why) => Probe::Unusable(why),
            },
        });
    }
    checks
}

/// A listen address as a client reaches it: `0.0.0.0` → `127.0.0.1`, `[::]` → `[::1]`.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The result of one check.
#[derive(Debug)]
pub struct Outcome {
    pub check: Check,
    pub elapsed: Duration,
    /// A short detail when up, the reason when down.
    pub result: Result<String, ProbeError>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.elapsed.as_secs_f64() * 1000.0;
        let (mark, text) = match &self.result {
            Ok(detail) => ("ok  ", detail.clone()),
            Err(e) => ("FAIL", e.to_string()),
        };
        write!(
            f,
            "{mark} {} {}: {text} ({ms:.0} ms)",
            self.check.service, self.check.what
        )
    }
}

/// Every outcome, in plan order.
#[derive(Debug)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn is_healthy(&self) -> bool {
        self.outcomes.iter().all(|o| o.result.is_ok())
    }

    pub fn failures(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| o.result.is_err())
    }

    /// `2 of 5 checks failed: postgres:app primary db:5432, redis cache:6379`.
    pub fn summary(&self) -> String {
        let failed: Vec<String> = self
            .failures()
            .map(|o| format!("{} {}", o.check.service, o.check.what))
            .collect();
        if failed.is_empty() {
            return format!("all {} checks passed", self.outcomes.len());
        }
        format!(
            "{} of {} checks failed: {}",
            failed.len(),
            self.outcomes.len(),
            failed.join(", ")
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.outcomes.iter().try_for_each(|o| writeln!(f, "{o}"))
    }
}

/// Run every check concurrently, each under `timeout`.
pub async fn run(checks: Vec<Check>, timeout: Duration) -> Report {
    let handles: Vec<_> = checks
        .into_iter()
        .map(|check| {
            tokio::spawn(async move {
                let started = Instant::now();
                let result = tokio::time::timeout(timeout, probe_once(&check.probe, timeout))
                    .await
                    .unwrap_or(Err(ProbeError::Timeout(timeout)));
                Outcome {
                    check,
                    elapsed: started.elapsed(),
                    result,
                }
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(handles.len());
    for handle in handles {
        // a probe task only ends early by panicking, which would be a bug in this module
        if let Ok(outcome) = handle.await {
            outcomes.push(outcome);
        }
    }
    Report { outcomes }
}

async fn probe_once(probe: &Probe, timeout: Duration) -> Result<String, ProbeError> {
    match probe {
        Probe::Postgres(t) => probe::postgres(t, timeout).await,
        Probe::Redis(t, tls) => probe::redis(t, tls.as_ref()).await,
        Probe::PakePostgres(addr) => probe::pake_postgres(*addr).await,
        Probe::PakeRedis(addr, tls) => probe::pake_redis(*addr, tls.as_ref()).await,
        Probe::PakeAdmin(addr) => probe::pake_admin(*addr).await,
        Probe::Unusable(why) => Err(ProbeError::Unusable(why.clone())),
    }
}

/// [`plan`] and [`run`] on a runtime of its own: what the CLI calls.
pub fn check(config: &Config, opts: &Options) -> Result<Report, HealthError> {
    let checks = plan(config, opts)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HealthError::Runtime)?;
    Ok(runtime.block_on(run(checks, opts.timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuickStart;

    fn opts(service: &str) -> Options {
        Options {
            service: service.parse().unwrap(),
            redis: vec!["redis://:pw@cache:7000".into()],
            redis_listen: Some("0.0.0.0:6380".parse().unwrap()),
            timeout: Duration::from_secs(1),
        }
    }

    fn config() -> Config {
        let mut c = QuickStart {
            pg_primary: Some("postgres://app:secret@db1:5433/app".into()),
            pg_replicas: vec!["postgres://app@db2:5434/app".into()],
            pg_listen: Some("0.0.0.0:6432".parse().unwrap()),
            ..QuickStart::default()
        }
        .apply(Config::default())
        .unwrap();
        let mut reports = c.databases[0].clone();
        reports.name = "reports".into();
        reports.replicas.clear();
        reports.server_user = Some("etl".into());
        reports.server_password = Some("etl-pw".into());
        c.databases.push(reports);
        c
    }

    fn names(checks: &[Check]) -> Vec<String> {
        checks
            .iter()
            .map(|c| format!("{} {}", c.service, c.what))
            .collect()
    }

    #[test]
    fn services_select_checks() {
        let c = config();
        let all = plan(&c, &opts("all")).unwrap();
        assert_eq!(
            names(&all),
            [
                "postgres:app primary db1:5433",
                "postgres:app replica db2:5434",
                "postgres:reports primary db1:5433",
                "redis cache:7000",
                "pake postgres listener 127.0.0.1:6432",
                "pake admin http://127.0.0.1:9930/ready",
                "pake redis listener 127.0.0.1:6380",
            ]
        );
        assert_eq!(plan(&c, &opts("postgres")).unwrap().len(), 3);
        assert_eq!(plan(&c, &opts("postgres:reports")).unwrap().len(), 1);
        assert_eq!(plan(&c, &opts("redis")).unwrap().len(), 1);
        assert_eq!(plan(&c, &opts("pake")).unwrap().len(), 3);
        let e = plan(&c, &opts("postgres:nope")).unwrap_err().to_string();
        assert!(e.contains("\"nope\"") && e.contains("app, reports"), "{e}");
        assert!("mysql".parse::<Service>().is_err());
        assert!("postgres:".parse::<Service>().is_err());
        let mut no_redis = opts("redis");
        no_redis.redis.clear();
        assert!(matches!(plan(&c, &no_redis), Err(HealthError::NoRedis)));
        let empty = Config::default();
        assert!(matches!(
            plan(&empty, &opts("postgres")),
            Err(HealthError::NoDatabases)
        ));
    }

    #[test]
    fn logins_follow_what_pake_uses() {
        let c = config();
        let checks = plan(&c, &opts("postgres")).unwrap();
        let login = |i: usize| match &checks[i].probe {
            Probe::Postgres(t) => (t.user.clone(), t.password.clone()),
            other => panic!("{other:?}"),
        };
        assert_eq!(login(0), ("app".into(), Some("secret".into())));
        assert_eq!(login(1), ("app".into(), Some("secret".into())));
        assert_eq!(login(2), ("etl".into(), Some("etl-pw".into())));

        let mut hashed = config();
        hashed.users[0].password = Some("md5a6343a68d964ca596d9752250d54bb8a".into());
        let checks = plan(&hashed, &opts("postgres:app")).unwrap();
        assert!(
            matches!(&checks[0].probe, Probe::Unusable(why) if why.contains("no user")),
            "{:?}",
            checks[0].probe
        );
        hashed.users[0].server_password = Some("sp".into());
        let checks = plan(&hashed, &opts("postgres:app")).unwrap();
        assert!(
            matches!(&checks[0].probe, Probe::Postgres(t) if t.password.as_deref() == Some("sp"))
        );
    }

    #[test]
    fn rediss_and_the_tls_listener_get_tls_from_the_redis_section() {
        let certs = crate::lab::certs::Certs::generate().unwrap();
        let mut c = config();
        let tls_opts = Options {
            redis: vec!["rediss://:pw@127.0.0.1:7000".into()],
            ..opts("all")
        };
        let probe_of = |c: &Config, what: &str| {
            let checks = plan(c, &tls_opts).unwrap();
            let check = checks.into_iter().find(|k| k.what.contains(what));
            check.map(|k| k.probe).unwrap()
        };
        // no [redis] section, so no CA: a failed check naming the key, not a plaintext probe
        match probe_of(&c, "7000") {
            Probe::Unusable(why) => assert!(why.contains("server_tls_ca_file"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            probe_of(&c, "redis listener"),
            Probe::PakeRedis(_, None)
        ));

        c.redis = Some(RedisConfig {
            server_tls_ca_file: Some(certs.ca.clone()),
            server_tls_sslmode: ServerTlsVerify::VerifyCa,
            client_tls_sslmode: ClientTlsMode::Require,
            client_tls_cert_file: Some(certs.cert.clone()),
            client_tls_key_file: Some(certs.key.clone()),
            ..RedisConfig::default()
        });
        match probe_of(&c, "7000") {
            Probe::Redis(t, Some(tls)) => {
                assert!(t.tls && t.password.as_deref() == Some("pw"));
                assert_eq!(tls.trust, "verify-ca against redis.server_tls_ca_file");
            }
            other => panic!("{other:?}"),
        }
        // the lab certificate is CA-signed and its CA is not in the file: nothing to trust
        match probe_of(&c, "redis listener") {
            Probe::PakeRedis(_, Some(tls)) => assert!(tls.trust.contains("not verified")),
            other => panic!("{other:?}"),
        }
        // the chain file ends in the (self-signed) root: that root is the anchor
        let chain = certs.dir.path().join("chain.pem");
        let pem = [&certs.cert, &certs.ca].map(|p| std::fs::read_to_string(p).unwrap());
        std::fs::write(&chain, pem.concat()).unwrap();
        if let Some(r) = c.redis.as_mut() {
            r.client_tls_cert_file = Some(chain);
        }
        match probe_of(&c, "redis listener") {
            Probe::PakeRedis(_, Some(tls)) => assert!(tls.trust.starts_with("certificate checked")),
            other => panic!("{other:?}"),
        }
        // an unreadable CA is a failed check too
        if let Some(r) = c.redis.as_mut() {
            r.server_tls_ca_file = Some(certs.dir.path().join("missing.pem"));
        }
        match probe_of(&c, "7000") {
            Probe::Unusable(why) => assert!(why.contains("missing.pem"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
