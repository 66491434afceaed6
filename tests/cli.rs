//! The `pake` binary as users run it: check-config, serve (quick start), JSON logs.

use pake::lab::{PgLab, PgOptions};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pake() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pake"))
}

#[test]
fn check_config_accepts_the_example_and_names_bad_keys() {
    let out = pake()
        .args(["check-config", "config/pake.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[pool]\npool_size = 5\nquery_wait_timout = \"5s\"\n\n[[databases]]\nname = \"a\"\nhost = \"h\"\n",
    )
    .unwrap();
    let out = pake().arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pool.query_wait_timout"), "{err}");
    assert!(err.contains("unknown field"), "{err}");

    std::fs::write(
        &bad,
        "[[databases]]\nname = \"a\"\nhost = \"h\"\nport = 0\n\n[[users]]\nname = \"u\"\n",
    )
    .unwrap();
    let out = pake().arg("check-config").arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("databases[0].port"), "{err}");
    assert!(err.contains("users[0].password"), "{err}");
}

#[test]
fn serve_quick_start_with_json_logs() {
    let lab = PgLab::start(PgOptions::default()).unwrap();
    let port = pake::lab::process::free_port().unwrap();
    let admin = pake::lab::process::free_port().unwrap();
    let mut cmd = pake();
    cmd.args(["serve", "--log-format", "json", "--pool-size", "3"])
        .arg("--pg-listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{admin}"))
        .arg("--pg-primary")
        .arg(lab.url("postgres"));
    let (mut child, rx, mut lines) = serve_until_ready(cmd);
    let url = format!("postgres://pake:pake@127.0.0.1:{port}/postgres");
    let psql = pake::lab::postgres::bindir().unwrap().join("psql");
    let out = Command::new(psql)
        .args(["-X", "-A", "-t", "-c", "select 6 * 7"])
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    // a failed login is logged with the client's span
    let _ = Command::new(pake::lab::postgres::bindir().unwrap().join("psql"))
        .args(["-X", "-c", "select 1"])
        .arg(url.replace(":pake@", ":wrong@"))
        .env("PGCONNECT_TIMEOUT", "5")
        .output();
    // so is one that failed before its startup packet was read (a bad protocol version)
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&[0, 0, 0, 8, 0, 9, 0, 0]).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert_eq!(answer.first(), Some(&b'E'), "an ErrorResponse: {answer:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
        if lines.iter().any(|l| l.contains("28P01")) && lines.iter().any(|l| l.contains("0A000")) {
            break;
        }
    }
    // SIGTERM drains and exits 0
    pake::lab::process::signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let json: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed = json
        .iter()
        .find(|v| v["fields"]["sqlstate"] == "28P01")
        .unwrap_or_else(|| panic!("no 28P01 line in {lines:#?}"));
    assert!(
        failed["span"]["id"].is_u64(),
        "client id on the line: {failed}"
    );
    let early = json
        .iter()
        .find(|v| v["fields"]["sqlstate"] == "0A000")
        .unwrap_or_else(|| panic!("no 0A000 line in {lines:#?}"));
    assert!(
        early["span"]["id"].is_u64() && early["span"]["peer"].is_string(),
        "client id and peer on the line: {early}"
    );
}

/// Spawn `cmd` (a `pake serve`) with its stderr read line by line into a channel, and wait
/// up to 20 s for "Pake is ready"; the lines read so far come back with the channel.
fn serve_until_ready(
    mut cmd: Command,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    Vec<String>,
) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while Instant::now() < deadline && !lines.iter().any(|l: &String| l.contains("Pake is ready")) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    (child, rx, lines)
}

/// A `pake serve` subprocess on a fixed port, with its stderr collected.
struct Served {
    child: std::process::Child,
    port: u16,
    admin: u16,
}

impl Served {
    fn start(args: &[String], port: u16) -> Served {
        Served::start_with_admin(args, port, pake::lab::process::free_port().unwrap())
    }

    fn start_with_admin(args: &[String], port: u16, admin: u16) -> Served {
        let mut cmd = pake();
        cmd.arg("serve")
            .args(args)
            .arg("--pg-listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin}"));
        let (child, rx, _) = serve_until_ready(cmd);
        // keep draining its log so it never blocks on a full pipe
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Served { child, port, admin }
    }

    fn signal(&self, sig: i32) {
        pake::lab::process::signal(self.child.id(), sig);
    }

    fn child_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait up to `limit` for the process to exit by itself.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pgbench(args: &[&str], url: &str) -> std::process::Child {
    Command::new(pake::lab::postgres::bindir().unwrap().join("pgbench"))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn pgbench_report(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench failed:\n{text}");
    text
}

fn failed_transactions(report: &str) -> Option<u64> {
    report
        .lines()
        .find(|l| l.starts_with("number of failed transactions:"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|n| n.parse().ok())
}

fn config_file(dir: &std::path::Path, lab: &PgLab, pool_size: usize) -> std::path::PathBuf {
    let path = dir.join("pake.toml");
    std::fs::write(
        &path,
        format!(
            "[general]\nadmin_users = [\"pake\"]\nshutdown_timeout = \"10s\"\n\n[pool]\npool_size = {pool_size}\n\n\
             [[databases]]\nname = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\n\n\
             [[users]]\nname = \"pake\"\npassword = \"pake\"\n",
            lab.primary.port
        ),
    )
    .unwrap();
    path
}

fn metric(admin: u16, name: &str) -> Option<f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).ok()?;
    use std::io::{Read, Write};
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn sighup_resizes_the_pool_under_pgbench() {
    let lab = PgLab::start(PgOptions::default()).unwrap();
    let init = pgbench(&["-i", "-s", "1", "-q"], &lab.url("postgres"));
    pgbench_report(init);
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &lab, 2);
    let port = pake::lab::process::free_port().unwrap();
    let pake_proc = Served::start(&["--config".into(), path.display().to_string()], port);
    let url = format!("postgres://pake:pake@127.0.0.1:{port}/postgres");
    let load = pgbench(&["-c", "12", "-j", "2", "-T", "6", "-n"], &url);
    std::thread::sleep(Duration::from_secs(2));
    config_file(dir.path(), &lab, 6);
    pake_proc.signal(libc::SIGHUP);
    let report = pgbench_report(load);
    assert_eq!(failed_transactions(&report), Some(0), "{report}");
    let size = metric(
        pake_proc.admin,
        "pake_pg_pool_size{database=\"postgres\",target=\"primary\",user=\"pake\"}",
    );
    assert_eq!(size, Some(6.0), "the new pool size took effect");
    assert_eq!(pake_proc.port, port);
}

#[test]
fn rolling_restart_under_pgbench_loses_no_transaction() {
    // let the kernel hand connections queued on the closing listener to its sibling
    // (net.ipv4.tcp_migrate_req; recommended for rolling restarts, see README)
    let _ = std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1");
    let lab = PgLab::start(PgOptions::default()).unwrap();
    pgbench_report(pgbench(&["-i", "-s", "1", "-q"], &lab.url("postgres")));
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &lab, 4);
    let port = pake::lab::process::free_port().unwrap();
    // one config for both instances, admin port included: every listener is SO_REUSEPORT
    let admin = pake::lab::process::free_port().unwrap();
    let args = ["--config".to_string(), path.display().to_string()];
    let mut old = Served::start_with_admin(&args, port, admin);
    let url = format!("postgres://pake:pake@127.0.0.1:{port}/postgres");
    // -C: a new connection per transaction, as apps behind a pool of their own reconnect
    let load = pgbench(&["-c", "8", "-j", "2", "-T", "8", "-n", "-C"], &url);
    std::thread::sleep(Duration::from_secs(2));
    let mut new = Served::start_with_admin(&args, port, admin);
    assert!(
        new.child_alive(),
        "the second Pake started on the same ports"
    );
    std::thread::sleep(Duration::from_millis(500));
    old.signal(libc::SIGTERM);
    let report = pgbench_report(load);
    assert_eq!(failed_transactions(&report), Some(0), "{report}");
    // once the old one has drained and exited, the shared admin port is the new one's
    let status = old.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "old Pake drained: {status:?}"
    );
    let served_by_new = metric(
        admin,
        "pake_pg_transactions_total{database=\"postgres\",target=\"primary\",user=\"pake\"}",
    )
    .unwrap_or(0.0);
    assert!(served_by_new > 0.0, "the new Pake took over");
}

/// `make demo`'s command end to end (short): the lab with a replica and a Redis Cluster,
/// pgbench direct and through Pake, redis-benchmark through Pake, and the report with the
/// index the seeded table lacks, checked with hypopg.
#[test]
fn demo_runs_the_lab_and_prints_the_report_with_index_advice() {
    let dir = tempfile::tempdir().unwrap();
    let out = pake()
        .args(["demo", "--no-wait", "--duration", "1", "--clients", "4"])
        .arg("--report-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "pake ",
        "requests per second",
        "from demo_orders where customer_id = ?",
        "index advice (checked with hypopg",
        "ON public.demo_orders (customer_id)",
        "redis-cli -p ",
    ] {
        assert!(
            stdout.contains(want),
            "{want:?} missing:\n{stdout}\n{stderr}"
        );
    }
    assert!(!stdout.contains("(failed)"), "{stdout}");
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(
        html.contains("demo_orders"),
        "the report names the slow query"
    );
}
