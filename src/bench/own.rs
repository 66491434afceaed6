//! `pake bench --target NAME=URL …`: a scenario against servers that already run — your
//! Postgres, the Pake you deployed, your PgBouncer or twemproxy — instead of the lab. The
//! targets are visited in interleaved rounds like lab targets; ratios are to the first one
//! (or the scenario's `baseline` if a target has that name).
//!
//! Safety: a scenario that writes is refused unless `--allow-writes`; data lives in a
//! schema / key prefix of its own, made by `--prepare` and removed by `--cleanup`, both
//! through the first target. CPU per operation comes from the process behind a target
//! (`--pid NAME=PID`, else the process listening on the target's port on this machine).

use super::cli::BenchArgs;
use super::env::{Endpoint, Env, Target};
use super::measure::Bounds;
use super::report::ScenarioReport;
use super::scenario::Scenario;
use super::{prepare, procfs, runner, BenchError};
use indicatif::ProgressBar;
use std::net::{SocketAddr, ToSocketAddrs};

/// One `--target NAME=URL`, parsed.
#[derive(Debug, Clone)]
pub struct OwnTarget {
    pub name: String,
    pub url: String,
    pub kind: Kind,
    /// Where it listens, resolved once (for the pid search and Redis clients).
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    /// Why there is no CPU figure, when there is none.
    pub no_pid: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Pg,
    /// With `AUTH` arguments when the URL carries credentials.
    Redis(Option<Vec<String>>),
}

/// Everything `--target` runs share.
pub struct OwnRun {
    pub targets: Vec<OwnTarget>,
    prepare: bool,
    cleanup: bool,
    no_run: bool,
}

fn split_pair<'a>(flag: &str, text: &'a str) -> Result<(&'a str, &'a str), BenchError> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| BenchError::Client(format!("{flag} {text:?}: expected NAME=VALUE")))?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(BenchError::Client(format!(
            "{flag} {text:?}: a name of letters, digits, - and _"
        )));
    }
    Ok((name, value))
}

fn resolve(what: &str, hostport: &str) -> Result<SocketAddr, BenchError> {
    hostport
        .to_socket_addrs()
        .map_err(|e| BenchError::Client(format!("{what}: cannot resolve {hostport}: {e}")))?
        .next()
        .ok_or_else(|| BenchError::Client(format!("{what}: {hostport} has no address")))
}

/// `URL` with its password replaced by `***`, for messages and reports.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl OwnTarget {
    pub fn parse(arg: &str) -> Result<OwnTarget, BenchError> {
        let (name, url) = split_pair("--target", arg)?;
        let what = format!("--target {name}");
        let (kind, addr) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let t = crate::config::parse_url(url)
                .map_err(|e| BenchError::Client(format!("{what}: {e}")))?;
            (Kind::Pg, resolve(&what, &format!("{}:{}", t.host, t.port))?)
        } else if url.starts_with("redis://") {
            let t = crate::ops::probe::RedisTarget::parse(url)
                .map_err(|e| BenchError::Client(format!("{what}: {e}")))?;
            let auth = t.password.map(|p| t.user.into_iter().chain([p]).collect());
            (Kind::Redis(auth), resolve(&what, &t.addr)?)
        } else {
            return Err(BenchError::Client(format!(
                "{what}: expected a postgres:// or redis:// URL (rediss:// is not supported yet)"
            )));
        };
        Ok(OwnTarget {
            name: name.into(),
            url: url.into(),
            kind,
            addr,
            pid: None,
            no_pid: None,
        })
    }

    fn target(&self) -> Target {
        let (endpoint, redis_auth) = match &self.kind {
            Kind::Pg => (Endpoint::Pg(self.url.clone()), None),
            Kind::Redis(auth) => (Endpoint::Redis(self.addr), auth.clone()),
        };
        Target {
            name: self.name.clone(),
            endpoint,
            pid: self.pid,
            admin: None,
            slots: None,
            redis_auth,
        }
    }
}

impl OwnRun {
    /// Parse `--target`/`--pid`, find the processes, refuse writes without consent.
    pub fn from_args(args: &BenchArgs, scenarios: &[Scenario]) -> Result<OwnRun, BenchError> {
        let mut targets: Vec<OwnTarget> = args
            .own_targets
            .iter()
            .map(|t| OwnTarget::parse(t))
            .collect::<Result<_, _>>()?;
        for (i, t) in targets.iter().enumerate() {
            if targets[..i].iter().any(|o| o.name == t.name) {
                return Err(BenchError::Client(format!(
                    "--target {}: named twice",
                    t.name
                )));
            }
        }
        for p in &args.pids {
            let (name, pid) = split_pair("--pid", p)?;
            let t = targets.iter_mut().find(|t| t.name == name).ok_or_else(|| {
                BenchError::Client(format!("--pid {p}: no --target named {name}"))
            })?;
            let pid: u32 = pid
                .parse()
                .map_err(|_| BenchError::Client(format!("--pid {p}: not a process id")))?;
            if procfs::tree_cpu_secs(pid).is_none() {
                return Err(BenchError::Client(format!("--pid {p}: no such process")));
            }
            t.pid = Some(pid);
        }
        for t in targets.iter_mut().filter(|t| t.pid.is_none()) {
            t.pid = procfs::listening_pid(t.addr);
            if t.pid.is_none() {
                t.no_pid = Some(format!(
                    "no CPU figure: no process of ours listens on {} (remote, or another \
                     user's: pass --pid {}=PID, as root if needed)",
                    t.addr, t.name
                ));
            }
        }
        let run = OwnRun {
            targets,
            prepare: args.prepare,
            cleanup: args.cleanup,
            no_run: args.no_run,
        };
        for s in scenarios {
            let s = run.adapt(s)?;
            if let (Some(what), false, false) = (s.writes(), args.allow_writes, args.no_run) {
                return Err(BenchError::Client(format!(
                    "scenario {} writes ({what}); pass --allow-writes to run it against your \
                     targets",
                    s.name
                )));
            }
        }
        Ok(run)
    }

    /// The scenario pointed at these targets, each speaking its protocol.
    fn adapt(&self, s: &Scenario) -> Result<Scenario, BenchError> {
        let mut s = s.clone();
        s.for_own(self.targets.iter().map(|t| t.name.clone()).collect())
            .map_err(|reason| BenchError::Scenario {
                path: s.name.clone(),
                reason,
            })?;
        for t in &self.targets {
            if (t.kind == Kind::Pg) == s.workload.is_redis() {
                return Err(BenchError::Client(format!(
                    "--target {}: scenario {} needs a {} URL",
                    t.name,
                    s.name,
                    if s.workload.is_redis() {
                        "redis://"
                    } else {
                        "postgres://"
                    }
                )));
            }
        }
        Ok(s)
    }

    /// Prepare, run, clean up one scenario; `None` with --no-run.
    pub async fn run(
        &self,
        s: &Scenario,
        progress: &ProgressBar,
        bounds: &Bounds,
    ) -> Result<Option<ScenarioReport>, BenchError> {
        let s = self.adapt(s)?;
        let first = &self.targets[0];
        if self.prepare {
            progress.set_message(format!("{}: preparing through {}", s.name, first.name));
            let done = match &first.kind {
                Kind::Pg => prepare::prepare_pg(&first.url, &s).await?,
                Kind::Redis(auth) => {
                    let targets = self.targets.len();
                    prepare::prepare_redis(first.addr, auth.as_deref(), &s, targets).await?
                }
            };
            progress.suspend(|| eprintln!("prepare ({}): {done}", first.name));
        }
        let report = if self.no_run {
            None
        } else {
            Some(self.measure(&s, progress, bounds).await?)
        };
        if self.cleanup {
            let done = match &first.kind {
                Kind::Pg => prepare::cleanup_pg(&first.url, &s).await?,
                Kind::Redis(auth) => {
                    prepare::cleanup_redis(first.addr, auth.as_deref(), &s).await?
                }
            };
            progress.suspend(|| eprintln!("cleanup ({}): {done}", first.name));
        }
        Ok(report)
    }

    async fn measure(
        &self,
        s: &Scenario,
        progress: &ProgressBar,
        bounds: &Bounds,
    ) -> Result<ScenarioReport, BenchError> {
        for t in &self.targets {
            if t.kind == Kind::Pg {
                prepare::check_pg(&t.url, s).await.map_err(|e| {
                    BenchError::Client(format!("--target {} ({}): {e}", t.name, redact(&t.url)))
                })?;
            }
        }
        let env = Env::external(self.targets.iter().map(OwnTarget::target).collect());
        let mut report = runner::run(s, &env, progress, bounds).await;
        report.warnings.extend(
            self.targets
                .iter()
                .filter_map(|t| Some(format!("{}: {}", t.name, t.no_pid.as_ref()?))),
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_by_scheme() {
        let pg = OwnTarget::parse("direct=postgres://u:secret@127.0.0.1:5432/app").unwrap();
        assert_eq!((pg.name.as_str(), &pg.kind), ("direct", &Kind::Pg));
        assert_eq!(pg.addr.port(), 5432);
        let r = OwnTarget::parse("cache=redis://:pw@127.0.0.1:6380").unwrap();
        assert_eq!(r.kind, Kind::Redis(Some(vec!["pw".into()])));
        let r = OwnTarget::parse("cache=redis://127.0.0.1").unwrap();
        assert_eq!((r.kind, r.addr.port()), (Kind::Redis(None), 6379));
        for bad in ["nourl", "=postgres://u@h/db", "x=http://h", "a b=redis://h"] {
            assert!(OwnTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/app"),
            "postgres://u:***@db:5432/app"
        );
        assert_eq!(redact("redis://db:6379"), "redis://db:6379");
    }
}
