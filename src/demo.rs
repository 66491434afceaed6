//! `pake demo`: a local lab (real PostgreSQL), Pake in front of it, a short pgbench run
//! direct and through Pake, and how to connect. Stays up until Ctrl-C unless `--no-wait`.

use crate::config::{Config, QuickStart};
use crate::lab::{PgLab, PgOptions};
use anyhow::Context;
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

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    println!("==> starting a lab PostgreSQL (initdb in a temp dir)…");
    let lab = tokio::task::spawn_blocking(|| PgLab::start(PgOptions::default())).await??;
    let bin = crate::lab::postgres::bindir()?;
    let pgbench = bin.join("pgbench");
    println!("==> pgbench -i -s 5 (direct)");
    let status = Command::new(&pgbench)
        .args(["-i", "-s", "5", "-q", &lab.url("postgres")])
        .status()
        .context("running pgbench -i")?;
    anyhow::ensure!(status.success(), "pgbench -i failed");

    let pg_port = crate::lab::process::free_port()?;
    let admin_port = crate::lab::process::free_port()?;
    let quick = QuickStart {
        pg_listen: Some(([127, 0, 0, 1], pg_port).into()),
        admin_listen: Some(([127, 0, 0, 1], admin_port).into()),
        pg_primary: Some(lab.url("postgres")),
        pool_size: Some(args.pool_size),
        ..QuickStart::default()
    };
    let config = quick.apply(Config::default())?;
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
        let pgbench = pgbench.clone();
        let (clients, duration) = (args.clients, args.duration);
        let out = tokio::task::spawn_blocking(move || {
            Command::new(pgbench)
                .args(["-S", "-n", "-j", "2"])
                .arg(format!("-c{clients}"))
                .arg(format!("-T{duration}"))
                .arg(&url)
                .output()
        })
        .await??;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let tps = parse_tps(&text).unwrap_or(0.0);
        let failed = !out.status.success();
        if failed {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
        results.push((name, tps, failed));
    }
    println!("\n{:<8} {:>12} {:>8}", "target", "tps", "ratio");
    let base = results.first().map(|r| r.1).unwrap_or(1.0).max(1e-9);
    for (name, tps, failed) in &results {
        let note = if *failed { "  (failed)" } else { "" };
        println!("{name:<8} {tps:>12.0} {:>8.2}{note}", tps / base);
    }
    println!(
        "\nPake pools {} server connections for {} clients (transaction mode).",
        args.pool_size, args.clients
    );
    println!("\nTry it:\n  psql '{pake_url}'");
    if let Some(a) = running.admin_addr {
        println!("  curl http://{a}/metrics");
    }
    if args.no_wait {
        running.drain(std::time::Duration::from_secs(2)).await;
        return Ok(());
    }
    println!("\nPress Ctrl-C to stop (the lab is deleted on exit).");
    let _ = tokio::signal::ctrl_c().await;
    running.drain(std::time::Duration::from_secs(2)).await;
    drop(lab);
    Ok(())
}

/// The "tps = N (without initial connection time)" figure of pgbench's report.
pub fn parse_tps(report: &str) -> Option<f64> {
    report
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|n| n.parse().ok())
}
