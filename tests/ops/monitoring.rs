//! The monitoring stack against the real thing: a Prometheus (the Debian `prometheus`
//! binary) scrapes a `pake serve` in front of a lab primary and replica every second and
//! evaluates `docker/prometheus/alerts.yml`. Real clients then saturate a pool, and the
//! saturation alert must go pending; Pake is killed, and PakeDown must go pending. Every
//! dashboard query on the Postgres side must return series from Pake's real metrics, so a
//! renamed metric or label breaks this test, not the dashboard in production.

use crate::harness::{eventually, free_port, serve_with, Proc};
use pake::lab::{PgLab, PgOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Metrics of work in progress (Redis proxy, circuit breakers, rate limits): not exported
/// by this build, or not exercised by this test's traffic.
const NOT_EXERCISED: &[&str] = &["pake_redis_", "pake_circuit_", "pake_rate_limited_"];

struct Prometheus {
    _proc: Proc,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrape `127.0.0.1:admin` as job `pake` every second, with Pake's alert rules.
    fn start(admin: u16) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = Path::new("docker/prometheus/alerts.yml")
            .canonicalize()
            .expect("alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: pake\n    static_configs:\n      - targets: [\"127.0.0.1:{admin}\"]\n",
            rules.display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus)");
        let prom = Prometheus {
            _proc: Proc(child),
            port,
            _dir: dir,
        };
        let up = eventually(Duration::from_secs(30), || {
            prom.query("up{job=\"pake\"} == 1")
                .is_some_and(|r| !r.is_empty())
        });
        assert!(up, "prometheus never scraped pake");
        prom
    }

    /// The result vector of an instant query (None when Prometheus is not answering).
    fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let request = format!(
            "GET /api/v1/query?query={} HTTP/1.0\r\nHost: prometheus\r\n\r\n",
            encode(promql)
        );
        s.write_all(request.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let body = out.split_once("\r\n\r\n")?.1;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        assert_eq!(v["status"], "success", "{promql}: {v}");
        v["data"]["result"].as_array().cloned()
    }

    fn alert(&self, name: &str) -> Vec<serde_json::Value> {
        self.query(&format!("ALERTS{{alertname=\"{name}\"}}"))
            .unwrap_or_default()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every query of the dashboard, variables replaced by concrete values.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("docker/grafana/dashboards/pake.json").expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let concrete = expr
                .replace("$__rate_interval", "10s")
                .replace("$instance", ".*")
                .replace("$database", ".*");
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            out.push((title, concrete));
        }
    }
    out
}

#[test]
fn alerts_fire_and_dashboard_queries_return_data_from_a_real_pake() {
    let lab = PgLab::start(PgOptions {
        replica: true,
        ..PgOptions::default()
    })
    .expect("lab with replica");
    let replica = lab.replica_url("postgres").expect("replica url");
    let (mut pake, pg, admin) = serve_with(
        &lab.url("postgres"),
        &["--pool-size", "1", "--pg-replica", &replica],
    );
    assert!(
        eventually(Duration::from_secs(30), || std::net::TcpStream::connect((
            "127.0.0.1",
            admin
        ))
        .is_ok()),
        "pake admin never listened"
    );
    let prom = Prometheus::start(admin);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = format!("postgres://pake:pake@127.0.0.1:{pg}/postgres");

    // a failed login (client error 28P01), reads (maybe on the replica), and then a
    // transaction holding the primary's only server while a second client queues for it
    let _ = rt.block_on(pake::lab::postgres::connect(
        &url.replace(":pake@", ":nope@"),
    ));
    let holder = rt
        .block_on(pake::lab::postgres::connect(&url))
        .expect("client");
    let waiter = rt
        .block_on(pake::lab::postgres::connect(&url))
        .expect("client");
    for _ in 0..20 {
        rt.block_on(holder.simple_query("select 1"))
            .expect("select");
    }
    // a plain table: a temp table would pin the holder to the server after its commit
    // (session_state = "pin") and the waiter would never get it
    rt.block_on(holder.batch_execute("begin; create table held (i int)"))
        .expect("hold the server");
    let queued = rt.spawn(async move {
        waiter
            .batch_execute("begin; create temp table u (i int); commit")
            .await
    });

    let pending = eventually(Duration::from_secs(30), || {
        prom.alert("PakePoolSaturated")
            .iter()
            .any(|a| a["metric"]["alertstate"] == "pending" && a["metric"]["target"] == "primary")
    });
    assert!(
        pending,
        "PakePoolSaturated never went pending: {:?}",
        prom.alert("PakePoolSaturated")
    );

    // rates need two scrapes of a series: give the newest series a few seconds
    let queries: Vec<(String, String)> = dashboard_queries()
        .into_iter()
        .filter(|(_, q)| !NOT_EXERCISED.iter().any(|m| q.contains(m)))
        .collect();
    let without_data = || -> Vec<String> {
        queries
            .iter()
            .filter(|(_, q)| prom.query(q).is_none_or(|r| r.is_empty()))
            .map(|(title, q)| format!("{title}: {q}"))
            .collect()
    };
    eventually(Duration::from_secs(20), || without_data().is_empty());
    let empty = without_data();
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );

    rt.block_on(holder.batch_execute("commit")).expect("commit");
    rt.block_on(queued)
        .expect("waiter task")
        .expect("the queued client got its server");

    pake.kill();
    let down = eventually(Duration::from_secs(30), || {
        prom.alert("PakeDown")
            .iter()
            .any(|a| a["metric"]["alertstate"] == "pending")
    });
    assert!(
        down,
        "PakeDown never went pending: {:?}",
        prom.alert("PakeDown")
    );
}
