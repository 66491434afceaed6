//! One connection to a Postgres server: connect, log in (SCRAM-SHA-256, md5, cleartext,
//! trust), and the state the session and pool need to know whether it is safe to reuse.
//!
//! The forward path reads and writes `stream`, `rbuf` and `wbuf` directly (see
//! `session`); this module owns the slow paths: startup, liveness, reset queries, and the
//! protocol state that decides whether a connection may be reused: the queue of replies it
//! owes ([`replies`]).

pub mod replies;

use super::params::ServerParams;
use super::prepared::{ServerStatements, StatementId};
use super::stream::ServerStream;
use super::wire::{self, be, error_field};
use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use replies::{Effects, Expect, Replies};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest message accepted from a server outside the forward path (startup, reset).
const MAX_SERVER_MESSAGE: usize = 1 << 30;

/// Where and as whom to connect.
#[derive(Clone)]
pub struct ServerTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// For `auth_query` users, whose password Pake never sees: the stored md5 hash and the
    /// ClientKey the last client proved (used when `password` is `None`).
    pub passthrough: Option<std::sync::Arc<super::passthrough::Passthrough>>,
    pub database: String,
    pub connect_timeout: Duration,
    /// TLS towards the server, when `server_tls_sslmode` is not `disable`.
    pub tls: Option<(tokio_rustls::TlsConnector, crate::tls::ServerTlsMode)>,
    /// More startup parameters: none for pooled servers; a replication client's own
    /// (`replication` among them) for the server it gets to itself.
    pub extra: Vec<(String, String)>,
}

impl std::fmt::Debug for ServerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("tls", &self.tls.as_ref().map(|t| t.1))
            .finish()
    }
}

/// Why a server connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot connect to server {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to server {addr} after {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("server {addr} refused the login: {message}")]
    Rejected {
        addr: String,
        code: String,
        message: String,
    },
    #[error("server asked for authentication method {0}, which Pake does not support")]
    UnsupportedAuth(i32),
    #[error("no password configured to log in to the server as \"{0}\"")]
    NoPassword(String),
    #[error("cannot log in to the server as \"{user}\" without its password: {reason}")]
    Passthrough { user: String, reason: String },
    #[error("SCRAM exchange with the server failed: {0}")]
    Sasl(std::io::Error),
    #[error("server connection I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("server closed the connection")]
    Closed,
    /// The server sent its own FATAL error (already passed to the client) and is gone.
    #[error("the server ended the connection with an error of its own")]
    Ended,
    #[error("server sent a malformed message: {0}")]
    Protocol(String),
    #[error("query {query:?} failed on the server: {message}")]
    Query { query: String, message: String },
    #[error("server {addr} does not accept TLS, and server_tls_sslmode requires it")]
    TlsRefused { addr: String },
    #[error("TLS with server {addr}: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    /// The server answered out of turn: its protocol state is unknown.
    #[error(transparent)]
    Desync(#[from] replies::Desync),
}

impl ServerError {
    /// Opening a connection failed because the server (or the way to it) is not serving: what
    /// a circuit breaker counts. A login the server refused for this user or database (a
    /// password, `pg_hba.conf`, a database it does not have) is not: the server answered, and
    /// one client's bad logins must not fail everyone else's pools fast.
    pub fn backend_down(&self) -> bool {
        match self {
            ServerError::Rejected { code, .. } => {
                // 57: shutting down, starting up, in recovery; 53: too many connections,
                // out of memory or disk; 08: connection failures; 58 and XX: the system
                ["57", "53", "08", "58", "XX"]
                    .iter()
                    .any(|c| code.starts_with(c))
            }
            ServerError::UnsupportedAuth(_)
            | ServerError::NoPassword(_)
            | ServerError::Passthrough { .. }
            | ServerError::Sasl(_)
            | ServerError::TlsRefused { .. }
            | ServerError::Query { .. } => false,
            ServerError::Connect { .. }
            | ServerError::ConnectTimeout { .. }
            | ServerError::Io(_)
            | ServerError::Closed
            | ServerError::Ended
            | ServerError::Protocol(_)
            | ServerError::Tls { .. }
            | ServerError::Desync(_) => true,
        }
    }

    /// The SQLSTATE the server itself reported, if it did.
    pub fn server_code(&self) -> Option<&str> {
        match self {
            ServerError::Rejected { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The key a server gave for canceling its queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendKey {
    pub pid: i32,
    pub secret: i32,
}

/// A logged-in server connection.
/// Each buffer's capacity when the connection opens.
const BUFFER: usize = 8192;
/// The most capacity an idle server's buffer keeps ([`Server::shrink_buffers`]).
pub const KEEP_BUFFER: usize = 64 * 1024;

#[derive(Debug)]
pub struct Server {
    pub id: u64,
    pub stream: ServerStream,
    /// TLS ciphertext may still sit in rustls after the last write.
    pub needs_flush: bool,
    pub addr: SocketAddr,
    /// Bytes read from the server, not yet handled.
    pub rbuf: BytesMut,
    /// Bytes to send to the server.
    pub wbuf: BytesMut,
    /// Replies the server owes for what was sent.
    pub replies: Replies,
    /// Extended-protocol messages were sent after the last Sync: not at a boundary.
    pub in_extended: bool,
    /// Transaction status from the last ReadyForQuery (`I`, `T` or `E`).
    pub tx_status: u8,
    /// Bytes left of a large message being streamed through to the client.
    pub streaming: usize,
    /// A client left session state here; run the reset query before reuse.
    pub dirty: Option<&'static str>,
    /// DDL went through in the transaction now open (transaction mode): when it ends, the
    /// process-wide statements are forgotten, since a rollback may take away what some of
    /// them were prepared against (a type created in it, and the parameter of that type).
    pub ddl: bool,
    /// The client session whose unnamed statement this server holds (transaction mode: a
    /// client binding it later, from another server or after someone else's, re-Parses it).
    pub unnamed_owner: Option<u64>,
    pub statements: ServerStatements,
    pub params: ServerParams,
    pub key: BackendKey,
    pub created: Instant,
    pub last_used: Instant,
}

impl Server {
    /// Pass through what is here (`here` bytes) of a message being streamed: how many
    /// bytes of it were.
    pub fn pass_streamed(&mut self, here: usize) -> usize {
        let n = self.streaming.min(here);
        self.streaming -= n;
        n
    }

    /// Connect and log in, within `target.connect_timeout`.
    pub async fn connect(id: u64, target: &ServerTarget) -> Result<Server, ServerError> {
        let addr_text = format!("{}:{}", target.host, target.port);
        let fut = async {
            let (stream, addr) = dial(target, &addr_text).await?;
            let now = Instant::now();
            let mut server = Server {
                id,
                stream,
                needs_flush: false,
                addr,
                rbuf: BytesMut::with_capacity(BUFFER),
                wbuf: BytesMut::with_capacity(BUFFER),
                replies: Replies::default(),
                in_extended: false,
                tx_status: b'I',
                streaming: 0,
                dirty: None,
                ddl: false,
                unnamed_owner: None,
                statements: ServerStatements::default(),
                params: ServerParams::default(),
                key: BackendKey::default(),
                created: now,
                last_used: now,
            };
            server.startup(target, &addr_text).await?;
            Ok(server)
        };
        match tokio::time::timeout(target.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ServerError::ConnectTimeout {
                addr: addr_text,
                timeout: target.connect_timeout,
            }),
        }
    }

    /// Where a CancelRequest for what runs on this server goes.
    pub fn cancel_target(&self) -> super::cancel::CancelTarget {
        super::cancel::CancelTarget {
            addr: self.addr,
            key: self.key,
        }
    }

    async fn startup(&mut self, target: &ServerTarget, addr: &str) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        let login = [
            ("user", target.user.as_str()),
            ("database", target.database.as_str()),
        ];
        let extra = target.extra.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        frontend::startup_message(login.into_iter().chain(extra), &mut out)?;
        self.send(&out).await?;
        let mut scram: Option<ScramClient> = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                be::AUTHENTICATION => {
                    self.authenticate(target, &body, &mut scram).await?;
                }
                be::PARAMETER_STATUS => self.params.on_status(&body),
                be::BACKEND_KEY_DATA => {
                    let (pid, rest) = wire::i32_at(&body).ok_or_else(|| bad("BackendKeyData"))?;
                    let (secret, _) = wire::i32_at(rest).ok_or_else(|| bad("BackendKeyData"))?;
                    self.key = BackendKey { pid, secret };
                }
                be::READY_FOR_QUERY => {
                    self.tx_status = body.first().copied().unwrap_or(b'I');
                    return Ok(());
                }
                be::ERROR_RESPONSE => {
                    return Err(ServerError::Rejected {
                        addr: addr.to_string(),
                        code: field(&body, b'C'),
                        message: field(&body, b'M'),
                    })
                }
                be::NOTICE_RESPONSE | be::NEGOTIATE_PROTOCOL_VERSION => {}
                other => {
                    return Err(ServerError::Protocol(format!(
                        "unexpected message {} during startup",
                        wire::Tag(other)
                    )))
                }
            }
        }
    }

    async fn authenticate(
        &mut self,
        target: &ServerTarget,
        body: &[u8],
        scram: &mut Option<ScramClient>,
    ) -> Result<(), ServerError> {
        use super::auth::code;
        let (kind, rest) = wire::i32_at(body).ok_or_else(|| bad("Authentication"))?;
        let password = || {
            target
                .password
                .as_deref()
                .ok_or_else(|| ServerError::NoPassword(target.user.clone()))
        };
        let mut out = BytesMut::new();
        match kind {
            code::OK => return Ok(()),
            code::CLEARTEXT => frontend::password_message(password()?.as_bytes(), &mut out)?,
            code::MD5 => {
                let salt: [u8; 4] = rest
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| bad("MD5 salt"))?;
                let hash = match (&target.password, &target.passthrough) {
                    (None, Some(pass)) => pass
                        .md5()
                        .and_then(|stored| super::passthrough::md5_response(&stored, salt))
                        .ok_or_else(|| ServerError::Passthrough {
                            user: target.user.clone(),
                            reason:
                                "the server asks for md5 and the stored secret is not an md5 hash"
                                    .into(),
                        })?,
                    _ => postgres_protocol::authentication::md5_hash(
                        target.user.as_bytes(),
                        password()?.as_bytes(),
                        salt,
                    ),
                };
                frontend::password_message(hash.as_bytes(), &mut out)?;
            }
            code::SASL => {
                let offers_scram = rest
                    .split(|&b| b == 0)
                    .any(|m| m == SCRAM_SHA_256.as_bytes());
                if !offers_scram {
                    return Err(ServerError::UnsupportedAuth(kind));
                }
                let s = match (&target.password, &target.passthrough) {
                    (None, Some(pass)) => {
                        let keys = pass.scram().ok_or_else(|| ServerError::Passthrough {
                            user: target.user.clone(),
                            reason: "no client has logged in with SCRAM since the lookup".into(),
                        })?;
                        ScramClient::Keys(super::passthrough::KeyScram::new(keys))
                    }
                    _ => ScramClient::Password(ScramSha256::new(
                        password()?.as_bytes(),
                        ChannelBinding::unsupported(),
                    )),
                };
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                *scram = Some(s);
            }
            code::SASL_CONTINUE => {
                let s = scram.as_mut().ok_or_else(|| bad("SASL continue"))?;
                s.update(rest, &target.user)?;
                frontend::sasl_response(s.message(), &mut out)?;
            }
            code::SASL_FINAL => {
                let s = scram.as_mut().ok_or_else(|| bad("SASL final"))?;
                s.finish(rest, &target.user)?;
                return Ok(());
            }
            other => return Err(ServerError::UnsupportedAuth(other)),
        }
        self.send(&out).await?;
        Ok(())
    }

    /// Write and flush (TLS streams keep ciphertext until flushed).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Read one whole message outside the forward path.
    pub async fn read_message(&mut self) -> Result<(u8, BytesMut), ServerError> {
        loop {
            if let Some((tag, len)) = wire::frame_header(&self.rbuf, MAX_SERVER_MESSAGE)
                .map_err(|e| ServerError::Protocol(e.to_string()))?
            {
                if self.rbuf.len() >= len {
                    let mut frame = self.rbuf.split_to(len);
                    frame.advance(wire::HEADER_LEN);
                    return Ok((tag, frame));
                }
                self.rbuf.reserve(len - self.rbuf.len());
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(ServerError::Closed);
            }
        }
    }

    /// Is the connection still usable? Checks the socket without blocking: an idle server
    /// that has anything to say (an error before closing) or has closed is not.
    ///
    /// The cheap check trusts Tokio's readiness cache (no syscall unless the reactor saw the
    /// socket become readable). A server idle longer than `deep_after` also gets a real
    /// non-blocking peek, which catches a close the reactor has not processed yet — the usual
    /// case right after PostgreSQL restarts.
    pub fn is_alive(&mut self, deep_after: Duration) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let Some(tcp) = self.stream.tcp() else {
            // an in-memory pipe (tests) has no socket to peek: its close shows on the next read
            return self.stream.is_memory();
        };
        // peek, never consume: on TLS the bytes are ciphertext the session must see
        let mut peek = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        let sock = socket2::SockRef::from(tcp);
        let would_block = |r: std::io::Result<usize>| matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        // no syscall unless the reactor saw the socket become readable
        let cached =
            would_block(tcp.try_io(tokio::io::Interest::READABLE, || sock.peek(&mut peek)));
        if !cached || self.last_used.elapsed() < deep_after {
            return cached;
        }
        would_block(sock.peek(&mut peek))
    }

    /// Nothing owed, nothing unsent, outside any transaction or COPY, and not discarding
    /// messages until a Sync (an error in an extended request whose Sync has not been sent:
    /// after a COPY that failed before the client's CopyDone and Sync arrived, the queue is
    /// empty but the server would swallow the next client's Parse).
    pub fn is_idle(&self) -> bool {
        self.tx_status == b'I' && self.between_requests()
    }

    /// Everything sent has been answered up to a ReadyForQuery, and the transaction (if one
    /// is open) has not failed: the next client message starts a request.
    pub fn between_requests(&self) -> bool {
        !self.in_extended && self.answered()
    }

    /// Everything sent has been answered, and the transaction (if one is open) has not
    /// failed; the server may be inside an extended-protocol batch whose Sync has not come
    /// (a driver's Parse and Describe sent with a Flush).
    pub fn answered(&self) -> bool {
        self.replies.is_empty()
            && !self.replies.is_skipping()
            && matches!(self.tx_status, b'I' | b'T')
            && self.wbuf.is_empty()
            && self.rbuf.is_empty()
            && self.streaming == 0
    }

    /// Is this server's copy of statement `id` in doubt: made by a Parse, or evicted by a
    /// Close, sent in an earlier batch and not answered yet? An error before it in its batch
    /// makes the server skip it, so a Bind, Describe or Parse afresh of a later batch
    /// (pipelined behind its Sync) that counted on the copy or its absence, or closed it,
    /// would leave Pake wrong about what the server has: a Bind of it failing with 26000, or
    /// a Parse of it with 42P05. Within its own batch nothing is in doubt: the server skips
    /// the rest of the batch after an error too. A copy with nothing owed is noted settled.
    pub fn copy_in_doubt(&mut self, id: StatementId) -> bool {
        let made = self.statements.unanswered(id);
        match made.or_else(|| self.statements.evicted_in(id)) {
            Some(batch) if batch != self.replies.batch() => {
                let owed = self.replies.copy_owed_in_earlier_batch(id);
                if !owed {
                    self.statements.settled(id);
                }
                owed
            }
            _ => false,
        }
    }

    /// Give back buffers a large message grew (a 20 MB statement leaves its capacity in
    /// `wbuf`, a large row in `rbuf`): an idle pooled server keeps at most
    /// [`KEEP_BUFFER`] of each, so memory returns after a spike instead of staying with
    /// every server that ever carried one.
    pub fn shrink_buffers(&mut self) {
        crate::limits::shrink_idle(&mut self.rbuf, KEEP_BUFFER, BUFFER);
        crate::limits::shrink_idle(&mut self.wbuf, KEEP_BUFFER, BUFFER);
        self.replies.own_unnamed.shrink(KEEP_BUFFER);
    }

    /// Run a simple query to completion, discarding its output (reset, rollback).
    pub async fn run(&mut self, query: &str, limit: Duration) -> Result<(), ServerError> {
        let fut = async {
            let mut out = BytesMut::new();
            frontend::query(query, &mut out)?;
            self.send(&out).await?;
            self.read_until_ready(query).await.map(drop)
        };
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| ServerError::Io(std::io::ErrorKind::TimedOut.into()))?
    }

    /// Run one statement over the extended protocol with text parameters (never spliced into
    /// the SQL) and return its rows as text columns (`None` for NULL). Side channels only
    /// (the `auth_query` lookup); the server stays usable after an error the server reports.
    pub async fn query_params(
        &mut self,
        query: &str,
        params: &[&str],
        limit: Duration,
    ) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        let fut = async {
            let mut out = BytesMut::new();
            frontend::parse("", query, params.iter().map(|_| 0), &mut out)?;
            frontend::bind(
                "",
                "",
                [0],
                params.iter().copied(),
                |p, buf| {
                    buf.extend_from_slice(p.as_bytes());
                    Ok(postgres_protocol::IsNull::No)
                },
                [0],
                &mut out,
            )
            .map_err(|_| ServerError::Protocol("cannot encode a parameter".into()))?;
            frontend::execute("", 0, &mut out)?;
            frontend::sync(&mut out);
            self.send(&out).await?;
            self.read_until_ready(query).await
        };
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| ServerError::Io(std::io::ErrorKind::TimedOut.into()))?
    }

    /// Read a side-channel request's replies up to ReadyForQuery: its rows as text columns,
    /// or the server's error (reported once the server is ready again, so it stays usable).
    async fn read_until_ready(
        &mut self,
        query: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                be::READY_FOR_QUERY => {
                    self.tx_status = body.first().copied().unwrap_or(b'I');
                    break;
                }
                be::DATA_ROW => rows.push(data_row(&body)?),
                be::PARAMETER_STATUS => self.params.on_status(&body),
                be::ERROR_RESPONSE => failure = Some(field(&body, b'M')),
                _ => {}
            }
        }
        match failure {
            Some(message) => Err(ServerError::Query {
                query: query.to_string(),
                message,
            }),
            None => Ok(rows),
        }
    }

    /// Bring a server a client left behind back to an idle, clean state: cancel what runs,
    /// end a COPY, finish the replies owed, roll back an open transaction and, when asked,
    /// run the reset query. Any failure means the connection must be closed instead.
    pub async fn recover(
        &mut self,
        reset: Option<&str>,
        limit: Duration,
    ) -> Result<(), ServerError> {
        let fut = async {
            if !self.replies.is_empty() {
                let _ = super::cancel::send_cancel(self.cancel_target()).await;
            }
            let mut out = std::mem::take(&mut self.wbuf);
            if self.replies.in_copy_in() {
                frontend::copy_fail("client disconnected", &mut out)?;
            }
            if self.in_extended {
                frontend::sync(&mut out);
                self.replies.push(Expect::Ready {
                    swallow: false,
                    stmt: false,
                });
                self.in_extended = false;
            }
            if !out.is_empty() {
                self.send(&out).await?;
            }
            self.drain_replies().await?;
            if self.tx_status != b'I' {
                self.run("ROLLBACK", limit).await?;
            }
            if let Some(q) = reset.filter(|q| !q.trim().is_empty()) {
                self.run(q, limit).await?;
                self.after_reset();
            }
            Ok(())
        };
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| ServerError::Io(std::io::ErrorKind::TimedOut.into()))?
    }

    /// The reset query ran: session state, prepared statements and settings are gone.
    pub fn after_reset(&mut self) {
        self.dirty = None;
        self.statements.clear();
        self.params.on_reset();
    }

    /// Read and drop replies until none is owed.
    async fn drain_replies(&mut self) -> Result<(), ServerError> {
        while self.streaming > 0 {
            if self.rbuf.is_empty() && self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(ServerError::Closed);
            }
            let n = self.streaming.min(self.rbuf.len());
            self.rbuf.advance(n);
            self.streaming -= n;
        }
        let mut scratch = BytesMut::new();
        while !self.replies.is_empty() {
            self.replies.drain_synthetic(&mut scratch);
            if self.replies.is_empty() {
                break;
            }
            let (tag, body) = self.read_message().await?;
            let mut fx = Effects::default();
            self.replies.on_message(tag, &body, &mut fx)?;
            if fx.ended {
                return Err(ServerError::Ended);
            }
            if tag == be::PARAMETER_STATUS {
                self.params.on_status(&body);
            }
            if let Some((status, _)) = fx.ready {
                self.tx_status = status;
            }
            self.statements.answered(&mut fx);
            if self.replies.in_copy_in() {
                let mut out = BytesMut::new();
                frontend::copy_fail("client disconnected", &mut out)?;
                self.send(&out).await?;
            }
        }
        Ok(())
    }

    /// Best-effort Terminate before dropping the socket, so the server logs a clean exit.
    pub fn terminate(&mut self) {
        if let ServerStream::Plain(tcp) = &self.stream {
            let _ = tcp.try_write(b"X\0\0\0\x04");
        }
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }
}

/// Pake's side of a SCRAM login to a server: with the password, or with the ClientKey of an
/// `auth_query` user.
enum ScramClient {
    Password(ScramSha256),
    Keys(super::passthrough::KeyScram),
}

impl ScramClient {
    fn message(&self) -> &[u8] {
        match self {
            ScramClient::Password(s) => s.message(),
            ScramClient::Keys(s) => s.message(),
        }
    }

    fn update(&mut self, server_first: &[u8], user: &str) -> Result<(), ServerError> {
        match self {
            ScramClient::Password(s) => s.update(server_first).map_err(ServerError::Sasl),
            ScramClient::Keys(s) => s.update(server_first).map_err(|e| passthrough(user, e)),
        }
    }

    fn finish(&mut self, server_final: &[u8], user: &str) -> Result<(), ServerError> {
        match self {
            ScramClient::Password(s) => s.finish(server_final).map_err(ServerError::Sasl),
            ScramClient::Keys(s) => s.finish(server_final).map_err(|e| passthrough(user, e)),
        }
    }
}

fn passthrough(user: &str, e: super::passthrough::PassError) -> ServerError {
    ServerError::Passthrough {
        user: user.to_string(),
        reason: e.to_string(),
    }
}

/// Open the connection (TLS negotiated when configured): the stream and the peer address.
async fn dial(
    target: &ServerTarget,
    addr: &str,
) -> Result<(ServerStream, SocketAddr), ServerError> {
    #[cfg(test)]
    if let Some(pipe) = super::memory::dial(&target.host) {
        let pipe = pipe.map_err(|source| ServerError::Connect {
            addr: addr.to_string(),
            source,
        })?;
        let peer = SocketAddr::from(([127, 0, 0, 1], target.port));
        return Ok((ServerStream::Memory(pipe), peer));
    }
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| ServerError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    Ok((negotiate_tls(stream, target, addr).await?, peer))
}

/// Ask the server for TLS (SSLRequest) when configured, and wrap the stream.
async fn negotiate_tls(
    mut tcp: TcpStream,
    target: &ServerTarget,
    addr: &str,
) -> Result<ServerStream, ServerError> {
    use crate::tls::ServerTlsMode;
    let Some((connector, mode)) = &target.tls else {
        return Ok(ServerStream::Plain(tcp));
    };
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    tcp.write_all(&req).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        return match mode {
            ServerTlsMode::Prefer | ServerTlsMode::Disable => Ok(ServerStream::Plain(tcp)),
            _ => Err(ServerError::TlsRefused {
                addr: addr.to_string(),
            }),
        };
    }
    let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
        ServerError::Tls {
            addr: addr.to_string(),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|source| ServerError::Tls {
            addr: addr.to_string(),
            source,
        })?;
    Ok(ServerStream::Tls(Box::new(tls)))
}

/// The columns of a DataRow body, as text.
pub fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, ServerError> {
    let count = body
        .get(..2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| bad("DataRow"))?;
    let mut rest = &body[2..];
    let mut columns = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count {
        let (len, tail) = wire::i32_at(rest).ok_or_else(|| bad("DataRow"))?;
        if len < 0 {
            columns.push(None);
            rest = tail;
            continue;
        }
        let value = tail.get(..len as usize).ok_or_else(|| bad("DataRow"))?;
        columns.push(Some(String::from_utf8_lossy(value).into_owned()));
        rest = &tail[len as usize..];
    }
    Ok(columns)
}

fn bad(what: &str) -> ServerError {
    ServerError::Protocol(format!("malformed {what} message"))
}

fn field(body: &[u8], f: u8) -> String {
    error_field(body, f)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}
