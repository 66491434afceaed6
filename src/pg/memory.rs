//! Postgres in memory, for unit tests of the pool, the server connection and the session
//! under tokio's paused clock: a small scripted backend that a [`ServerTarget`] reaches
//! with `host = "memory-N"` (see `server::dial`), and clients that reach a session over a
//! pipe instead of a socket. The real-server tests (`tests/pg`) stay the proof of
//! compatibility; these make timeouts, fairness, failures and cleanup checkable in
//! milliseconds and without ports.
//!
//! The backend speaks the simple query protocol: it logs in (trust, or a cleartext password
//! when given one), answers `SELECT <integer>` and `SELECT pg_backend_pid()` with one row,
//! tracks BEGIN/COMMIT/ROLLBACK, reports SET of the parameters Postgres reports, fails on
//! `FAIL`, runs `HANG` until canceled, closes the connection on `DIE` and answers `TWICE`
//! with one ReadyForQuery too many. Every other statement completes with its first word as
//! the tag. Each statement it saw is in [`Backend::queries`].
//!
//! A CancelRequest reaches it as it reaches Postgres, on a connection of its own to the
//! backend's address ([`Backend::port`], routed by `cancel::send_cancel`): with the right
//! process id and secret it ends that connection's `HANG` with 57014 (the rest of the
//! query string is skipped, as Postgres aborts it); otherwise it does nothing. Every
//! request is counted in [`Backend::cancels`], so a test can show one never arrived.
//!
//! [`ServerTarget`]: super::server::ServerTarget

use super::listener;
use super::login::Peer;
use super::proxy::Proxy;
use super::stream::ClientStream;
use super::wire::backend::{self as msg, Fields};
use bytes::BytesMut;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{watch, Notify};

/// Each side's buffer in a pipe.
const PIPE: usize = 64 * 1024;

static BACKENDS: LazyLock<Mutex<HashMap<String, Arc<Shared>>>> = LazyLock::new(Default::default);
static NEXT: AtomicU64 = AtomicU64::new(1);
/// The secret every backend process hands out in its BackendKeyData.
const SECRET: i32 = 7;
/// Where backend N listens, as far as cancel requests are concerned: `FIRST_PORT + N`.
const FIRST_PORT: u64 = 20_000;

/// What the backend and the test share.
struct Shared {
    password: Option<String>,
    /// Accept connections and never answer them.
    mute: bool,
    queries: Mutex<Vec<String>>,
    /// Connections opened (the next one's pid is this + 1).
    opened: AtomicI32,
    /// The address cancel requests for this backend go to.
    port: u16,
    /// Processes running `HANG`, by pid: notified by a cancel.
    hanging: Mutex<HashMap<i32, Arc<Notify>>>,
    /// Cancel requests received, whatever became of them.
    cancels: AtomicUsize,
    /// Set when the backend is dropped: every open connection ends, as at a shutdown.
    killed: watch::Sender<bool>,
}

/// A scripted Postgres reachable at [`Backend::host`]; unreachable once dropped.
pub struct Backend {
    host: String,
    shared: Arc<Shared>,
}

impl Backend {
    /// A backend that trusts every login.
    pub fn start() -> Backend {
        Backend::with_password(None)
    }

    /// A backend that asks for `password` in clear text (`None`: trust).
    pub fn with_password(password: Option<&str>) -> Backend {
        Backend::new(password, false)
    }

    /// A backend that accepts connections and never says a word.
    pub fn mute() -> Backend {
        Backend::new(None, true)
    }

    fn new(password: Option<&str>, mute: bool) -> Backend {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let host = format!("memory-{n}");
        let shared = Arc::new(Shared {
            password: password.map(str::to_string),
            mute,
            queries: Mutex::default(),
            opened: AtomicI32::new(0),
            port: u16::try_from(FIRST_PORT + n).unwrap_or(u16::MAX),
            hanging: Mutex::default(),
            cancels: AtomicUsize::new(0),
            killed: watch::channel(false).0,
        });
        lock(&BACKENDS).insert(host.clone(), shared.clone());
        Backend { host, shared }
    }

    /// The `host` a server target uses to reach this backend.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The `port` a server target gives for this backend: where its cancel requests go.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// Connections opened so far.
    pub fn connections(&self) -> i32 {
        self.shared.opened.load(Ordering::Relaxed)
    }

    /// Cancel requests received so far (right or wrong key, busy or idle process).
    pub fn cancels(&self) -> usize {
        self.shared.cancels.load(Ordering::Relaxed)
    }

    /// Every statement received, in order.
    pub fn queries(&self) -> Vec<String> {
        lock(&self.shared.queries).clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        lock(&BACKENDS).remove(&self.host);
        self.shared.killed.send_replace(true);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pipe to the backend named `host`: `None` when `host` is not an in-memory one,
/// refused when that backend is gone.
pub fn dial(host: &str) -> Option<io::Result<DuplexStream>> {
    if !host.starts_with("memory-") {
        return None;
    }
    let Some(shared) = lock(&BACKENDS).get(host).cloned() else {
        return Some(Err(io::ErrorKind::ConnectionRefused.into()));
    };
    let (near, far) = tokio::io::duplex(PIPE);
    tokio::spawn(async move {
        let mut killed = shared.killed.subscribe();
        tokio::select! {
            _ = serve(far, &shared) => {}
            _ = killed.wait_for(|k| *k) => {}
        }
    });
    Some(Ok(near))
}

/// A CancelRequest for process `pid` sent to `addr`: `None` when no in-memory backend
/// listens there (the request goes out on TCP), `Some(false)` when `still()` no longer holds
/// once the backend is found (nothing delivered), else delivered as Postgres's postmaster
/// would: the process running `HANG` under that pid and secret is told to stop.
pub fn cancel_at(
    addr: SocketAddr,
    pid: i32,
    secret: i32,
    still: impl FnOnce() -> bool,
) -> Option<io::Result<bool>> {
    let shared = lock(&BACKENDS)
        .values()
        .find(|b| addr.ip().is_loopback() && b.port == addr.port())
        .cloned()?;
    if !still() {
        return Some(Ok(false));
    }
    shared.cancels.fetch_add(1, Ordering::Relaxed);
    if secret == SECRET {
        if let Some(stop) = lock(&shared.hanging).get(&pid) {
            stop.notify_one();
        }
    }
    Some(Ok(true))
}

/// A new client connection to `proxy`, its session run as the listener runs an accepted
/// one: the client's end of the pipe.
pub fn accept(proxy: &Arc<Proxy>) -> DuplexStream {
    let (near, far) = tokio::io::duplex(PIPE);
    let peer = Peer {
        id: proxy.next_client_id(),
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
        local: std::net::SocketAddr::from(([127, 0, 0, 1], 6432)),
    };
    tokio::spawn(listener::handle(
        proxy.clone(),
        ClientStream::Memory(far),
        peer,
    ));
    near
}

/// A client connected to `proxy`, logged in with tokio-postgres.
pub async fn client(
    proxy: &Arc<Proxy>,
    user: &str,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .user(user)
        .password(password)
        .dbname(database)
        .connect_raw(accept(proxy), tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Send `client`'s CancelRequest to `proxy` on a connection of its own, as drivers do.
pub async fn cancel(
    proxy: &Arc<Proxy>,
    client: &tokio_postgres::Client,
) -> Result<(), tokio_postgres::Error> {
    let token = client.cancel_token();
    token
        .cancel_query_raw(accept(proxy), tokio_postgres::NoTls)
        .await
}

/// The SQLSTATE of a failed statement, or the error's text when it carries none.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(code) => code.code().to_string(),
        None => e.to_string(),
    }
}

/// Parameters Postgres reports to the client when they change.
const REPORTED: [&str; 5] = [
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
];

/// One connection, until the client leaves or asks it to die.
async fn serve(mut io: DuplexStream, shared: &Shared) -> io::Result<()> {
    let pid = shared.opened.fetch_add(1, Ordering::Relaxed) + 1;
    if shared.mute {
        return std::future::pending().await;
    }
    let mut out = BytesMut::new();
    if !login(&mut io, shared, pid, &mut out).await? {
        return Ok(());
    }
    let mut tx = b'I';
    loop {
        let (tag, body) = read_message(&mut io).await?;
        match tag {
            b'Q' => {
                let text = String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(&body));
                for statement in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    lock(&shared.queries).push(statement.to_string());
                    match statement.to_ascii_lowercase().as_str() {
                        "hang" => {
                            hang(shared, pid).await;
                            if tx == b'T' {
                                tx = b'E';
                            }
                            error(&mut out, "57014", "canceling statement due to user request");
                            break;
                        }
                        "die" => return Ok(()),
                        // one ReadyForQuery too many: a server out of step with its client
                        "twice" => msg::ready_for_query(&mut out, tx),
                        lower => run(lower, statement, pid, &mut tx, &mut out),
                    }
                }
                msg::ready_for_query(&mut out, tx);
            }
            b'X' => return Ok(()),
            b'S' => msg::ready_for_query(&mut out, tx),
            other => error(
                &mut out,
                "0A000",
                &format!("the memory backend has no {:?} message", other as char),
            ),
        }
        io.write_all(&out).await?;
        out.clear();
    }
}

/// Run until a cancel request names `pid`.
async fn hang(shared: &Shared, pid: i32) {
    struct Running<'a>(&'a Shared, i32);
    impl Drop for Running<'_> {
        fn drop(&mut self) {
            lock(&self.0.hanging).remove(&self.1);
        }
    }
    let stop = Arc::new(Notify::new());
    lock(&shared.hanging).insert(pid, stop.clone());
    let _running = Running(shared, pid);
    stop.notified().await;
}

/// One statement of a simple query.
fn run(lower: &str, statement: &str, pid: i32, tx: &mut u8, out: &mut BytesMut) {
    let first = lower.split_whitespace().next().unwrap_or_default();
    if *tx == b'E' && !matches!(first, "rollback" | "commit" | "end") {
        error(out, "25P02", "current transaction is aborted");
        return;
    }
    match first {
        "begin" | "start" => {
            *tx = b'T';
            msg::command_complete(out, "BEGIN");
        }
        "commit" | "end" => {
            let tag = if *tx == b'E' { "ROLLBACK" } else { "COMMIT" };
            *tx = b'I';
            msg::command_complete(out, tag);
        }
        "rollback" => {
            *tx = b'I';
            msg::command_complete(out, "ROLLBACK");
        }
        "fail" => {
            if *tx == b'T' {
                *tx = b'E';
            }
            error(out, "42601", "the memory backend was asked to fail");
        }
        "select" => {
            let what = lower["select".len()..].trim();
            let value = match what {
                "pg_backend_pid()" => pid.to_string(),
                n if n.parse::<i64>().is_ok() => n.to_string(),
                _ => return error(out, "0A000", "the memory backend selects integers only"),
            };
            msg::row_description(out, &["?column?"]);
            msg::data_row(out, &[Some(&value)]);
            msg::command_complete(out, "SELECT 1");
        }
        "set" => {
            let rest = statement["set".len()..].trim();
            let (name, value) = rest
                .split_once('=')
                .or_else(|| rest.split_once(" to "))
                .or_else(|| rest.split_once(" TO "))
                .unwrap_or((rest, ""));
            let name = name.trim().to_ascii_lowercase();
            if REPORTED.contains(&name.as_str()) {
                let value = value.trim().trim_matches('\'');
                msg::parameter_status(out, name.as_bytes(), value.as_bytes());
            }
            msg::command_complete(out, "SET");
        }
        _ => msg::command_complete(out, &first.to_ascii_uppercase()),
    }
}

fn error(out: &mut BytesMut, code: &str, message: &str) {
    msg::error_response(
        out,
        &Fields {
            severity: "ERROR",
            code,
            message,
            detail: None,
            hint: None,
        },
    );
}

/// The startup exchange; `false` when the login was refused.
async fn login(
    io: &mut DuplexStream,
    shared: &Shared,
    pid: i32,
    out: &mut BytesMut,
) -> io::Result<bool> {
    loop {
        let len = io.read_i32().await?;
        let mut body = vec![0; usize::try_from(len).unwrap_or(0).saturating_sub(4)];
        io.read_exact(&mut body).await?;
        if body.get(..4) == Some(&super::wire::code::SSL_REQUEST.to_be_bytes()[..]) {
            io.write_all(b"N").await?;
            continue;
        }
        break;
    }
    if let Some(expected) = &shared.password {
        msg::authentication(out, 3, &[]);
        io.write_all(out).await?;
        out.clear();
        let (tag, body) = read_message(io).await?;
        let given = body.strip_suffix(b"\0").unwrap_or(&body);
        if tag != b'p' || given != expected.as_bytes() {
            msg::error_response(
                out,
                &Fields {
                    severity: "FATAL",
                    code: "28P01",
                    message: "password authentication failed",
                    detail: None,
                    hint: None,
                },
            );
            io.write_all(out).await?;
            return Ok(false);
        }
    }
    msg::authentication(out, 0, &[]);
    for (name, value) in [
        ("server_version", "15.0 (memory)"),
        ("client_encoding", "UTF8"),
        ("TimeZone", "UTC"),
        ("standard_conforming_strings", "on"),
    ] {
        msg::parameter_status(out, name.as_bytes(), value.as_bytes());
    }
    msg::backend_key_data(out, pid, SECRET);
    msg::ready_for_query(out, b'I');
    io.write_all(out).await?;
    out.clear();
    Ok(true)
}

/// One tagged message: its tag and body.
async fn read_message(io: &mut DuplexStream) -> io::Result<(u8, Vec<u8>)> {
    let tag = io.read_u8().await?;
    let len = io.read_i32().await?;
    let len = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_sub(4))
        .filter(|l| *l <= 1 << 20)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad message length"))?;
    let mut body = vec![0; len];
    io.read_exact(&mut body).await?;
    Ok((tag, body))
}
