//! The Redis scenarios: lab Redis, `pake serve --redis …` in front (L1 on, as deployed), and
//! clients writing keys with unique ids (`SET chaos:ID ID`) through Pake; a write is
//! acknowledged when Pake answers `+OK`. After recovery every key written is looked up on
//! the servers directly (by slot in a cluster), not through Pake and its cache.
//!
//! Redis replicates asynchronously: a write the old primary acknowledged but had not yet
//! sent to its replica is gone after a failover. Such losses are counted and reported, and
//! do not fail the run (the scenarios are `loss_allowed`).
//!
//! A new topology is one function: start its lab, then `writes_through_pake` with the
//! fault as a closure (see [`sentinel_failover`]).

use super::ledger::Op;
use super::load::{Load, Role, Worker};
use super::{blocking, secs, until_recovered, Ctx, Outcome, Verdict, GRACE};
use crate::bench::peers::pake::{Pake, RedisSide};
use crate::bench::redis_load::SlotMap;
use crate::bench::resp::{Reply, Resp};
use crate::bench::BenchError;
use crate::lab::{RedisLab, RedisOptions};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// kill -9 one primary of a 3-primary cluster with one replica each; it stays down, and
/// its replica is promoted after `cluster-node-timeout` (2 s in the lab) and an election.
pub async fn cluster_primary_kill(ctx: Ctx) -> Result<Outcome, BenchError> {
    let lab = blocking(|| Ok(RedisLab::start(RedisOptions::cluster(3, 1))?)).await?;
    writes_through_pake(&ctx, lab, |lab| {
        // the last primary: not the node Pake was given as its seed
        let victim = (0..lab.nodes.len())
            .rev()
            .find(|&i| is_primary(lab, i))
            .ok_or_else(|| BenchError::Client("no primary in the cluster".into()))?;
        let port = lab.nodes[victim].port;
        let successor = lab
            .nodes
            .iter()
            .find(|n| primary_of(n) == Some(port))
            .map(|n| n.port);
        lab.kill(victim);
        Ok(Fault {
            note: format!("killed primary 127.0.0.1:{port}"),
            successor,
        })
    })
    .await
}

/// What a fault did, for the notes and the watch.
struct Fault {
    note: String,
    /// The node expected to become primary: watched, so the report can tell the server's
    /// failover time from the time Pake took to follow it.
    successor: Option<u16>,
}

/// `SENTINEL FAILOVER` under write load: the sentinels promote the replica and demote the
/// old primary; Pake, given only the sentinels, must follow `+switch-master` by itself.
pub async fn sentinel_failover(ctx: Ctx) -> Result<Outcome, BenchError> {
    let lab = blocking(|| Ok(RedisLab::start(RedisOptions::sentinel())?)).await?;
    let limit = secs(ctx.plan.limit_secs);
    writes_through_pake(&ctx, lab, move |lab| {
        let old = lab
            .request_failover(limit)?
            .ok_or_else(|| BenchError::Client("the sentinels do not agree on a primary".into()))?;
        let successor = (0..lab.nodes.len())
            .find(|&i| i != old && lab.nodes[i].is_running())
            .map(|i| lab.nodes[i].port);
        Ok(Fault {
            note: format!(
                "SENTINEL FAILOVER {} (primary was 127.0.0.1:{})",
                lab.master_name(),
                lab.nodes[old].port
            ),
            successor,
        })
    })
    .await
}

/// Pake in front of `lab`, writers for the steady time, `fault` (blocking; returns a note),
/// load until every client is served again and the settle time, then acked vs found.
async fn writes_through_pake(
    ctx: &Ctx,
    lab: RedisLab,
    fault: impl FnOnce(&mut RedisLab) -> Result<Fault, BenchError>,
) -> Result<Outcome, BenchError> {
    let plan = &ctx.plan;
    let side = RedisSide {
        url: lab.url(),
        cluster: lab.is_cluster(),
        l1: true,
        pool_size: 4,
        sentinel: lab
            .is_sentinel()
            .then(|| (lab.sentinel_addrs(), lab.master_name().to_string())),
        threads: 0,
    };
    let bin = ctx.bin.clone();
    let pake = blocking(move || bin.start_redis(&side, 0)).await?;
    let mut world = World { pake, lab };
    let workers = (0..plan.clients)
        .map(|_| (Role::Writer, RedisWorker::new(world.pake.addr)))
        .collect();
    let load = Load::start(workers, plan.pace());
    tokio::time::sleep(secs(plan.steady_secs)).await;
    let fault_at = load.ledger.now();
    let fault = tokio::task::block_in_place(|| fault(&mut world.lab))?;
    let watch = fault.successor.map(|port| {
        let (ledger, limit) = (load.ledger.clone(), secs(plan.limit_secs));
        tokio::spawn(async move { promoted(port, limit).await.then(|| ledger.now()) })
    });
    let mut notes = vec![fault.note];
    let summary = until_recovered(load, plan, fault_at, fault_at + GRACE, &mut notes).await;
    if let (Some(watch), Some(port)) = (watch, fault.successor) {
        match watch.await.ok().flatten() {
            Some(at) => {
                let promoted = at - fault_at;
                let mut note = format!(
                    "replica 127.0.0.1:{port} was primary {:.2} s after the fault",
                    promoted.as_secs_f64()
                );
                if let Some(r) = summary.recovery.filter(|r| *r > promoted) {
                    note.push_str(&format!(
                        ", clients served {:.2} s after that",
                        (r - promoted).as_secs_f64()
                    ));
                }
                notes.push(note);
            }
            None => notes.push(format!("replica 127.0.0.1:{port} was never promoted")),
        }
    }
    if summary.recovery.is_none() {
        let log = world.pake.peer.log();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        notes.push(format!("Pake log: {}", tail.join(" | ")));
    }
    let ids: Vec<u64> = summary
        .acked
        .iter()
        .chain(&summary.unacked)
        .copied()
        .collect();
    let present = present(&world.lab, &ids).await?;
    Ok(Outcome {
        verdict: Verdict::of(&summary, &present),
        summary,
        notes,
    })
}

/// The proxy and the servers of one scenario; Pake stops first.
struct World {
    pake: Pake,
    lab: RedisLab,
}

fn key(id: u64) -> String {
    format!("chaos:{id}")
}

fn is_primary(lab: &RedisLab, i: usize) -> bool {
    lab.nodes[i].is_running()
        && lab.nodes[i]
            .query(&["ROLE"])
            .is_ok_and(|r| r.starts_with("master"))
}

/// The port of the primary `node` replicates from, when it is a replica.
fn primary_of(node: &crate::lab::RedisNode) -> Option<u16> {
    let role = node.query(&["ROLE"]).ok()?;
    let mut lines = role.lines();
    (lines.next() == Some("slave"))
        .then(|| lines.nth(1)?.parse().ok())
        .flatten()
}

/// Poll `ROLE` on 127.0.0.1:`port` until it says master (true) or `limit` passes (false).
async fn promoted(port: u16, limit: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while tokio::time::Instant::now() < deadline {
        if let Ok(mut c) = Resp::connect(addr).await {
            if let Ok(Reply::Array(Some(items))) = c.call(&[b"ROLE"]).await {
                if items.first() == Some(&Reply::Bulk(Some(b"master".to_vec()))) {
                    return true;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// Which of `ids` the servers hold, asked directly: by slot in a cluster (the map read from
/// a node that is up), else on the primary — with Sentinel the one the sentinels name, as
/// a demoted primary says `master` until they convert it, seconds later.
async fn present(lab: &RedisLab, ids: &[u64]) -> Result<HashSet<u64>, BenchError> {
    let primary = tokio::task::block_in_place(|| {
        if lab.is_sentinel() {
            // the sentinels learn of a new primary a moment apart (gossip): until they
            // agree, `current_primary` names none; on a loaded machine that takes seconds
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            loop {
                match lab.current_primary() {
                    Some(p) => break Some(p),
                    None if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(100))
                    }
                    None => break None,
                }
            }
        } else {
            (0..lab.nodes.len()).find(|&i| is_primary(lab, i))
        }
    })
    .ok_or_else(|| BenchError::Client("no primary is up to verify against".into()))?;
    let seed = SocketAddr::from(([127, 0, 0, 1], lab.nodes[primary].port));
    let mut by_node: HashMap<SocketAddr, Vec<u64>> = HashMap::new();
    if lab.is_cluster() {
        let map = SlotMap::discover(seed).await?;
        for &id in ids {
            let node = map.nodes[map.node_of(key(id).as_bytes())];
            by_node.entry(node).or_default().push(id);
        }
    } else {
        by_node.insert(seed, ids.to_vec());
    }
    let mut found = HashSet::new();
    for (node, ids) in by_node {
        let mut conn = Resp::connect(node).await?;
        for batch in ids.chunks(500) {
            for &id in batch {
                conn.push(&[b"EXISTS", key(id).as_bytes()]);
            }
            let replies = conn.round_trip().await?;
            for (&id, reply) in batch.iter().zip(&replies) {
                match reply {
                    Reply::Int(1) => {
                        found.insert(id);
                    }
                    Reply::Int(_) => {}
                    other => {
                        return Err(BenchError::Client(format!(
                            "EXISTS {} on {node}: {other:?}",
                            key(id)
                        )))
                    }
                }
            }
        }
    }
    Ok(found)
}

/// A RESP client through Pake, reconnecting after an I/O error or a timeout.
pub struct RedisWorker {
    addr: SocketAddr,
    conn: Option<Resp>,
}

impl RedisWorker {
    pub fn new(addr: SocketAddr) -> RedisWorker {
        RedisWorker { addr, conn: None }
    }
}

impl Worker for RedisWorker {
    async fn run(&mut self, op: Op) -> Result<(), String> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => Resp::connect(self.addr).await.map_err(|e| e.to_string())?,
        };
        let reply = match op {
            Op::Write(id) => {
                let (k, v) = (key(id), id.to_string());
                conn.call(&[b"SET", k.as_bytes(), v.as_bytes()]).await
            }
            Op::Read => conn.call(&[b"GET", b"chaos:0"]).await,
        };
        // an error reply leaves the connection usable; an I/O error does not
        let reply = reply.map_err(|e| e.to_string())?;
        self.conn = Some(conn);
        match (op, reply) {
            (Op::Write(_), Reply::Simple(s)) if s == "OK" => Ok(()),
            (Op::Read, Reply::Bulk(_)) => Ok(()),
            (_, Reply::Error(e)) => Err(e),
            (_, other) => Err(format!("unexpected reply {other:?}")),
        }
    }

    fn abandon(&mut self) {
        self.conn = None;
    }
}
