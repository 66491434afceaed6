//! `pake demo`: a local lab — PostgreSQL primary + streaming replica, a 3-primary Redis
//! Cluster — with Pake in front of both, a short load (pgbench direct and through Pake, a
//! query that lacks an index, redis-benchmark through Pake), then the query report with
//! its index advice, and how to connect. Stays up until Ctrl-C unless `--no-wait`.
//!
//! Redis is optional: without `redis-server` the demo says so and goes on with Postgres.

use crate::config::{Config, QuickStart};
use crate::insight::report;
use crate::lab::{PgLab, PgOptions, RedisLab, RedisOptions};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Seconds of pgbench per target.
    #[arg(long, default_value_t = 5)]
    pub duration: u32,
    /// pgbench clients.
    #[arg(long, default_value_t = 50)]
    pub clients: u32,
    /// Pool size in front of Postgres.
    #[arg(long, default_value_t = 10)]
    pub pool_size: usize,
    /// Where the report files go.
    #[arg(long, default_value = "target/demo-report")]
    pub report_dir: PathBuf,
    /// Exit after the report instead of waiting for Ctrl-C.
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::obs::logging::init(crate::config::LogFormat::Text, "warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(demo(args))
}

/// A table whose filter column has no index: the advisor's case in point.
const SEED: &str = "CREATE TABLE demo_orders AS
  SELECT g AS id, g % 5000 AS customer_id, now() - g * interval '1 second' AS created,
         md5(g::text) AS note
  FROM generate_series(1, 200000) g;
ALTER TABLE demo_orders ADD PRIMARY KEY (id);
ANALYZE demo_orders;";

/// The pgbench script that keeps asking it.
const ORDERS_SCRIPT: &str =
    "\\set c random(1, 5000)\nSELECT count(*), max(created) FROM demo_orders WHERE customer_id = :c;\n";

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    println!("==> starting the lab: PostgreSQL primary + streaming replica, Redis Cluster (3 primaries)…");
    let pg = tokio::task::spawn_blocking(|| {
        PgLab::start(PgOptions {
            replica: true,
            ..PgOptions::default()
        })
    });
    let redis = tokio::task::spawn_blocking(|| RedisLab::start(RedisOptions::cluster(3, 0)));
    let lab = pg.await??;
    let redis = match redis.await? {
        Ok(r) => Some(r),
        Err(e) => {
            println!("    (no Redis: {e}; going on with PostgreSQL only)");
            None
        }
    };
    let bin = crate::lab::postgres::bindir()?;
    let pgbench = bin.join("pgbench");

    println!("==> pgbench -i -s 5, and a demo_orders table with no index on customer_id (direct)");
    let mut init = Command::new(&pgbench);
    init.args(["-i", "-s", "5", "-q", &lab.url("postgres")]);
    crate::lab::postgres::run_checked(init, "pgbench -i")?;
    lab.primary
        .psql(&lab.user, SEED)
        .context("seeding demo_orders")?;
    if let Err(e) = lab
        .primary
        .psql(&lab.user, "CREATE EXTENSION IF NOT EXISTS hypopg")
    {
        println!("    (no hypopg, index advice will not be checked: {e})");
    }
    wait_replayed(&lab).await;

    let pg_port = crate::lab::process::free_port()?;
    let admin_port = crate::lab::process::free_port()?;
    let redis_port = crate::lab::process::free_port()?;
    let quick = QuickStart {
        pg_listen: Some(([127, 0, 0, 1], pg_port).into()),
        admin_listen: Some(([127, 0, 0, 1], admin_port).into()),
        pg_primary: Some(lab.url("postgres")),
        pg_replicas: lab.replica_url("postgres").into_iter().collect(),
        pool_size: Some(args.pool_size),
        redis_listen: redis.as_ref().map(|_| ([127, 0, 0, 1], redis_port).into()),
        redis_url: redis.as_ref().map(RedisLab::url),
        redis_cluster: redis.is_some(),
        ..QuickStart::default()
    };
    let mut config = quick.apply(Config::default())?;
    // a demo's queries are quick: anything over 10 ms counts as slow, so its plan is
    // captured and the advisor has samples to work on (production default: 500 ms)
    config.insight.slow_query_threshold = crate::config::Dur::millis(10);
    let running = crate::app::start(config).await?;
    let pake_url = format!(
        "postgres://{}:{}@127.0.0.1:{}/postgres",
        lab.user,
        lab.password,
        running.pg_addr.port()
    );

    let mut results = Vec::new();
    for (name, url) in [("direct", lab.url("postgres")), ("pake", pake_url.clone())] {
        println!(
            "==> pgbench -S -c {} -j 2 -T {} ({name})",
            args.clients, args.duration
        );
        let out = pgbench_run(&pgbench, &url, &["-S"], args.clients, args.duration).await?;
        results.push((name, out));
    }
    println!("\n{:<8} {:>12} {:>8}", "target", "tps", "ratio");
    let base = results.first().map(|r| r.1.tps).unwrap_or(1.0).max(1e-9);
    for (name, r) in &results {
        let note = if r.failed { "  (failed)" } else { "" };
        println!("{name:<8} {:>12.0} {:>8.2}{note}", r.tps, r.tps / base);
    }
    println!(
        "Pake pooled {} server connections for {} clients (transaction mode); reads went to the replica.",
        args.pool_size, args.clients
    );

    let script = std::env::temp_dir().join(format!("pake-demo-{}.sql", std::process::id()));
    std::fs::write(&script, ORDERS_SCRIPT)?;
    println!("\n==> pgbench through Pake: orders by customer (the query that needs an index), 3 s");
    let file = format!("-f{}", script.display());
    let orders = pgbench_run(&pgbench, &pake_url, &[&file], 8, 3).await;
    let _ = std::fs::remove_file(&script);
    if let Ok(r) = orders {
        println!("    {:.0} tps", r.tps);
    }

    if let (Some(_), Some(addr)) = (&redis, running.redis_addr) {
        println!("\n==> redis-benchmark through Pake (GET/SET, 1000 keys, 20 clients)");
        redis_benchmark(addr.port()).await;
    }

    println!("\n==> the query report");
    let insight = running.proxy.insight.clone();
    let advice = insight.advise().await;
    let data = insight.report(10);
    print!(
        "{}",
        report::text_table(&data.queries[..data.queries.len().min(5)])
    );
    match &advice {
        Ok(a) if !a.indexes.is_empty() => {
            for i in &a.indexes {
                let check = if i.validated {
                    "checked with hypopg"
                } else {
                    "from the plan"
                };
                println!(
                    "index advice ({check}, plan cost {:.0} → {:.0}): {}",
                    i.cost_before, i.cost_after, i.sql
                );
            }
        }
        Ok(a) => println!("index advice: none ({})", a.notes.join("; ")),
        Err(e) => println!("index advice unavailable: {e}"),
    }
    match report::write_all(&data, &args.report_dir) {
        Ok(files) => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            println!("report files: {}", names.join(", "));
        }
        Err(e) => println!("report files not written: {e}"),
    }

    println!("\nTry it:\n  psql '{pake_url}'");
    if let Some(a) = running.redis_addr {
        println!("  redis-cli -p {}", a.port());
    }
    if let Some(a) = running.admin_addr {
        println!("  curl http://{a}/metrics");
        println!(
            "  pake report --admin http://{a} --out {}",
            args.report_dir.display()
        );
        println!(
            "  psql 'postgres://{}:{}@127.0.0.1:{}/pake' -c 'SHOW POOLS'   # admin console",
            lab.user,
            lab.password,
            running.pg_addr.port()
        );
    }
    if args.no_wait {
        running.drain(std::time::Duration::from_secs(2)).await;
        return Ok(());
    }
    println!("\nPress Ctrl-C to stop (the lab is deleted on exit).");
    let _ = tokio::signal::ctrl_c().await;
    running.drain(std::time::Duration::from_secs(2)).await;
    drop(redis);
    drop(lab);
    Ok(())
}

/// Until the replica has the seeded table (reads of it are routed there).
async fn wait_replayed(lab: &PgLab) {
    let Some(replica) = &lab.replica else { return };
    for _ in 0..100 {
        if replica
            .psql(&lab.user, "SELECT 1 FROM demo_orders LIMIT 1")
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

struct Bench {
    tps: f64,
    failed: bool,
}

async fn pgbench_run(
    pgbench: &Path,
    url: &str,
    script: &[&str],
    clients: u32,
    duration: u32,
) -> anyhow::Result<Bench> {
    let mut cmd = Command::new(pgbench);
    cmd.args(["-n", "-j", "2"])
        .args(script)
        .arg(format!("-c{clients}"))
        .arg(format!("-T{duration}"))
        .arg(url);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let text = String::from_utf8_lossy(&out.stdout);
    let failed = !out.status.success();
    if failed {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(Bench {
        tps: parse_tps(&text).unwrap_or(0.0),
        failed,
    })
}

async fn redis_benchmark(port: u16) {
    let Ok(bin) = crate::lab::redis::bin("redis-benchmark") else {
        println!("    (redis-benchmark not installed)");
        return;
    };
    let mut cmd = Command::new(bin);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-t", "set,get", "-n", "50000", "-r", "1000", "-c", "20", "-q",
        ]);
    match tokio::task::spawn_blocking(move || cmd.output()).await {
        Ok(Ok(out)) => {
            // -q prints progress with carriage returns; keep the final figures
            for line in String::from_utf8_lossy(&out.stdout).split(['\r', '\n']) {
                if line.contains("requests per second") {
                    println!("    {}", line.trim());
                }
            }
        }
        _ => println!("    (redis-benchmark did not run)"),
    }
}

/// The "tps = N (without initial connection time)" figure of pgbench's report.
pub fn parse_tps(report: &str) -> Option<f64> {
    report
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|n| n.parse().ok())
}
