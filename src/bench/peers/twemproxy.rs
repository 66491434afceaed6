//! twemproxy (`nutcracker`, the Debian package) in front of one Redis, with as many server
//! connections as Pake's Redis pool. Its stats port is a free port too, so several can run.

use super::{free_addr, which, Peer};
use crate::bench::BenchError;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

pub struct Twemproxy {
    pub peer: Peer,
    pub addr: SocketAddr,
}

pub fn start(redis: SocketAddr, server_connections: usize) -> Result<Twemproxy, BenchError> {
    let bin = which("nutcracker").ok_or_else(|| {
        BenchError::Unavailable("nutcracker is not installed (apt-get install nutcracker)".into())
    })?;
    let dir = Peer::dir("pake-bench-twemproxy-")?;
    let (addr, stats) = (free_addr()?, free_addr()?);
    let yaml = format!(
        "bench:\n  listen: {addr}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  \
         server_connections: {server_connections}\n  auto_eject_hosts: false\n  \
         preconnect: true\n  servers:\n    - {redis}:1\n"
    );
    let conf = dir.path().join("nutcracker.yml");
    std::fs::write(&conf, yaml)?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(&conf)
        .arg("-s")
        .arg(stats.port().to_string())
        .arg("-a")
        .arg("127.0.0.1")
        .arg("-v")
        .arg("4");
    let mut peer = Peer::spawn("twemproxy", cmd, dir)?;
    peer.wait_listening(addr, Duration::from_secs(20))?;
    Ok(Twemproxy { peer, addr })
}
