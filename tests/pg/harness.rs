//! Shared set-up for the Postgres integration tests: a lab primary, Pake in front of it in
//! this test's runtime, and clients for both. Each test owns its own servers.

use pake::app::Running;
use pake::config::{Config, PoolMode, QuickStart};
use pake::lab::{PgLab, PgOptions};
use std::time::Duration;

pub struct Env {
    pub lab: PgLab,
    pub pake: Running,
}

#[derive(Clone)]
pub struct Opts {
    pub pool_size: usize,
    pub mode: PoolMode,
    pub lab: PgOptions,
    /// Applied to the config after the quick start flags.
    pub tweak: fn(&mut Config),
    /// Like `tweak`, for changes that need values from the lab (certificates, ports).
    pub tweak_lab: Option<LabTweak>,
}

/// A config change that needs the lab (certificates, ports).
pub type LabTweak = std::sync::Arc<dyn Fn(&mut Config, &PgLab) + Send + Sync>;

impl Default for Opts {
    fn default() -> Self {
        Opts {
            pool_size: 5,
            mode: PoolMode::Transaction,
            lab: PgOptions::default(),
            tweak: |_| {},
            tweak_lab: None,
        }
    }
}

impl Env {
    pub async fn start() -> Env {
        Env::with(Opts::default()).await
    }

    pub async fn with(opts: Opts) -> Env {
        if let Ok(level) = std::env::var("PAKE_TEST_LOG") {
            pake::obs::logging::init(pake::config::LogFormat::Text, &level);
        }
        let lab_opts = opts.lab.clone();
        let lab = tokio::task::spawn_blocking(move || PgLab::start(lab_opts))
            .await
            .expect("lab thread")
            .expect("lab start");
        let pake = start_pake(&lab, &opts).await;
        Env { lab, pake }
    }

    /// URL of Pake for `db`, as the lab's superuser.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            self.lab.user,
            self.lab.password,
            self.pake.pg_addr.port(),
            db
        )
    }

    /// A tokio-postgres client through Pake.
    pub async fn client(&self) -> tokio_postgres::Client {
        pake::lab::postgres::connect(&self.url("postgres"))
            .await
            .expect("connect through pake")
    }

    /// A tokio-postgres client straight to the primary.
    pub async fn direct(&self) -> tokio_postgres::Client {
        self.lab.client("postgres").await.expect("connect direct")
    }

    /// Client backends on the primary other than the asking one.
    pub async fn server_backends(&self) -> i64 {
        let c = self.direct().await;
        c.query_one(
            "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("count backends")
        .get(0)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.pake.admin_addr.expect("admin listener"),
            path
        )
    }
}

pub async fn start_pake(lab: &PgLab, opts: &Opts) -> Running {
    let quick = QuickStart {
        pg_listen: Some("127.0.0.1:0".parse().expect("addr")),
        admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
        pg_primary: Some(lab.url("postgres")),
        pg_replicas: lab.replica_url("postgres").into_iter().collect(),
        pool_size: Some(opts.pool_size),
        pool_mode: Some(opts.mode),
        ..QuickStart::default()
    };
    let mut config = quick.apply(Config::default()).expect("quick start");
    config.pool.query_wait_timeout = pake::config::Dur::secs(30);
    (opts.tweak)(&mut config);
    if let Some(t) = &opts.tweak_lab {
        t(&mut config, lab);
    }
    config.validate().expect("valid config");
    pake::app::start(config).await.expect("pake start")
}

/// Path of a PostgreSQL client program (psql, pgbench) from the lab's binaries.
/// A `guest` user (password `guest`, SCRAM) who is not an admin.
pub fn with_guest(c: &mut Config) {
    c.users.push(pake::config::User {
        name: "guest".into(),
        password: Some("guest".into()),
        server_password: None,
        auth_type: Some(pake::pg::auth::Method::ScramSha256),
        pool_size: None,
        pool_mode: None,
        max_user_connections: 0,
        read_from_replicas: None,
        rate_limit: None,
    });
}

pub fn pg_bin(name: &str) -> std::path::PathBuf {
    pake::lab::postgres::bindir().expect("bindir").join(name)
}

/// An HTTP/1.0 request with an optional Basic-auth user and JSON body.
pub async fn http(
    method: &str,
    url: &str,
    auth: Option<(&str, &str)>,
    body: Option<&str>,
) -> (u16, String) {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect admin");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Fetch an admin HTTP path with a plain TCP request (no HTTP client dependency).
pub async fn http_get(url: &str) -> (u16, String) {
    http("GET", url, None, None).await
}

pub use pake::lab::eventually;

/// A hand-driven protocol client, for sending what real drivers never would.
pub struct Raw {
    pub stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
    /// The ParameterStatus values of the welcome (after `login`).
    pub params: Vec<(String, String)>,
    /// The pid of the welcome's BackendKeyData (after `login`).
    pub pid: i32,
    /// Its secret, for a CancelRequest.
    pub secret: i32,
}

impl Raw {
    pub async fn connect(env: &Env) -> Raw {
        Raw::connect_to(env.pake.pg_addr).await
    }

    /// A connection to any address (Pake, or a lab server directly).
    pub async fn connect_to(addr: std::net::SocketAddr) -> Raw {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        Raw {
            stream,
            buf: bytes::BytesMut::new(),
            params: Vec::new(),
            pid: 0,
            secret: 0,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Log in with SCRAM as `user`; returns the messages of the welcome.
    pub async fn login(env: &Env, user: &str, password: &str, db: &str) -> Result<Raw, String> {
        Raw::login_with(env, user, password, db, &[]).await
    }

    /// `login` with more startup parameters.
    pub async fn login_with(
        env: &Env,
        user: &str,
        password: &str,
        db: &str,
        extra: &[(&str, &str)],
    ) -> Result<Raw, String> {
        Raw::login_at(env.pake.pg_addr, user, password, db, extra).await
    }

    /// `login_with` at any address (Pake, or a lab server directly).
    pub async fn login_at(
        addr: std::net::SocketAddr,
        user: &str,
        password: &str,
        db: &str,
        extra: &[(&str, &str)],
    ) -> Result<Raw, String> {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        use postgres_protocol::message::frontend;
        let mut raw = Raw::connect_to(addr).await;
        let mut out = bytes::BytesMut::new();
        let params = [("user", user), ("database", db)]
            .into_iter()
            .chain(extra.iter().copied());
        frontend::startup_message(params, &mut out).expect("startup");
        raw.send(&out).await;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, body) = raw.read().await.ok_or("connection closed")?;
            match tag {
                b'R' => {
                    let code = i32::from_be_bytes(body[..4].try_into().expect("code"));
                    let mut out = bytes::BytesMut::new();
                    match code {
                        0 => {}
                        10 => {
                            let s = ScramSha256::new(
                                password.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)
                                .expect("sasl");
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().expect("scram");
                            s.update(&body[4..]).map_err(|e| e.to_string())?;
                            frontend::sasl_response(s.message(), &mut out).expect("sasl");
                        }
                        12 => {
                            let s = scram.as_mut().expect("scram");
                            s.finish(&body[4..]).map_err(|e| e.to_string())?;
                        }
                        other => return Err(format!("auth code {other}")),
                    }
                    if !out.is_empty() {
                        raw.send(&out).await;
                    }
                }
                b'E' => return Err(sqlstate(&body)),
                b'S' => {
                    let mut parts = body.split(|&b| b == 0).map(String::from_utf8_lossy);
                    let (k, v) = (parts.next(), parts.next());
                    raw.params
                        .push((k.unwrap_or_default().into(), v.unwrap_or_default().into()));
                }
                b'K' if body.len() >= 8 => {
                    raw.pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    raw.secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                }
                b'Z' => return Ok(raw),
                _ => {}
            }
        }
    }

    /// Send a CancelRequest for this client's key on a connection of its own.
    pub async fn cancel(&self, env: &Env) {
        use tokio::io::AsyncWriteExt;
        let mut packet = Vec::with_capacity(16);
        for n in [16, 80_877_102, self.pid, self.secret] {
            packet.extend_from_slice(&i32::to_be_bytes(n));
        }
        let mut c = tokio::net::TcpStream::connect(env.pake.pg_addr)
            .await
            .expect("connect");
        c.write_all(&packet).await.expect("cancel request");
    }

    /// Read one message; `None` when the connection is closed.
    pub async fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().ok()?) as usize;
                if self.buf.len() > len {
                    let frame = self.buf.split_to(len + 1);
                    return Some((frame[0], frame[5..].to_vec()));
                }
            }
            let n =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .ok()?
                    .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// Read the messages up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Reply {
        let mut reply = Reply::default();
        loop {
            let (tag, body) = self.read().await.expect("a reply");
            reply.tags.push(tag as char);
            match tag {
                b'E' if reply.sqlstate.is_empty() => reply.sqlstate = sqlstate(&body),
                b'C' => {
                    reply.command = String::from_utf8_lossy(&body).trim_end_matches('\0').into()
                }
                b'D' if reply.value.is_none() && body.len() >= 6 => {
                    let len = i32::from_be_bytes(body[2..6].try_into().expect("len")) as usize;
                    reply.value = body.get(6..6 + len).map(<[u8]>::to_vec);
                }
                b'Z' => {
                    reply.status = body.first().copied().unwrap_or(0);
                    return reply;
                }
                _ => {}
            }
        }
    }

    /// Read until an ErrorResponse; its SQLSTATE and severity.
    pub async fn error(&mut self) -> Option<(String, String)> {
        loop {
            let (tag, body) = self.read().await?;
            if tag == b'E' {
                return Some((sqlstate(&body), field(&body, b'S')));
            }
        }
    }

    /// Is the connection closed by the other end (after draining what is left)?
    pub async fn closed(&mut self) -> bool {
        loop {
            match self.read().await {
                None => return true,
                Some(_) => continue,
            }
        }
    }
}

/// What a request got, up to its ReadyForQuery ([`Raw::until_ready`]).
#[derive(Debug, Default)]
pub struct Reply {
    /// Every message's tag, in order.
    pub tags: String,
    /// The first ErrorResponse's SQLSTATE (empty: none).
    pub sqlstate: String,
    /// The last CommandComplete's tag.
    pub command: String,
    /// The first DataRow's first column.
    pub value: Option<Vec<u8>>,
    /// The ReadyForQuery's transaction status.
    pub status: u8,
}

/// A Query message.
pub fn query(text: &str) -> Vec<u8> {
    frame(b'Q', format!("{text}\0").as_bytes())
}

pub fn field(body: &[u8], f: u8) -> String {
    let mut rest = body;
    while let Some((&k, tail)) = rest.split_first() {
        if k == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        if k == f {
            return String::from_utf8_lossy(&tail[..end]).into_owned();
        }
        rest = &tail[(end + 1).min(tail.len())..];
    }
    String::new()
}

pub fn sqlstate(body: &[u8]) -> String {
    field(body, b'C')
}

/// A frame: tag + length + body.
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// The SQLSTATE of a tokio-postgres error (empty when it has none).
pub fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}
