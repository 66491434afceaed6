//! Lab Redis for the Redis scenarios: one `redis-server`, or a three-primary Redis Cluster
//! made with `redis-cli --cluster create`, on free ports in temp dirs, no persistence.
//! (A stand-in until `pake::lab` has its own Redis lab; same shape, so the swap is small.)

use super::{free_addr, which, Peer};
use crate::bench::resp::{Reply, Resp};
use crate::bench::BenchError;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct RedisLab {
    pub nodes: Vec<(Peer, SocketAddr)>,
}

impl RedisLab {
    /// The address clients (and proxies) are given: the only node, or any cluster node.
    pub fn addr(&self) -> SocketAddr {
        self.nodes[0].1
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    pub fn is_cluster(&self) -> bool {
        self.nodes.len() > 1
    }
}

fn server(cluster: bool) -> Result<(Peer, SocketAddr), BenchError> {
    let bin = which("redis-server").ok_or_else(|| {
        BenchError::Unavailable(
            "redis-server is not installed (apt-get install redis-server)".into(),
        )
    })?;
    let dir = Peer::dir("pake-bench-redis-")?;
    let addr = free_addr()?;
    let mut cmd = Command::new(bin);
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--protected-mode", "no", "--daemonize", "no"])
        .arg("--port")
        .arg(addr.port().to_string())
        .arg("--dir")
        .arg(dir.path());
    if cluster {
        cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"]);
    }
    let mut peer = Peer::spawn("redis-server", cmd, dir)?;
    peer.wait_listening(addr, Duration::from_secs(20))?;
    Ok((peer, addr))
}

/// One standalone Redis.
pub fn standalone() -> Result<RedisLab, BenchError> {
    Ok(RedisLab {
        nodes: vec![server(false)?],
    })
}

/// A three-primary cluster, no replicas, every slot covered.
pub async fn cluster() -> Result<RedisLab, BenchError> {
    let nodes = tokio::task::spawn_blocking(|| {
        let nodes = (0..3)
            .map(|_| server(true))
            .collect::<Result<Vec<_>, _>>()?;
        let cli = which("redis-cli").ok_or_else(|| {
            BenchError::Unavailable(
                "redis-cli is not installed (apt-get install redis-tools)".into(),
            )
        })?;
        let out = Command::new(cli)
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|(_, a)| a.to_string()))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()?;
        if !out.status.success() {
            return Err(BenchError::Peer {
                what: "redis-cli --cluster create".into(),
                output: String::from_utf8_lossy(&out.stdout).into_owned(),
            });
        }
        Ok(nodes)
    })
    .await
    .map_err(|e| BenchError::Client(e.to_string()))??;
    let lab = RedisLab { nodes };
    let started = Instant::now();
    for (_, addr) in &lab.nodes {
        while !cluster_ok(*addr).await {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(BenchError::Client(
                    "the Redis Cluster did not become ok".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(lab)
}

async fn cluster_ok(addr: SocketAddr) -> bool {
    let Ok(mut c) = Resp::connect(addr).await else {
        return false;
    };
    matches!(
        c.call(&[b"CLUSTER", b"INFO"]).await,
        Ok(Reply::Bulk(Some(text))) if String::from_utf8_lossy(&text).contains("cluster_state:ok")
    )
}
