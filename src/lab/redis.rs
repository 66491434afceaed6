//! Real Redis for tests, benches and load comparisons: a standalone `redis-server`, or a
//! Redis Cluster of N primaries (+ replicas) made with `redis-cli --cluster create`, each
//! node on free ports (client and cluster-bus) in its own temp dir, killed and deleted on
//! drop — also when a test panics, and by the parent-death signal when the process dies.
//!
//! [`RedisLab`] holds a list of [`RedisNode`]s and a [`Topology`]. The Sentinel topology is a
//! primary (node 0), a replica of it (node 1) and three `redis-server --sentinel` processes
//! (quorum 2, a 1 s down-after, a short failover timeout so tests are quick), ready only once
//! every sentinel knows the replica and the two other sentinels: a `SENTINEL FAILOVER` can
//! then be forced at once. Nodes can be killed and restarted on the same port and data dir
//! for chaos tests.
//!
//! With [`RedisOptions::tls`] the data nodes speak TLS only (`--port 0 --tls-port N`, as a
//! managed `rediss://` service does), with certificates from a lab CA made in the temp dir
//! ([`RedisLab::certs`]); replication and the cluster bus use TLS too, and the lab's own
//! queries and `redis-cli --cluster create` go over TLS against that CA.

use super::certs::Certs;
use super::process::{command, free_port, hand_over, spawn_server};
use super::LabError;
use crate::redis::resp::{self, Limits};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// What kind of deployment the lab runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Standalone,
    Cluster {
        primaries: usize,
        replicas: usize,
    },
    /// One primary, one replica, three sentinels monitoring them as [`SENTINEL_MASTER`].
    Sentinel,
}

/// The name the lab's sentinels monitor their primary under.
pub const SENTINEL_MASTER: &str = "pake-lab";
/// Sentinels in the Sentinel topology, and how many must agree that the primary is down.
const SENTINELS: usize = 3;
const QUORUM: usize = 2;

/// What to start.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub topology: Topology,
    /// `requirepass` for the default user.
    pub password: Option<String>,
    /// Extra ACL users: `(name, password)` with every permission.
    pub users: Vec<(String, String)>,
    /// Extra `redis.conf` lines.
    pub conf: Vec<String>,
    /// `requirepass` for the sentinels themselves (Sentinel topology).
    pub sentinel_password: Option<String>,
    /// Data nodes on TLS only, with certificates from a fresh lab CA (standalone and
    /// cluster topologies).
    pub tls: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            topology: Topology::Standalone,
            password: None,
            users: Vec::new(),
            conf: Vec::new(),
            sentinel_password: None,
            tls: false,
        }
    }
}

impl RedisOptions {
    /// One primary, one replica, three sentinels.
    pub fn sentinel() -> RedisOptions {
        RedisOptions {
            topology: Topology::Sentinel,
            ..RedisOptions::default()
        }
    }

    pub fn cluster(primaries: usize, replicas: usize) -> RedisOptions {
        RedisOptions {
            topology: Topology::Cluster {
                primaries,
                replicas,
            },
            ..RedisOptions::default()
        }
    }
}

/// One `redis-server` process (a data node, or a sentinel).
pub struct RedisNode {
    pub port: u16,
    pub bus_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    password: Option<String>,
    /// Runs as `redis-server sentinel.conf --sentinel`.
    sentinel: bool,
    /// `port` is a TLS port (no plaintext one): how the lab's own queries connect.
    tls: Option<Arc<rustls::ClientConfig>>,
}

pub struct RedisLab {
    /// Data nodes: the cluster's nodes, or the primary and its replicas.
    pub nodes: Vec<RedisNode>,
    /// Sentinel processes (Sentinel topology only).
    pub sentinels: Vec<RedisNode>,
    pub topology: Topology,
    pub password: Option<String>,
    /// The lab CA and the nodes' certificate (valid for localhost and 127.0.0.1), when the
    /// nodes speak TLS.
    pub certs: Option<Certs>,
    // dropped last: the nodes stop first
    _dir: TempDir,
}

/// Path of a Redis program (`redis-server`, `redis-cli`, `redis-benchmark`).
pub fn bin(name: &str) -> Result<PathBuf, LabError> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.exists())
        })
        .ok_or_else(|| LabError::Missing(format!("{name}; install redis-server and redis-tools")))
}

impl RedisLab {
    pub fn start(opts: RedisOptions) -> Result<RedisLab, LabError> {
        let dir = tempfile::Builder::new()
            .prefix("pake-lab-redis-")
            .tempdir()?;
        hand_over(dir.path())?;
        if opts.tls && opts.topology == Topology::Sentinel {
            return Err(LabError::Missing(
                "TLS for the Sentinel topology (the lab runs TLS standalone or cluster)".into(),
            ));
        }
        let certs = opts.tls.then(Certs::generate).transpose()?;
        let tls = certs.as_ref().map(client_tls).transpose()?;
        let count = match opts.topology {
            Topology::Standalone => 1,
            Topology::Cluster {
                primaries,
                replicas,
            } => primaries * (1 + replicas),
            Topology::Sentinel => 2,
        };
        let mut nodes: Vec<RedisNode> = Vec::with_capacity(count);
        for i in 0..count {
            let mut node = RedisNode::new(dir.path().join(format!("node{i}")), &opts, false)?;
            node.tls = tls.clone();
            let mut node_opts = opts.clone();
            if let (Topology::Sentinel, Some(primary)) = (opts.topology, nodes.first()) {
                node_opts
                    .conf
                    .push(format!("replicaof 127.0.0.1 {}", primary.port));
            }
            node.configure(&node_opts, certs.as_ref())?;
            node.start_on_free_ports()?;
            nodes.push(node);
        }
        let mut lab = RedisLab {
            nodes,
            sentinels: Vec::new(),
            topology: opts.topology,
            password: opts.password.clone(),
            certs,
            _dir: dir,
        };
        match opts.topology {
            Topology::Cluster { replicas, .. } => lab.create_cluster(replicas)?,
            Topology::Sentinel => lab.start_sentinels(&opts)?,
            Topology::Standalone => {}
        }
        Ok(lab)
    }

    /// Start the sentinels once the replica has synced, and wait until each of them knows
    /// the replica and the other sentinels (so a failover can be forced right away).
    fn start_sentinels(&mut self, opts: &RedisOptions) -> Result<(), LabError> {
        self.wait_replicas_synced(Duration::from_secs(30))?;
        let primary = self.nodes[0].port;
        let root = self.nodes[0]
            .dir
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        for i in 0..SENTINELS {
            let mut s = RedisNode::new(root.join(format!("sentinel{i}")), opts, true)?;
            s.configure_sentinel(primary, opts)?;
            s.start_on_free_ports()?;
            self.sentinels.push(s);
        }
        self.wait_sentinels_ready(Duration::from_secs(30))
    }

    fn wait_sentinels_ready(&self, limit: Duration) -> Result<(), LabError> {
        let started = Instant::now();
        let others = (SENTINELS - 1).to_string();
        loop {
            let ready = self.sentinels.iter().all(|s| {
                s.query(&["SENTINEL", "MASTER", SENTINEL_MASTER])
                    .is_ok_and(|info| {
                        let f = fields(&info);
                        f.get("num-other-sentinels") == Some(&others.as_str())
                            && f.get("num-slaves") == Some(&"1")
                    })
            });
            if ready {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(LabError::Failed {
                    what: "sentinels did not discover each other and the replica".into(),
                    output: self
                        .sentinels
                        .iter()
                        .map(RedisNode::sentinel_log)
                        .collect::<Vec<_>>()
                        .join("\n"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `host:port` of every sentinel (Sentinel topology).
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The name the sentinels monitor the primary under.
    pub fn master_name(&self) -> &'static str {
        SENTINEL_MASTER
    }

    /// The node the running sentinels name as primary, once they all agree.
    pub fn current_primary(&self) -> Option<usize> {
        let ports: Vec<String> = self
            .sentinels
            .iter()
            .filter(|s| s.is_running())
            .filter_map(|s| {
                s.query(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER])
                    .ok()
                    .and_then(|r| r.lines().nth(1).map(String::from))
            })
            .collect();
        let first = ports.first()?;
        if ports.iter().any(|p| p != first) {
            return None;
        }
        self.nodes.iter().position(|n| n.port.to_string() == *first)
    }

    /// Force a failover with `SENTINEL FAILOVER` (retried while the sentinels say no replica
    /// is ready yet, or a failover is still in progress), then [`RedisLab::wait_switched`].
    pub fn failover(&self, limit: Duration) -> Result<usize, LabError> {
        let started = Instant::now();
        let old = self.request_failover(limit)?;
        self.wait_switched(old, limit.saturating_sub(started.elapsed()))
    }

    /// Send `SENTINEL FAILOVER` (retried as [`RedisLab::failover`] does) and return at once
    /// with the primary before it, to watch the switch separately.
    pub fn request_failover(&self, limit: Duration) -> Result<Option<usize>, LabError> {
        let started = Instant::now();
        let old = self.current_primary();
        let sentinel = self
            .sentinels
            .iter()
            .find(|s| s.is_running())
            .ok_or_else(|| LabError::Missing("a running sentinel".into()))?;
        loop {
            match sentinel.query(&["SENTINEL", "FAILOVER", SENTINEL_MASTER]) {
                Ok(_) => break,
                Err(e) if started.elapsed() > limit => {
                    return Err(LabError::Failed {
                        what: format!("SENTINEL FAILOVER ({e})"),
                        output: sentinel.sentinel_log(),
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        Ok(old)
    }

    /// Wait until every running sentinel names a primary other than `old` and that node
    /// reports `role:master` (after [`RedisLab::failover`], or after killing the primary);
    /// the new primary's index.
    pub fn wait_switched(&self, old: Option<usize>, limit: Duration) -> Result<usize, LabError> {
        let started = Instant::now();
        loop {
            if let Some(new) = self.current_primary().filter(|n| Some(*n) != old) {
                let promoted = self.nodes[new]
                    .query(&["ROLE"])
                    .is_ok_and(|r| r.starts_with("master"));
                if promoted {
                    return Ok(new);
                }
            }
            if started.elapsed() > limit {
                return Err(LabError::Failed {
                    what: "the sentinels did not switch to another primary".into(),
                    output: self
                        .sentinels
                        .iter()
                        .find(|s| s.is_running())
                        .map(RedisNode::sentinel_log)
                        .unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill a sentinel outright (SIGKILL).
    pub fn kill_sentinel(&mut self, i: usize) {
        if let Some(s) = self.sentinels.get_mut(i) {
            s.kill();
        }
    }

    fn create_cluster(&self, replicas: usize) -> Result<(), LabError> {
        let mut cmd = std::process::Command::new(bin("redis-cli")?);
        cmd.arg("--cluster").arg("create");
        for n in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port));
        }
        cmd.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        if let Some(pw) = &self.password {
            cmd.env("REDISCLI_AUTH", pw);
        }
        if let Some(certs) = &self.certs {
            cmd.arg("--tls").arg("--cacert").arg(&certs.ca);
        }
        let out = cmd.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            return Err(LabError::Failed {
                what: "redis-cli --cluster create".into(),
                output: String::from_utf8_lossy(&out.stdout).into_owned(),
            });
        }
        self.wait_cluster_ok(Duration::from_secs(30))?;
        self.wait_replicas_synced(Duration::from_secs(30))
    }

    /// Wait until every replica has finished its initial sync (a replica that has not may
    /// refuse to fail over: its data would be too old).
    pub fn wait_replicas_synced(&self, limit: Duration) -> Result<(), LabError> {
        let started = Instant::now();
        loop {
            let synced = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                n.query(&["INFO", "replication"]).is_ok_and(|info| {
                    !info.contains("role:slave") || info.contains("master_link_status:up")
                })
            });
            if synced {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(LabError::Failed {
                    what: "replicas did not sync".into(),
                    output: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until every running node reports `cluster_state:ok` with every slot assigned.
    pub fn wait_cluster_ok(&self, limit: Duration) -> Result<(), LabError> {
        let started = Instant::now();
        loop {
            let ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                n.query(&["CLUSTER", "INFO"]).is_ok_and(|info| {
                    info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                })
            });
            if ok {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(LabError::Failed {
                    what: "cluster did not become ok".into(),
                    output: self.nodes[0]
                        .query(&["CLUSTER", "INFO"])
                        .unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis://[:password@]127.0.0.1:port` of the first node (`rediss://` with TLS).
    pub fn url(&self) -> String {
        self.node_url(0)
    }

    pub fn node_url(&self, i: usize) -> String {
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        let scheme = if self.certs.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{auth}127.0.0.1:{}", self.nodes[i].port)
    }

    /// The lab CA's PEM file, when the nodes speak TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.certs.as_ref().map(|c| c.ca.clone())
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
    }

    pub fn is_sentinel(&self) -> bool {
        self.topology == Topology::Sentinel
    }

    /// Kill a node outright (SIGKILL), like a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.kill();
        }
    }

    /// Start a killed node again on its ports and data dir.
    pub fn restart(&mut self, i: usize) -> Result<(), LabError> {
        match self.nodes.get_mut(i) {
            Some(n) => n.start(),
            None => Err(LabError::Missing(format!("node {i}"))),
        }
    }
}

/// A `SENTINEL MASTER` / `SENTINEL REPLICAS` entry (name and value on alternate lines of
/// [`RedisNode::query`]'s text) as a map.
fn fields(text: &str) -> std::collections::HashMap<&str, &str> {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .filter_map(|c| Some((c[0], *c.get(1)?)))
        .collect()
}

impl RedisNode {
    fn new(dir: PathBuf, opts: &RedisOptions, sentinel: bool) -> Result<RedisNode, LabError> {
        std::fs::create_dir_all(&dir)?;
        Ok(RedisNode {
            port: 0,
            bus_port: 0,
            dir,
            child: None,
            // sentinels log in to the data nodes with auth-pass; their own password is apart
            password: if sentinel {
                opts.sentinel_password.clone()
            } else {
                opts.password.clone()
            },
            sentinel,
            tls: None,
        })
    }

    fn configure_sentinel(&self, primary: u16, opts: &RedisOptions) -> Result<(), LabError> {
        let m = SENTINEL_MASTER;
        let mut conf = format!(
            "bind 127.0.0.1\nprotected-mode no\ndaemonize no\nloglevel notice\n\
             logfile sentinel.log\ndir .\nsentinel resolve-hostnames no\n\
             sentinel monitor {m} 127.0.0.1 {primary} {QUORUM}\n\
             sentinel down-after-milliseconds {m} 1000\n\
             sentinel failover-timeout {m} 5000\nsentinel parallel-syncs {m} 1\n"
        );
        if let Some(pw) = &opts.password {
            conf.push_str(&format!("sentinel auth-pass {m} {pw}\n"));
        }
        if let Some(pw) = &opts.sentinel_password {
            // the sentinels log in to each other with it too
            conf.push_str(&format!("requirepass {pw}\nsentinel sentinel-pass {pw}\n"));
        }
        // the sentinel rewrites its own file: it must be able to write it
        std::fs::write(self.dir.join("sentinel.conf"), conf)?;
        hand_over(&self.dir)?;
        Ok(())
    }

    fn sentinel_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sentinel.log")).unwrap_or_default()
    }

    fn configure(&self, opts: &RedisOptions, certs: Option<&Certs>) -> Result<(), LabError> {
        let mut conf = String::from(
            "bind 127.0.0.1\nprotected-mode no\nsave \"\"\nappendonly no\n\
             daemonize no\nloglevel warning\nlogfile redis.log\n",
        );
        if let Some(pw) = &opts.password {
            conf.push_str(&format!("requirepass {pw}\nmasterauth {pw}\n"));
        }
        for (user, pw) in &opts.users {
            conf.push_str(&format!("user {user} on >{pw} ~* &* +@all\n"));
        }
        if matches!(opts.topology, Topology::Cluster { .. }) {
            conf.push_str(
                "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\n",
            );
        }
        if let Some(c) = certs {
            // clients need no certificate (the cluster bus always asks for one: nodes present
            // the lab certificate); replicas and the cluster bus
            // (whose port is announced as the TLS one) speak TLS as well
            conf.push_str(&format!(
                "tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients no\ntls-replication yes\n",
                c.cert.display(),
                c.key.display(),
                c.ca.display()
            ));
            if matches!(opts.topology, Topology::Cluster { .. }) {
                conf.push_str("tls-cluster yes\n");
            }
        }
        for line in &opts.conf {
            conf.push_str(line);
            conf.push('\n');
        }
        std::fs::write(self.dir.join("redis.conf"), conf)?;
        hand_over(&self.dir)?;
        Ok(())
    }

    fn start_on_free_ports(&mut self) -> Result<(), LabError> {
        let mut last = None;
        for _ in 0..5 {
            self.port = free_port()?;
            self.bus_port = free_port()?;
            match self.start() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| LabError::Missing("a free port".into())))
    }

    /// Start (or restart) on this node's ports; ready when it answers PING.
    pub fn start(&mut self) -> Result<(), LabError> {
        if self.child.is_some() {
            return Ok(());
        }
        let mut cmd = command(&bin("redis-server")?);
        cmd.current_dir(&self.dir);
        if self.sentinel {
            cmd.args(["sentinel.conf", "--sentinel"]);
        } else {
            cmd.arg("redis.conf")
                .args(["--cluster-port", &self.bus_port.to_string()]);
        }
        let port = self.port.to_string();
        match self.tls {
            Some(_) => cmd.args(["--port", "0", "--tls-port", &port]),
            None => cmd.args(["--port", &port]),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(spawn_server(cmd)?);
        let started = Instant::now();
        loop {
            if let Some(status) = super::process::exited(&mut self.child) {
                return Err(LabError::Failed {
                    what: format!("redis-server exited ({status})"),
                    output: self.log(),
                });
            }
            if self.query(&["PING"]).is_ok_and(|r| r == "PONG") {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(20) {
                let output = self.log();
                // not left running: a retry on other ports must start a process of its own
                self.kill();
                return Err(LabError::Failed {
                    what: "redis-server did not answer PING".into(),
                    output,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's process id while it runs (CPU accounting in load tests).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        if self.sentinel {
            return self.sentinel_log();
        }
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Run one command with a tiny blocking RESP client; the reply as text (arrays joined
    /// by newlines, errors as `Err`).
    pub fn query(&self, args: &[&str]) -> Result<String, LabError> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        match &self.tls {
            None => self.query_on(tcp, args),
            Some(config) => {
                let name =
                    rustls::pki_types::ServerName::from(std::net::IpAddr::from([127, 0, 0, 1]));
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| LabError::Client(format!("TLS: {e}")))?;
                self.query_on(rustls::StreamOwned::new(conn, tcp), args)
            }
        }
    }

    fn query_on(&self, mut s: impl Read + Write, args: &[&str]) -> Result<String, LabError> {
        let mut out = Vec::new();
        if let Some(pw) = &self.password {
            out.extend_from_slice(&crate::redis::backend::link::command(&[
                b"AUTH",
                pw.as_bytes(),
            ]));
        }
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        out.extend_from_slice(&crate::redis::backend::link::command(&args));
        s.write_all(&out)?;
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        let want = if self.password.is_some() { 2 } else { 1 };
        let mut chunk = [0u8; 8192];
        while frames.len() < want {
            match resp::scan(&buf, 0, &Limits::backend()) {
                Ok(Some(n)) => {
                    frames.push(buf.drain(..n).collect::<Vec<u8>>());
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(LabError::Client(e.to_string())),
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(LabError::Client("connection closed".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let last = frames.pop().unwrap_or_default();
        reply_text(&last)
    }
}

/// A blocking rustls client trusting only the lab CA (the lab's own queries).
fn client_tls(certs: &Certs) -> Result<Arc<rustls::ClientConfig>, LabError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let bad = |e: &dyn std::fmt::Display| LabError::Client(format!("lab CA: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&certs.ca).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A raw reply as text, for lab checks.
fn reply_text(frame: &[u8]) -> Result<String, LabError> {
    let decoded = redis_protocol::resp2::decode::decode(frame)
        .map_err(|e| LabError::Client(e.to_string()))?
        .map(|(f, _)| f);
    use redis_protocol::resp2::types::OwnedFrame as F;
    fn text(f: &F) -> String {
        match f {
            F::SimpleString(s) | F::BulkString(s) => String::from_utf8_lossy(s).into_owned(),
            F::Integer(i) => i.to_string(),
            F::Array(items) => items.iter().map(text).collect::<Vec<_>>().join("\n"),
            F::Null => String::new(),
            F::Error(e) => e.to_string(),
        }
    }
    match decoded {
        Some(F::Error(e)) => Err(LabError::Client(e.to_string())),
        Some(f) => Ok(text(&f)),
        None => Err(LabError::Client("incomplete reply".into())),
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
    }
}
