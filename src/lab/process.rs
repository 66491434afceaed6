//! Child processes for the lab: free ports, running as an unprivileged user when we are
//! root (PostgreSQL refuses to run as root), signals, and a death signal so servers go away
//! with the process that started them even when it is killed without unwinding.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// A port free now, never handed out twice by this process.
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut g = given.lock().unwrap_or_else(|e| e.into_inner());
        if g.insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free port found"))
}

/// The uid/gid to run servers as: ourselves, or the `postgres` (else `nobody`) account
/// when we are root.
pub fn run_as() -> Option<(u32, u32)> {
    static WHO: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *WHO.get_or_init(|| {
        if current_uid() != 0 {
            return None;
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        ["postgres", "nobody"].iter().find_map(|name| {
            passwd.lines().find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() > 3 && f[0] == *name)
                    .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                    .flatten()
            })
        })
    })
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // /proc/self is owned by our effective uid
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// Give `path` (recursively) to the server account when running as root.
pub fn hand_over(path: &Path) -> std::io::Result<()> {
    let Some((uid, gid)) = run_as() else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            hand_over(&entry?.path())?;
        }
    }
    Ok(())
}

/// A command that runs as the server account.
pub fn command(program: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = run_as() {
        cmd.uid(uid).gid(gid);
        cmd.env("HOME", "/tmp");
    }
    cmd.env_remove("PGPASSWORD").env("LC_ALL", "C");
    cmd
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawn a long-lived child. It is started from one dedicated thread that lives as long as
/// the process, with a parent-death signal: if the process dies without running destructors
/// (SIGKILL, abort), the kernel kills the child too.
pub fn spawn_server(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("pake-lab-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    with_death_signal(&mut cmd);
                    let _ = reply.send(cmd.spawn());
                }
            })
            .ok();
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("lab spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("lab spawner thread is gone"))?
}

#[allow(unsafe_code)]
fn with_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the
    // parent; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Send `sig` to `pid` (ignoring a process that is already gone).
#[allow(unsafe_code)]
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and has no memory effects on this process.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// The exit status of a server that has already died (and forget its handle), or `None`
/// while it runs.
pub fn exited(child: &mut Option<Child>) -> Option<std::process::ExitStatus> {
    let status = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
    if status.is_some() {
        *child = None;
    }
    status
}
