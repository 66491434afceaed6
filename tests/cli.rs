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
    let mut child = pake()
        .args(["serve", "--log-format", "json", "--pool-size", "3"])
        .arg("--pg-listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{admin}"))
        .arg("--pg-primary")
        .arg(lab.url("postgres"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // ready when the log says so
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while Instant::now() < deadline && !lines.iter().any(|l: &String| l.contains("Pake is ready")) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
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
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
        if lines.iter().any(|l| l.contains("28P01")) {
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
}
