//! A client's way in: startup packet (SSLRequest/GSSENCRequest answered `N`, CancelRequest
//! handed back to the listener), authentication against the configured users, the pool for
//! (database, user), and the welcome (AuthenticationOk, ParameterStatus, BackendKeyData,
//! ReadyForQuery). The whole of it runs under `client_login_timeout`.

use super::auth::{self, AuthError, Method, ScramSecret, ScramServer};
use super::auth_query::{CacheKey, Lookup};
use super::cancel::{CancelSlot, ClientInfo};
use super::cluster::Cluster;
use super::error::Error;
use super::params::ClientParams;
use super::proxy::{Proxy, UserEntry, UserGuard};
use super::server::Server;
use super::startup::{self, Request, Startup};
use super::stream::ClientStream;
use super::wire::{self, backend, fe};
use bytes::{Buf, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest password / SASL message accepted during login.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

/// What a new connection's first packets asked for.
pub enum Opening {
    /// A StartupMessage, with the bytes the client sent after it.
    Startup(Box<Startup>, BytesMut),
    Cancel {
        pid: i32,
        secret: i32,
    },
}

/// Who a client that opened with a StartupMessage turned out to be.
pub enum Login {
    /// A client, with its place under its user's `max_user_connections`.
    Client(Box<LoggedIn>, UserGuard),
    /// A replication client and the server it has to itself (`super::replication`).
    Replication(Box<LoggedIn>, Box<Server>, UserGuard),
    /// An admin on the console database (`pake`, or `pgbouncer` for PgBouncer habits).
    Console(Box<LoggedIn>),
}

/// Database names that reach the admin console instead of a pool.
pub const CONSOLE_DATABASES: &[&str] = &["pake", "pgbouncer"];

/// The connection's identity, for the client registry.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub id: u64,
    pub addr: std::net::SocketAddr,
    pub local: std::net::SocketAddr,
}

impl Peer {
    /// The span every log line about this client carries (`client`: id, peer). Opened once a
    /// StartupMessage arrived, not at accept: each span holds a slot in the subscriber's
    /// registry whose small allocations stay behind when it closes, and thousands of
    /// connections that never send a startup packet would leave pages pinned for good.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!("client", id = self.id, peer = %self.addr)
    }
}

/// A client that passed authentication (and, unless on the console, has a pool).
pub struct LoggedIn {
    pub startup: Startup,
    pub user: Arc<UserEntry>,
    pub cluster: Option<Arc<Cluster>>,
    pub params: ClientParams,
    pub cancel: Arc<CancelSlot>,
}

/// Read the startup packet (answering SSLRequest with `N`) and nothing more: used to turn a
/// client away politely, after it has sent what it wanted to send.
pub async fn read_startup<S>(stream: &mut S) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(512);
    loop {
        let len = read_until(stream, &mut buf, startup::packet).await?;
        let packet = buf.split_to(len);
        match startup::parse(&packet)? {
            Request::Ssl | Request::GssEnc => {
                stream.write_all(b"N").await.map_err(Error::ClientIo)?;
            }
            _ => return Ok(()),
        }
    }
}

/// Read packets until the StartupMessage (upgrading to TLS on the way when asked) or a
/// CancelRequest.
pub async fn open(proxy: &Arc<Proxy>, stream: &mut ClientStream) -> Result<Opening, Error> {
    let mut buf = BytesMut::with_capacity(512);
    let tls = proxy.tls();
    loop {
        let len = match read_until(stream, &mut buf, startup::packet).await {
            Err(_) if startup::gave_up(&buf) => {
                return Err(Error::ClientIo(std::io::ErrorKind::UnexpectedEof.into()));
            }
            read => read?,
        };
        let packet = buf.split_to(len);
        match startup::parse(&packet)? {
            Request::Ssl => {
                if !buf.is_empty() {
                    // bytes sent after SSLRequest, before the answer: never trust them
                    return Err(Error::Tls("data received before the TLS handshake".into()));
                }
                upgrade(stream, tls.acceptor.as_ref()).await?;
            }
            Request::GssEnc => {
                stream.write_all(b"N").await.map_err(Error::ClientIo)?;
            }
            Request::Cancel { pid, secret } => return Ok(Opening::Cancel { pid, secret }),
            Request::Startup(s) => {
                if tls.client_required() && !stream.is_tls() {
                    return Err(Error::TlsRequired);
                }
                return Ok(Opening::Startup(Box::new(s), buf));
            }
        }
    }
}

/// Run the rest of the startup phase after `open`: authenticate, find the destination, and
/// send the welcome.
pub async fn login(
    proxy: &Arc<Proxy>,
    stream: &mut ClientStream,
    peer: Peer,
    mut startup: Startup,
    mut buf: BytesMut,
) -> Result<Login, Error> {
    let mut out = BytesMut::with_capacity(512);
    if startup.minor > 0 || !startup.protocol_options.is_empty() {
        let opts: Vec<&[u8]> = startup
            .protocol_options
            .iter()
            .map(|o| o.as_bytes())
            .collect();
        backend::negotiate_protocol_version(&mut out, 0, &opts);
    }
    // a replication client naming `pake` (psql sends the user name when none is given)
    // is not an admin: the server ignores a physical client's database name
    let console =
        CONSOLE_DATABASES.contains(&startup.database.as_str()) && startup.replication.is_none();
    let (entry, cache_key) = find_user(proxy, &startup, console).await?;
    let method = entry
        .as_ref()
        .map(|u| u.method)
        .unwrap_or(proxy.config().general.auth_type);
    let usable = entry.as_deref().filter(|e| can_serve(e));
    let client_key =
        match authenticate(stream, &mut buf, &mut out, &startup.user, usable, method).await {
            Ok(key) => key,
            Err(e) => {
                if let Some(key) = &cache_key {
                    // the password may have changed since it was cached: read it again next time
                    proxy.auth_query.forget(key);
                }
                return Err(e);
            }
        };
    let is_usable = usable.is_some();
    let user = match entry {
        Some(user) if is_usable => user,
        _ => return Err(AuthError::Failed(startup.user.clone()).into()),
    };
    let place = take_place(proxy, &user, console)?;
    let (cluster, welcome, replica_link) =
        destination(proxy, &startup, &user, console, client_key, peer.id).await?;
    let notice = long_application_name(&mut startup);
    if replica_link.is_none() {
        settle_params(cluster.as_deref(), &welcome, &mut startup).await?;
    }
    let params = ClientParams::new(&welcome, &startup.params);
    let cancel = register(proxy, peer, &startup);
    if let Some(server) = &replica_link {
        super::replication::attach_cancel(&cancel, server);
    }
    write_welcome(&mut out, &welcome, &params, &cancel, notice.as_deref());
    if let Err(e) = stream.write_all(&out).await {
        proxy.cancel.unregister(cancel.pid);
        return Err(Error::ClientIo(e));
    }
    let logged_in = Box::new(LoggedIn {
        startup,
        user,
        cluster,
        params,
        cancel,
    });
    Ok(match (place, replica_link) {
        (None, _) => Login::Console(logged_in),
        (Some(place), Some(server)) => Login::Replication(logged_in, Box::new(server), place),
        (Some(place), None) => Login::Client(logged_in, place),
    })
}

/// The client's place under its user's `max_user_connections` (none on the console), taken
/// before the welcome: a client told it is in must not be turned away at once (and a
/// replication client's server not opened for nothing).
fn take_place(
    proxy: &Arc<Proxy>,
    user: &Arc<UserEntry>,
    console: bool,
) -> Result<Option<UserGuard>, Error> {
    if console {
        return Ok(None);
    }
    let place = proxy.admit_user(user).map_err(|max| {
        let user = user.config.name.clone();
        Error::TooManyUserConnections { user, max }
    })?;
    Ok(Some(place))
}

/// The client's startup settings as its pool's servers report them, or the FATAL a server
/// gives for one it refuses (the console has none to try).
async fn settle_params(
    cluster: Option<&Cluster>,
    welcome: &[(String, String)],
    startup: &mut Startup,
) -> Result<(), Error> {
    let Some(cluster) = cluster else {
        return Ok(());
    };
    let pool = cluster.pool(super::cluster::Target::Primary);
    super::login_params::settle(pool, welcome, &mut startup.params).await
}

/// The client's cancel key, and its line in `SHOW CLIENTS`.
fn register(proxy: &Proxy, peer: Peer, startup: &Startup) -> Arc<CancelSlot> {
    proxy.cancel.register(ClientInfo {
        id: peer.id,
        user: startup.user.clone(),
        database: startup.database.clone(),
        addr: peer.addr,
        local_addr: peer.local,
        application_name: startup.param("application_name").unwrap_or("").to_string(),
        connected_at: std::time::SystemTime::now(),
    })
}

/// Whether `user`'s secret can serve its method: a looked-up one that cannot fails like an
/// unknown user.
fn can_serve(user: &UserEntry) -> bool {
    !user.looked_up
        || match user.method {
            Method::ScramSha256 => user.secret.scram.is_some(),
            _ => user.secret.md5.is_some(),
        }
}

/// An `application_name` longer than PostgreSQL keeps is cut in `startup` as the server
/// cuts it; the NOTICE the server would have sent at login comes back.
fn long_application_name(startup: &mut Startup) -> Option<String> {
    let (_, value) = startup
        .params
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case("application_name"))?;
    let (kept, notice) = super::params::truncated_application_name(value)?;
    *value = kept;
    Some(notice)
}

/// AuthenticationOk, a notice the server would have sent during login, the server
/// parameters as the client's settings show them, the cancel key, ReadyForQuery.
fn write_welcome(
    out: &mut BytesMut,
    welcome: &super::pool::Params,
    params: &ClientParams,
    cancel: &CancelSlot,
    notice: Option<&str>,
) {
    backend::authentication(out, auth::code::OK, &[]);
    if let Some(message) = notice {
        backend::notice_response(
            out,
            &backend::Fields {
                severity: "NOTICE",
                code: "42622",
                message,
                detail: None,
                hint: None,
            },
        );
    }
    for (k, v) in welcome.iter() {
        let v = params
            .get(k)
            .map_or(v.as_str(), |v| super::encoding::reported(k, v));
        backend::parameter_status(out, k.as_bytes(), v.as_bytes());
    }
    backend::backend_key_data(out, cancel.pid, cancel.secret);
    backend::ready_for_query(out, b'I');
}

/// The client's user: its `[[users]]` entry, or else (outside the console) the one
/// `auth_query` finds, with the cache key of that lookup.
async fn find_user(
    proxy: &Arc<Proxy>,
    startup: &Startup,
    console: bool,
) -> Result<(Option<Arc<UserEntry>>, Option<CacheKey>), Error> {
    if let Some(entry) = proxy.user(&startup.user) {
        return Ok((Some(entry), None));
    }
    if console {
        return Ok((None, None));
    }
    let config = proxy.config();
    let found = proxy
        .auth_query
        .look_up(
            &config,
            &startup.database,
            &startup.user,
            |name| proxy.user(name),
            &proxy.tls(),
        )
        .await;
    match found {
        Ok((Lookup::Found { entry, cached }, key)) => {
            // a secret served from the cache is forgotten when the login fails with it
            Ok((Some(entry), key.filter(|_| cached)))
        }
        Ok((Lookup::Off | Lookup::Unknown, _)) => Ok((None, None)),
        // run in the client's database, which the server does not have: say so, as it would
        Err(e) if e.is_unknown_database() => Err(Error::UnknownDatabase(startup.database.clone())),
        Err(e) => {
            tracing::warn!(user = %startup.user, database = %startup.database, error = %e,
                "auth_query lookup failed");
            Err(e.into())
        }
    }
}

/// Where a logged-in client goes (the admin console, for admins only, or its database's
/// cluster) and the parameters its welcome reports.
async fn destination(
    proxy: &Arc<Proxy>,
    startup: &Startup,
    user: &UserEntry,
    console: bool,
    client_key: Option<[u8; 32]>,
    id: u64,
) -> Result<(Option<Arc<Cluster>>, super::pool::Params, Option<Server>), Error> {
    if console {
        if !proxy
            .config()
            .general
            .admin_users
            .contains(&user.config.name)
        {
            return Err(Error::NotAdmin(user.config.name.clone()));
        }
        return Ok((None, Arc::new(super::console::welcome_params()), None));
    }
    proxy.admit_database(&startup.database)?;
    let cluster = proxy
        .cluster(&startup.database, user)
        .ok_or_else(|| Error::UnknownDatabase(startup.database.clone()))?;
    if let Some(pass) = &cluster.passthrough {
        // the servers log in with this client's proof (the freshest key) from now on
        pass.update(&user.secret, client_key, user.looked_up_at);
    }
    if startup.replication.is_some() {
        // connected before the welcome, so a server refusing it is the client's FATAL; the
        // welcome is that server's own (a physical one names no database: libpq sends
        // `replication`, which a pooled login would not find)
        let server = super::replication::connect(&cluster, startup, id).await?;
        let welcome = Arc::new(server.params.reported.clone());
        return Ok((Some(cluster), welcome, Some(server)));
    }
    // after a failover the promoted replica is the primary
    let welcome = cluster
        .pool(super::cluster::Target::Primary)
        .welcome_params()
        .await?;
    Ok((Some(cluster), welcome, None))
}

/// Answer SSLRequest: `S` and a TLS handshake when Pake has a certificate, `N` otherwise.
async fn upgrade(
    stream: &mut ClientStream,
    acceptor: Option<&tokio_rustls::TlsAcceptor>,
) -> Result<(), Error> {
    let Some(acceptor) = acceptor.filter(|_| matches!(stream, ClientStream::Plain(_))) else {
        stream.write_all(b"N").await.map_err(Error::ClientIo)?;
        return Ok(());
    };
    stream.write_all(b"S").await.map_err(Error::ClientIo)?;
    let ClientStream::Plain(tcp) = std::mem::replace(stream, ClientStream::Closed) else {
        return Err(Error::Tls("stream is not plain TCP".into()));
    };
    let tls = acceptor
        .accept(tcp)
        .await
        .map_err(|e| Error::Tls(format!("handshake failed: {e}")))?;
    *stream = ClientStream::Tls(Box::new(tls));
    Ok(())
}

async fn authenticate<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    user: &str,
    entry: Option<&UserEntry>,
    method: Method,
) -> Result<Option<[u8; 32]>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match method {
        Method::Trust => {
            if entry.is_none() {
                return Err(AuthError::Failed(user.to_string()).into());
            }
            Ok(None)
        }
        Method::Md5 => {
            let stored =
                match entry {
                    Some(e) => Some(e.secret.md5.as_deref().ok_or_else(|| {
                        AuthError::MethodUnavailable {
                            user: user.to_string(),
                            method,
                        }
                    })?),
                    None => None,
                };
            let salt: [u8; 4] = rand::random();
            backend::authentication(out, auth::code::MD5, &salt);
            flush(stream, out).await?;
            let body = read_password(stream, buf).await?;
            match stored {
                Some(stored) if auth::md5_matches(stored, salt, &body) => Ok(None),
                _ => Err(AuthError::Failed(user.to_string()).into()),
            }
        }
        Method::ScramSha256 => {
            let mock;
            let (secret, doomed) = match entry.and_then(|e| e.secret.scram.as_ref()) {
                Some(s) => (s, false),
                None if entry.is_some() => {
                    return Err(AuthError::MethodUnavailable {
                        user: user.to_string(),
                        method,
                    }
                    .into())
                }
                None => {
                    mock = ScramSecret::mock(user);
                    (&mock, true)
                }
            };
            let mut scram = ScramServer::new(user, secret, doomed);
            let mut offer = auth::SCRAM_SHA_256.as_bytes().to_vec();
            offer.extend_from_slice(b"\0\0");
            backend::authentication(out, auth::code::SASL, &offer);
            flush(stream, out).await?;
            let body = read_password(stream, buf).await?;
            let (mechanism, first) = auth::parse_sasl_initial(&body)?;
            let server_first = scram.first(mechanism, first)?;
            backend::authentication(out, auth::code::SASL_CONTINUE, &server_first);
            flush(stream, out).await?;
            let body = read_password(stream, buf).await?;
            let server_final = scram.finish(&body)?;
            backend::authentication(out, auth::code::SASL_FINAL, &server_final);
            Ok(scram.client_key())
        }
    }
}

async fn flush<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut BytesMut) -> Result<(), Error> {
    stream.write_all(out).await.map_err(Error::ClientIo)?;
    out.clear();
    Ok(())
}

/// Read one `p` message (password, SASLInitialResponse, SASLResponse); returns its body.
async fn read_password<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<BytesMut, Error> {
    let len = read_until(stream, buf, |b| {
        match wire::frame_header(b, MAX_AUTH_MESSAGE)? {
            Some((_, total)) if b.len() >= total => Ok(Some(total)),
            _ => Ok(None),
        }
    })
    .await?;
    if buf[0] != fe::PASSWORD {
        return Err(AuthError::ExpectedPassword.into());
    }
    let mut frame = buf.split_to(len);
    frame.advance(wire::HEADER_LEN);
    Ok(frame)
}

/// Read until `complete` says a whole unit of N bytes is buffered.
async fn read_until<S, F>(stream: &mut S, buf: &mut BytesMut, complete: F) -> Result<usize, Error>
where
    S: AsyncRead + Unpin,
    F: Fn(&[u8]) -> Result<Option<usize>, wire::FrameError>,
{
    loop {
        if let Some(n) = complete(buf)? {
            return Ok(n);
        }
        buf.reserve(512);
        let n = stream.read_buf(buf).await.map_err(Error::ClientIo)?;
        if n == 0 {
            return Err(Error::ClientIo(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}
