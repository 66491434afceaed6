//! Running the real `pake` binary, and the servers the health check looks at.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn pake() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pake"));
    // the operator's environment must not leak into what the tests assert
    for var in [
        "PAKE_CONFIG",
        "PAKE_PG_LISTEN",
        "PAKE_ADMIN_LISTEN",
        "PAKE_PG_PRIMARY",
        "PAKE_REDIS",
        "PAKE_REDIS_TLS_CA_FILE",
        "PAKE_REDIS_LISTEN",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// What one run of the health check said.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// The stdout line about `what` (e.g. `primary 127.0.0.1:5432`).
    pub fn line(&self, what: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no line about {what:?} in:\n{self}"))
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl From<Output> for Ran {
    fn from(out: Output) -> Ran {
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `pake orchestration --health-check --service=SERVICE ARGS…`
pub fn health(service: &str, args: &[&str]) -> Ran {
    pake()
        .args(["orchestration", "--health-check", "--timeout", "3s"])
        .arg(format!("--service={service}"))
        .args(args)
        .output()
        .expect("run pake")
        .into()
}

/// Run `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

pub fn free_port() -> u16 {
    pake::lab::process::free_port().expect("free port")
}

/// A child process killed (SIGKILL) on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `pake serve` in quick start on free ports, in front of `primary_url`.
pub fn serve(primary_url: &str) -> (Proc, u16, u16) {
    serve_with(primary_url, &["--pool-size", "2"])
}

/// `pake serve` on free ports in front of `primary_url`, with more flags; returns the
/// process and its Postgres and admin ports.
pub fn serve_with(primary_url: &str, args: &[&str]) -> (Proc, u16, u16) {
    let (pg, admin) = (free_port(), free_port());
    let child = pake()
        .arg("serve")
        .args(args)
        .args(["--pg-listen", &format!("127.0.0.1:{pg}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--pg-primary", primary_url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pake serve");
    (Proc(child), pg, admin)
}

/// A redis-server on a free port, no persistence, optionally with `requirepass`.
pub fn redis_server(password: Option<&str>, dir: &Path) -> (Proc, u16) {
    let port = free_port();
    pake::lab::process::hand_over(dir).expect("chown redis dir");
    let mut cmd = pake::lab::process::command(Path::new("redis-server"));
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(p) = password {
        cmd.args(["--requirepass", p]);
    }
    let child = pake::lab::process::spawn_server(cmd).expect("redis-server (install redis-server)");
    let up = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "redis-server did not listen on {port}");
    (Proc(child), port)
}
