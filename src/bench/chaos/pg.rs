//! The Postgres scenarios. A lab primary (and replica) with `synchronous_commit = on` — the
//! lab's default is off, which lets a crash lose commits already acknowledged, whatever the
//! proxy does — and `pake serve` in front. Clients insert rows with unique ids through Pake
//! (autocommit: a write is acknowledged when its INSERT returns), and readers select; after
//! recovery the primary is asked, directly, which ids it holds.

use super::load::{Load, Role, Worker};
use super::{blocking, secs, until_recovered, Ctx, Outcome, Verdict, GRACE};
use crate::bench::peers::pake::{routed, Pake, PgSide};
use crate::bench::BenchError;
use crate::lab::postgres::describe;
use crate::lab::{PgLab, PgOptions};
use std::collections::HashSet;
use std::time::Duration;

const TABLE: &str =
    "CREATE TABLE chaos_writes (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())";

/// Servers and the proxy of one scenario; Pake stops first.
struct World {
    pake: Pake,
    lab: PgLab,
    /// Clients' URL: through Pake.
    url: String,
}

impl World {
    async fn start(ctx: &Ctx, replica: bool) -> Result<World, BenchError> {
        World::start_with(ctx, replica, &[]).await
    }

    /// `conf`: more `postgresql.conf` lines for the primary (and the replica cloned from it).
    async fn start_with(ctx: &Ctx, replica: bool, conf: &[&str]) -> Result<World, BenchError> {
        let opts = PgOptions {
            replica,
            conf: std::iter::once("synchronous_commit = on")
                .chain(conf.iter().copied())
                .map(String::from)
                .collect(),
            ..PgOptions::default()
        };
        let lab = blocking(move || Ok(PgLab::start(opts)?)).await?;
        let direct = lab.client("postgres").await?;
        direct
            .batch_execute(TABLE)
            .await
            .map_err(|e| BenchError::Client(describe(&e)))?;
        let primary_url = lab.url("postgres");
        let replica_url = lab.replica_url("postgres");
        if let Some(r) = &replica_url {
            crate::bench::pg_load::wait_replica_caught_up(&primary_url, r).await?;
        }
        let side = PgSide {
            primary_url,
            replica_url,
            pool_size: 20,
            pool_mode: "transaction".into(),
            auth: "scram-sha-256".into(),
            max_clients: ctx.plan.clients + 100,
            insight: true,
            pg_threads: 0,
        };
        let bin = ctx.bin.clone();
        let pake = blocking(move || bin.start_pg(&side, 0)).await?;
        let url = format!(
            "postgres://{}:{}@{}/postgres",
            lab.user, lab.password, pake.addr
        );
        Ok(World { pake, lab, url })
    }

    /// Ids in the table, read from the primary directly (not through Pake).
    async fn present(&self) -> Result<HashSet<u64>, BenchError> {
        self.present_on(&self.lab.url("postgres")).await
    }

    /// Ids in the table, read directly from the server at `url`.
    async fn present_on(&self, url: &str) -> Result<HashSet<u64>, BenchError> {
        let c = crate::lab::postgres::connect(url).await?;
        let rows = c
            .query("SELECT id FROM chaos_writes", &[])
            .await
            .map_err(|e| BenchError::Client(describe(&e)))?;
        rows.iter()
            .map(|r| {
                r.try_get::<_, i64>(0)
                    .map(|id| id as u64)
                    .map_err(|e| BenchError::Client(describe(&e)))
            })
            .collect()
    }

    fn workers(&self, readers: usize, writers: usize) -> Vec<(Role, PgWorker)> {
        let worker = |role| {
            let w = PgWorker {
                url: self.url.clone(),
                client: None,
            };
            (role, w)
        };
        (0..writers)
            .map(|_| worker(Role::Writer))
            .chain((0..readers).map(|_| worker(Role::Reader)))
            .collect()
    }

    /// Pake's last log lines, for a row that did not recover.
    fn pake_log_tail(&self) -> String {
        let log = self.pake.peer.log();
        let lines: Vec<&str> = log.lines().rev().take(3).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

/// A tokio-postgres client through Pake, reconnecting when its session ended.
pub struct PgWorker {
    url: String,
    client: Option<tokio_postgres::Client>,
}

impl Worker for PgWorker {
    async fn run(&mut self, op: super::ledger::Op) -> Result<(), String> {
        let client = match self.client.take() {
            Some(c) if !c.is_closed() => c,
            _ => login(&self.url).await?,
        };
        let sql = match op {
            super::ledger::Op::Write(id) => format!("INSERT INTO chaos_writes (id) VALUES ({id})"),
            super::ledger::Op::Read => "SELECT max(id) FROM chaos_writes".into(),
        };
        let result = client
            .simple_query(&sql)
            .await
            .map(drop)
            .map_err(|e| describe(&e));
        // a session whose server died is ended by Pake (08006): the next op reconnects
        if !client.is_closed() {
            self.client = Some(client);
        }
        result
    }

    fn abandon(&mut self) {
        self.client = None;
    }
}

/// Connect and log in through Pake; the connection is driven by its own task.
async fn login(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| describe(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// kill -9 the primary's postmaster, keep it down, restart it on the same port and data dir.
pub async fn primary_kill(ctx: Ctx) -> Result<Outcome, BenchError> {
    let plan = &ctx.plan;
    let mut world = World::start(&ctx, false).await?;
    let load = Load::start(world.workers(0, plan.clients), plan.pace());
    tokio::time::sleep(secs(plan.steady_secs)).await;
    let fault = load.ledger.now();
    tokio::task::block_in_place(|| world.lab.primary.kill());
    tokio::time::sleep(secs(plan.down_secs)).await;
    let restart = load.ledger.now();
    tokio::task::block_in_place(|| {
        world
            .lab
            .primary
            .restart_after_kill(Duration::from_secs(30))
    })?;
    let back = load.ledger.now();
    let mut notes = vec![format!(
        "primary down {:.1} s, restart (crash recovery) {:.1} s",
        (back - fault).as_secs_f64(),
        (back - restart).as_secs_f64()
    )];
    let summary = until_recovered(load, plan, fault, back, &mut notes).await;
    match summary.recovery {
        Some(r) if r > back - fault => notes.push(format!(
            "first write {:.2} s after Postgres accepted connections again",
            (r - (back - fault)).as_secs_f64()
        )),
        Some(_) => {}
        None => notes.push(format!("Pake log: {}", world.pake_log_tail())),
    }
    let present = world.present().await?;
    Ok(Outcome {
        verdict: Verdict::of(&summary, &present),
        summary,
        notes,
    })
}

/// kill -9 the primary under write load and promote the streaming replica, as a failover
/// manager would. Replication is synchronous, so every acknowledged write is on the replica
/// and none may be lost; writes must move to the promoted replica.
pub async fn replica_promote(ctx: Ctx) -> Result<Outcome, BenchError> {
    let plan = &ctx.plan;
    let sync = ["synchronous_standby_names = '*'"];
    let mut world = World::start_with(&ctx, true, &sync).await?;
    let load = Load::start(world.workers(0, plan.clients), plan.pace());
    tokio::time::sleep(secs(plan.steady_secs)).await;
    let fault = load.ledger.now();
    tokio::task::block_in_place(|| world.lab.primary.kill());
    tokio::task::block_in_place(|| world.lab.promote_replica())?;
    let promoted = load.ledger.now();
    let mut notes = vec![format!(
        "replica promoted (pg_promote returned) {:.2} s after the primary was killed",
        (promoted - fault).as_secs_f64()
    )];
    let summary = until_recovered(load, plan, fault, promoted, &mut notes).await;
    match summary.recovery {
        Some(r) => notes.push(format!(
            "first write {:.2} s after the promotion",
            r.saturating_sub(promoted - fault).as_secs_f64()
        )),
        None => notes.push(format!("Pake log: {}", world.pake_log_tail())),
    }
    let replica_url = world
        .lab
        .replica_url("postgres")
        .ok_or_else(|| BenchError::Client("the lab has no replica".into()))?;
    let present = world.present_on(&replica_url).await?;
    Ok(Outcome {
        verdict: Verdict::of(&summary, &present),
        summary,
        notes,
    })
}

/// kill -9 the replica under reads and writes; it stays down. Reads must move to the primary.
pub async fn replica_kill(ctx: Ctx) -> Result<Outcome, BenchError> {
    let plan = &ctx.plan;
    let mut world = World::start(&ctx, true).await?;
    let readers = (plan.clients / 2).max(1);
    let writers = plan.clients.saturating_sub(readers).max(1);
    let load = Load::start(world.workers(readers, writers), plan.pace());
    tokio::time::sleep(secs(plan.steady_secs)).await;
    let before = routed(world.pake.admin).await?;
    let fault = load.ledger.now();
    tokio::task::block_in_place(|| {
        if let Some(r) = world.lab.replica.as_mut() {
            r.kill();
        }
    });
    let mut notes = vec![format!(
        "{readers} readers, {writers} writers; before the kill {:.0}% of statements went to the replica",
        share(before.1, before.0 + before.1)
    )];
    let summary = until_recovered(load, plan, fault, fault + GRACE, &mut notes).await;
    let after = routed(world.pake.admin).await?;
    let (primary, replica) = (after.0 - before.0, after.1 - before.1);
    notes.push(format!(
        "after the kill: {primary:.0} statements to the primary, {replica:.0} to the replica"
    ));
    if summary.recovery.is_none() {
        notes.push(format!("Pake log: {}", world.pake_log_tail()));
    }
    let present = world.present().await?;
    Ok(Outcome {
        verdict: Verdict::of(&summary, &present),
        summary,
        notes,
    })
}

fn share(part: f64, total: f64) -> f64 {
    if total > 0.0 {
        100.0 * part / total
    } else {
        0.0
    }
}
