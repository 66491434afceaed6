//! The programs benchmarked side by side, each started on free ports with a generated
//! config: Pake (a subprocess of this executable, so it does not share the load generator's
//! runtime), PgBouncer, twemproxy, and lab Redis servers. Every peer is stopped with its
//! temp dir on drop, and by a parent-death signal if the bench is killed outright.

pub mod pake;
pub mod pgbouncer;
pub mod redis;
pub mod twemproxy;

use super::BenchError;
use crate::lab::process::{self, spawn_server};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A running peer process and the temp dir holding its config and log.
pub struct Peer {
    pub name: String,
    child: Child,
    log: PathBuf,
    dir: TempDir,
}

impl Peer {
    /// A temp dir for a peer's files (readable by the server account when we are root).
    pub fn dir(prefix: &str) -> Result<TempDir, BenchError> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        Ok(dir)
    }

    /// Start `cmd` with stdout and stderr going to `dir/NAME.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: TempDir) -> Result<Peer, BenchError> {
        let log = dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        process::hand_over(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = spawn_server(cmd).map_err(|e| BenchError::Peer {
            what: format!("starting {name}"),
            output: e.to_string(),
        })?;
        Ok(Peer {
            name: name.into(),
            child,
            log,
            dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The peer's log so far (for error messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until `addr` accepts TCP connections; fails early if the process exits.
    pub fn wait_listening(&mut self, addr: SocketAddr, limit: Duration) -> Result<(), BenchError> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Peer {
                    what: format!("{} exited ({status})", self.name),
                    output: self.log(),
                });
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(BenchError::Peer {
                    what: format!("{} did not listen on {addr}", self.name),
                    output: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        process::signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Find `name` on PATH or in the usual sbin directories (Debian puts pgbouncer and
/// nutcracker in /usr/sbin, which a non-root PATH may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A free loopback address.
pub fn free_addr() -> Result<SocketAddr, BenchError> {
    Ok(SocketAddr::from(([127, 0, 0, 1], process::free_port()?)))
}
