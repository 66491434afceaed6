//! `pake lab`: start lab servers from the shell (for load-test scripts and manual poking),
//! print their URLs as `KEY=value` lines on stdout, and delete everything on SIGINT/SIGTERM.

use super::{HbaAuth, PgLab, PgOptions};

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Also start a streaming replica of the primary.
    #[arg(long)]
    pub replica: bool,
    /// Server authentication for TCP clients: scram-sha-256 (default), md5 or trust.
    #[arg(long, default_value = "scram-sha-256")]
    pub auth: String,
    /// Extra postgresql.conf lines, e.g. --conf "max_connections = 500".
    #[arg(long)]
    pub conf: Vec<String>,
}

pub fn run(args: LabArgs) -> anyhow::Result<()> {
    let auth = match args.auth.as_str() {
        "scram-sha-256" => HbaAuth::ScramSha256,
        "md5" => HbaAuth::Md5,
        "trust" => HbaAuth::Trust,
        other => anyhow::bail!("--auth must be scram-sha-256, md5 or trust, not {other:?}"),
    };
    let lab = PgLab::start(PgOptions {
        auth,
        replica: args.replica,
        conf: args.conf,
        ..PgOptions::default()
    })?;
    println!("PG_PRIMARY_URL={}", lab.url("postgres"));
    if let Some(url) = lab.replica_url("postgres") {
        println!("PG_REPLICA_URL={url}");
    }
    println!("PG_BINDIR={}", super::postgres::bindir()?.display());
    println!("LAB_READY=1");
    use std::io::Write;
    std::io::stdout().flush()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(lab);
    Ok(())
}
