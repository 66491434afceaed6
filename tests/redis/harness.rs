//! Shared set-up for the Redis integration tests: a lab Redis (standalone or cluster),
//! Pake in front of it in this test's runtime, and a small RESP client that sends exactly
//! what a test says. Each test owns its servers.

use bytes::{Buf, BytesMut};
use pake::app::Running;
use pake::config::{Config, Dur};
use pake::lab::{RedisLab, RedisOptions};
use pake::pg::stream::ServerStream;
use pake::redis::config::RedisConfig;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standalone,
    Cluster,
}

pub struct Env {
    pub lab: RedisLab,
    pub pake: Running,
}

pub async fn lab(opts: RedisOptions) -> RedisLab {
    if let Ok(level) = std::env::var("PAKE_TEST_LOG") {
        pake::obs::logging::init(pake::config::LogFormat::Text, &level);
    }
    tokio::task::spawn_blocking(move || RedisLab::start(opts))
        .await
        .expect("lab thread")
        .expect("redis lab start")
}

pub fn options(mode: Mode) -> RedisOptions {
    match mode {
        Mode::Standalone => RedisOptions::default(),
        Mode::Cluster => RedisOptions::cluster(3, 0),
    }
}

/// The test defaults: fast heartbeats, short timeouts.
pub fn redis_config(url: String) -> RedisConfig {
    RedisConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        url,
        pool_size: 2,
        // serve on the test's runtime: nothing outlives the test
        threads: 0,
        command_timeout: Dur::secs(5),
        connect_timeout: Dur::secs(2),
        tracking_heartbeat: Dur::millis(100),
        tracking_max_lag: Dur::secs(1),
        ..RedisConfig::default()
    }
}

/// A Pake with the Redis side only (Postgres listener on a free port, no admin).
fn redis_only(rc: RedisConfig) -> Config {
    Config {
        general: pake::config::General {
            pg_listen: "127.0.0.1:0".parse().expect("addr"),
            admin_listen: None,
            ..Default::default()
        },
        redis: Some(rc),
        ..Config::default()
    }
}

pub async fn start_pake(rc: RedisConfig) -> Running {
    let config = redis_only(rc);
    config.validate().expect("valid config");
    pake::app::start(config).await.expect("pake start")
}

/// Try to start Pake with `rc`: the refusal (config or startup) as text, or the running
/// Pake when it did start.
pub async fn try_start(rc: RedisConfig) -> Result<Running, String> {
    let config = redis_only(rc);
    config.validate().map_err(|e| format!("{e:?}"))?;
    pake::app::start(config).await.map_err(|e| format!("{e:#}"))
}

impl Env {
    pub async fn start(mode: Mode) -> Env {
        Env::with(options(mode), |_| {}).await
    }

    pub async fn with(opts: RedisOptions, tweak: impl FnOnce(&mut RedisConfig)) -> Env {
        let lab = lab(opts).await;
        let mut rc = redis_config(lab.url());
        tweak(&mut rc);
        let pake = start_pake(rc).await;
        let env = Env { lab, pake };
        env.wait_armed(&env.pake).await;
        env
    }

    /// Pake in front of a Sentinel lab (primary, replica, three sentinels), finding the
    /// primary through the sentinels only: the URL's port is a dead one.
    pub async fn sentinel(tweak: impl FnOnce(&mut RedisConfig)) -> Env {
        Env::sentinel_with(RedisOptions::sentinel(), tweak).await
    }

    pub async fn sentinel_with(opts: RedisOptions, tweak: impl FnOnce(&mut RedisConfig)) -> Env {
        let auth = opts
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        let lab = lab(opts).await;
        let mut rc = redis_config(format!("redis://{auth}127.0.0.1:{}", dead_port()));
        rc.sentinels = lab.sentinel_addrs();
        rc.sentinel_master = Some(lab.master_name().to_string());
        rc.sentinel_check_interval = Dur::millis(500);
        tweak(&mut rc);
        let pake = start_pake(rc).await;
        let env = Env { lab, pake };
        env.wait_armed(&env.pake).await;
        env
    }

    pub fn addr(&self) -> SocketAddr {
        self.pake.redis_addr.expect("redis listener")
    }

    pub async fn conn(&self) -> Conn {
        Conn::connect(self.addr()).await
    }

    /// A connection straight to Redis (the node serving `key`'s slot in a cluster), over
    /// TLS when the lab's nodes speak it.
    pub async fn direct(&self, key: &str) -> Conn {
        let addr = ([127, 0, 0, 1], self.node_port_for(key)).into();
        match self.lab.ca_file() {
            Some(ca) => Conn::connect_tls(addr, &ca).await,
            None => Conn::connect(addr).await,
        }
    }

    /// A key (`{prefix}…`-free) served by each primary of the lab, in node order.
    pub fn key_per_node(&self, prefix: &str) -> Vec<String> {
        let mut keys = vec![String::new(); self.lab.nodes.len()];
        for i in 0.. {
            let key = format!("{prefix}:{i}");
            let port = self.node_port_for(&key);
            if let Some(n) = self.lab.nodes.iter().position(|n| n.port == port) {
                if keys[n].is_empty() {
                    keys[n] = key;
                }
            }
            if keys.iter().all(|k| !k.is_empty()) {
                return keys;
            }
        }
        unreachable!()
    }

    pub fn node_port_for(&self, key: &str) -> u16 {
        if self.lab.is_sentinel() {
            let primary = self.lab.current_primary().unwrap_or(0);
            return self.lab.nodes[primary].port;
        }
        if !self.lab.is_cluster() {
            return self.lab.nodes[0].port;
        }
        let slot = pake::redis::commands::slot(key.as_bytes());
        for n in self.lab.nodes.iter().filter(|n| n.is_running()) {
            let owner = n
                .query(&["CLUSTER", "NODES"])
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("myself") && l.contains("master") && owns(l, slot));
            if owner {
                return n.port;
            }
        }
        self.lab.nodes[0].port
    }

    /// Wait until every primary's tracking stream is armed.
    pub async fn wait_armed(&self, pake: &Running) {
        let want = if self.lab.is_cluster() { 3 } else { 1 };
        let ok = eventually(Duration::from_secs(15), || async {
            metric(pake, "pake_redis_tracking_connections") >= want as f64
        })
        .await;
        assert!(ok, "tracking never armed");
    }
}

/// A port nothing listens on.
pub fn dead_port() -> u16 {
    pake::lab::process::free_port().expect("free port")
}

fn owns(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|r| {
        let mut it = r.split('-');
        match (it.next().and_then(|a| a.parse::<u16>().ok()), it.next()) {
            (Some(a), Some(b)) => b.parse::<u16>().is_ok_and(|b| (a..=b).contains(&slot)),
            (Some(a), None) => a == slot,
            _ => false,
        }
    })
}

/// The value of a metric (summed over its label sets) from Pake's registry.
pub fn metric(pake: &Running, name: &str) -> f64 {
    pake.proxy
        .metrics
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

pub use pake::lab::eventually;

/// A reply, simplified for assertions.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Int(i64),
    Nil,
    Err(String),
    Arr(Vec<Val>),
    Map(Vec<(Val, Val)>),
    Push(Vec<Val>),
    Other(String),
}

impl Val {
    pub fn s(v: &str) -> Val {
        Val::Str(v.into())
    }

    pub fn is_err(&self) -> bool {
        matches!(self, Val::Err(_))
    }

    pub fn err_text(&self) -> String {
        match self {
            Val::Err(e) => e.clone(),
            other => format!("not an error: {other:?}"),
        }
    }
}

fn from_resp3(f: redis_protocol::resp3::types::OwnedFrame) -> Val {
    use redis_protocol::resp3::types::OwnedFrame as F;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match f {
        F::BlobString { data, .. } | F::SimpleString { data, .. } => Val::Str(text(&data)),
        F::VerbatimString { data, .. } | F::BigNumber { data, .. } => Val::Str(text(&data)),
        F::SimpleError { data, .. } => Val::Err(data),
        F::BlobError { data, .. } => Val::Err(text(&data)),
        F::Number { data, .. } => Val::Int(data),
        F::Boolean { data, .. } => Val::Int(i64::from(data)),
        F::Double { data, .. } => Val::Str(data.to_string()),
        F::Null => Val::Nil,
        F::Array { data, .. } => Val::Arr(data.into_iter().map(from_resp3).collect()),
        F::Set { data, .. } => Val::Arr(data.into_iter().map(from_resp3).collect()),
        F::Push { data, .. } => Val::Push(data.into_iter().map(from_resp3).collect()),
        F::Map { data, .. } => Val::Map(
            data.into_iter()
                .map(|(k, v)| (from_resp3(k), from_resp3(v)))
                .collect(),
        ),
        other => Val::Other(format!("{other:?}")),
    }
}

/// A hand-driven RESP client, over plain TCP or TLS.
pub struct Conn {
    pub stream: ServerStream,
    buf: BytesMut,
}

pub fn encode(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    pake::redis::backend::link::command(&args).to_vec()
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream: ServerStream::Plain(stream),
            buf: BytesMut::new(),
        }
    }

    /// Connect with TLS, trusting only the CA in `ca` and checking the name 127.0.0.1.
    pub async fn connect_tls(addr: SocketAddr, ca: &std::path::Path) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let name = rustls::pki_types::ServerName::from(addr.ip());
        let tls = tls_connector(ca)
            .connect(name, stream)
            .await
            .expect("TLS handshake");
        Conn {
            stream: ServerStream::Tls(Box::new(tls)),
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
        self.stream.flush().await.expect("flush");
    }

    pub async fn cmd(&mut self, args: &[&str]) -> Val {
        self.send(&encode(args)).await;
        self.read().await.expect("a reply")
    }

    /// Read one frame; `None` when the connection is closed or nothing comes in 10 s.
    pub async fn read(&mut self) -> Option<Val> {
        self.read_within(Duration::from_secs(10)).await
    }

    pub async fn read_within(&mut self, limit: Duration) -> Option<Val> {
        self.frame_within(limit).await.map(|f| decode(&f))
    }

    /// One frame's bytes as they came, for tests comparing replies byte for byte.
    pub async fn frame_within(&mut self, limit: Duration) -> Option<Vec<u8>> {
        loop {
            let limits = pake::redis::resp::Limits::backend();
            if let Ok(Some(n)) = pake::redis::resp::scan(&self.buf, 0, &limits) {
                let frame = self.buf[..n].to_vec();
                self.buf.advance(n);
                return Some(frame);
            }
            let n = tokio::time::timeout(limit, self.stream.read_buf(&mut self.buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// Has the other end closed the connection (after draining what is left)?
    pub async fn closed(&mut self) -> bool {
        while self.read().await.is_some() {}
        true
    }
}

/// A rustls client trusting only the CA in `ca`.
pub fn tls_connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

pub fn decode(frame: &[u8]) -> Val {
    if let Ok(Some((f, _))) = redis_protocol::resp3::decode::complete::decode(frame) {
        return from_resp3(f);
    }
    match redis_protocol::resp2::decode::decode(frame) {
        Ok(Some((f, _))) => from_resp3(f.into_resp3()),
        other => Val::Other(format!("undecodable {frame:?}: {other:?}")),
    }
}

/// Run a Redis client program (redis-cli, redis-benchmark) to completion.
pub async fn run(
    program: &str,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
) -> (bool, String, String) {
    let path = pake::lab::redis::bin(program).expect("redis tools");
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(&args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn");
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(&data).await.expect("stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("client finished in time")
        .expect("client output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// redis-cli against Pake, one command; stdout trimmed.
pub async fn cli(env: &Env, extra: &[&str], args: &[&str]) -> String {
    let mut a = vec!["-p".to_string(), env.addr().port().to_string()];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(args.iter().map(|s| s.to_string()));
    let (_, out, err) = run("redis-cli", a, None).await;
    format!("{}{}", out.trim(), err.trim())
}
