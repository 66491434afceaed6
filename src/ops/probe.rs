//! The wire-level probes behind the health check, one per protocol. Each makes one real
//! round trip and returns a short human detail on success:
//!
//! * Postgres backend: log in with tokio-postgres and run `select pg_is_in_recovery()` (a
//!   `select 1` that also tells a primary from a replica).
//! * Redis backend: `AUTH` when the URL has a password, then `PING`, expecting `+PONG`;
//!   over TLS for `rediss://`.
//! * Pake's Redis listener: `PING` only, never credentials; `+PONG`, or `-NOAUTH` when
//!   clients must log in, means it is serving. Over TLS when the listener asks for it.
//! * Pake's Postgres listener: a CancelRequest with key (0, 0), which no client holds
//!   (Pake never mints pid 0). Pake reads it and hangs up; nothing is logged above debug and
//!   no login metric moves, so a probe every few seconds leaves no trace. Any reply means
//!   Pake refused us (an ErrorResponse, e.g. 53300 at `max_client_conn`).
//! * Pake's admin HTTP: `GET /ready`; a 503 carries the phase and each pool's last error.
//!
//! Callers put a deadline around each probe; the probes themselves only cap what they read.

use crate::pg::stream::ServerStream;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Why a probe says "down".
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Postgres(String),
    #[error("Redis answered {0:?}")]
    Redis(String),
    #[error("unexpected reply: {0}")]
    Protocol(String),
    #[error("not ready (HTTP {status}): {detail}")]
    NotReady { status: u16, detail: String },
    #[error("{0}")]
    Unusable(String),
}

/// A Postgres server and the login to check it with.
#[derive(Debug, Clone)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    /// TLS as Pake's own server connections use it (`[tls] server_tls_sslmode`).
    pub tls: Option<PgTls>,
}

/// TLS towards a Postgres server: the rustls settings Pake's server connections use, and
/// whether plaintext is refused (`require` and up) or only the fallback (`prefer`).
#[derive(Debug, Clone)]
pub struct PgTls {
    pub config: Box<rustls::ClientConfig>,
    pub require: bool,
}

/// Log in and run `select pg_is_in_recovery()`.
pub async fn postgres(t: &PgTarget, timeout: Duration) -> Result<String, ProbeError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&t.host)
        .port(t.port)
        .user(&t.user)
        .dbname(&t.dbname)
        .application_name("pake-health-check")
        .connect_timeout(timeout);
    if let Some(p) = &t.password {
        cfg.password(p);
    }
    let fail = |e: tokio_postgres::Error| ProbeError::Postgres(describe(&e));
    let (client, driver) = match &t.tls {
        None => {
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(fail)?;
            (client, tokio::spawn(async move { conn.await.map(drop) }))
        }
        Some(tls) => {
            cfg.ssl_mode(if tls.require {
                tokio_postgres::config::SslMode::Require
            } else {
                tokio_postgres::config::SslMode::Prefer
            });
            let make = tokio_postgres_rustls::MakeRustlsConnect::new((*tls.config).clone());
            let (client, conn) = cfg.connect(make).await.map_err(fail)?;
            (client, tokio::spawn(async move { conn.await.map(drop) }))
        }
    };
    let row = client
        .query_one("select pg_is_in_recovery()", &[])
        .await
        .map_err(|e| ProbeError::Postgres(describe(&e)))?;
    drop(client);
    let _ = driver.await;
    let in_recovery: bool = row
        .try_get(0)
        .map_err(|e| ProbeError::Protocol(e.to_string()))?;
    Ok(if in_recovery {
        format!("up as {}, in recovery (replica)", t.user)
    } else {
        format!("up as {}, primary (not in recovery)", t.user)
    })
}

/// A server's `SQLSTATE message`, or the client error with its cause (`error connecting to
/// server: Connection refused`), which tokio-postgres's Display leaves out.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}", db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Where a Redis is and how to log in to it, from
/// `redis[s]://[user:password@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `host:port`, ready for `TcpStream::connect`.
    pub addr: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// `rediss://`: the server speaks TLS (the caller supplies the connector).
    pub tls: bool,
}

impl RedisTarget {
    /// Parse a Redis URL.
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let (rest, tls) = match (url.strip_prefix("redis://"), url.strip_prefix("rediss://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err("expected redis[s]://[user:password@]host[:port][/db]".into()),
        };
        let rest = rest.split(['/', '?']).next().unwrap_or_default();
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (user, password) = match userinfo.map(|u| u.split_once(':').unwrap_or(("", u))) {
            Some((u, p)) => (
                Some(percent_decode(u)).filter(|u| !u.is_empty()),
                Some(percent_decode(p)).filter(|p| !p.is_empty()),
            ),
            None => (None, None),
        };
        if hostport.is_empty() {
            return Err("the URL names no host".into());
        }
        let has_port = match hostport.rfind(']') {
            Some(end) => hostport[end..].contains(':'),
            None => hostport.contains(':'),
        };
        let addr = if has_port {
            hostport.to_string()
        } else {
            format!("{hostport}:6379")
        };
        Ok(RedisTarget {
            addr,
            user,
            password,
            tls,
        })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// TLS for a Redis probe: the connector, and how it checks the certificate.
#[derive(Clone)]
pub struct RedisTls {
    pub connector: tokio_rustls::TlsConnector,
    /// For the report line: `verify-full against redis.server_tls_ca_file`.
    pub trust: String,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("trust", &self.trust)
            .finish()
    }
}

/// TCP to `addr`, then the TLS handshake when `tls` is given; the server name is the host
/// of `addr` (an IP address or a DNS name).
async fn open(addr: &str, tls: Option<&RedisTls>) -> Result<ServerStream, ProbeError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(ProbeError::Connect)?;
    let Some(tls) = tls else {
        return Ok(ServerStream::Plain(tcp));
    };
    let host = crate::redis::config::split_host_port(addr).map_or(addr, |(h, _)| h);
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| ProbeError::Tls(format!("{host:?} is not a TLS server name: {e}")))?;
    let stream = tls
        .connector
        .connect(name, tcp)
        .await
        .map_err(|e| ProbeError::Tls(format!("{e} ({})", tls.trust)))?;
    Ok(ServerStream::Tls(Box::new(stream)))
}

/// `PING`'s reply, with how the connection was secured: `PONG`, `PONG over TLS (…)`.
fn pong(tls: Option<&RedisTls>, what: &str) -> String {
    match tls {
        Some(t) => format!("{what} over TLS ({})", t.trust),
        None => what.to_string(),
    }
}

/// `AUTH` (when the target has a password), then `PING`; `+PONG` is healthy.
pub async fn redis(t: &RedisTarget, tls: Option<&RedisTls>) -> Result<String, ProbeError> {
    let mut stream = BufReader::new(open(&t.addr, tls).await?);
    if let Some(password) = &t.password {
        let mut args = vec!["AUTH"];
        args.extend(t.user.as_deref());
        args.push(password);
        send_command(&mut stream, &args).await?;
        let reply = read_line(&mut stream).await?;
        if reply != "+OK" {
            return Err(ProbeError::Redis(reply));
        }
    }
    send_command(&mut stream, &["PING"]).await?;
    match read_line(&mut stream).await?.as_str() {
        "+PONG" => Ok(pong(tls, "PONG")),
        other => Err(ProbeError::Redis(other.to_string())),
    }
}

/// `PING` Pake's Redis listener, sending no credentials (over TLS the certificate may not
/// have been verified, see `health::pake_redis_tls`). `+PONG` is healthy, and so is
/// `-NOAUTH`: Pake read the command and answered that clients must log in first.
pub async fn pake_redis(addr: SocketAddr, tls: Option<&RedisTls>) -> Result<String, ProbeError> {
    let mut stream = BufReader::new(open(&addr.to_string(), tls).await?);
    send_command(&mut stream, &["PING"]).await?;
    match read_line(&mut stream).await?.as_str() {
        "+PONG" => Ok(pong(tls, "PONG")),
        noauth if noauth.starts_with("-NOAUTH") => {
            Ok(pong(tls, "NOAUTH (serving; login required)"))
        }
        other => Err(ProbeError::Redis(other.to_string())),
    }
}

async fn send_command(stream: &mut BufReader<ServerStream>, args: &[&str]) -> std::io::Result<()> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let stream = stream.get_mut();
    stream.write_all(&out).await?;
    // rustls may hold the last record until flushed
    stream.flush().await
}

/// One RESP simple line (`+OK`, `-ERR …`), at most 1 KiB, without its CRLF.
async fn read_line(stream: &mut BufReader<ServerStream>) -> Result<String, ProbeError> {
    let mut line = Vec::new();
    let n = (&mut *stream)
        .take(1024)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(ProbeError::Protocol(
            "connection closed without a reply".into(),
        ));
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// CancelRequest: length 16, code 80877102, pid 0, secret 0.
const CANCEL_PROBE: [u8; 16] = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 0, 0, 0, 0, 0];

/// Send a CancelRequest no client can match and expect Pake to hang up without a word.
pub async fn pake_postgres(addr: SocketAddr) -> Result<String, ProbeError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(ProbeError::Connect)?;
    stream.write_all(&CANCEL_PROBE).await?;
    let mut reply = Vec::new();
    (&mut stream).take(4096).read_to_end(&mut reply).await?;
    if reply.is_empty() {
        return Ok("accepting (answered a cancel probe)".into());
    }
    Err(ProbeError::Protocol(describe_pg_reply(&reply)))
}

/// A Postgres ErrorResponse as `SQLSTATE message`, anything else as its first bytes.
fn describe_pg_reply(reply: &[u8]) -> String {
    if reply.first() != Some(&b'E') || reply.len() < 5 {
        return format!(
            "{:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(64)])
        );
    }
    let (mut code, mut message) = ("", "");
    for field in reply[5..].split(|&b| b == 0) {
        let Some((&kind, value)) = field.split_first() else {
            break;
        };
        let value = std::str::from_utf8(value).unwrap_or("");
        match kind {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    format!("refused: {code} {message}")
}

/// `GET /ready` on the admin HTTP listener.
pub async fn pake_admin(addr: SocketAddr) -> Result<String, ProbeError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(ProbeError::Connect)?;
    let request = format!("GET /ready HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    (&mut stream).take(256 << 10).read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProbeError::Protocol(format!("not HTTP: {:?}", truncate(&text, 64))))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    match status {
        200 => Ok("ready".into()),
        _ => Err(ProbeError::NotReady {
            status,
            detail: readiness_detail(body),
        }),
    }
}

/// The phase and the failing pools from `/ready`'s JSON body.
fn readiness_detail(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return truncate(body.trim(), 200).to_string();
    };
    let mut parts = vec![format!(
        "phase {}",
        v["phase"].as_str().unwrap_or("unknown")
    )];
    for pool in v["pools"].as_array().into_iter().flatten() {
        if let Some(err) = pool["error"].as_str() {
            parts.push(format!(
                "pool {}: {err}",
                pool["pool"].as_str().unwrap_or("?")
            ));
        }
    }
    parts.join("; ")
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls() {
        let t = RedisTarget::parse("redis://127.0.0.1:7000").unwrap();
        assert_eq!((t.addr.as_str(), t.password), ("127.0.0.1:7000", None));
        let t = RedisTarget::parse("redis://:s%40cret@cache/2").unwrap();
        assert_eq!(t.addr, "cache:6379");
        assert_eq!((t.user, t.password.as_deref()), (None, Some("s@cret")));
        let t = RedisTarget::parse("redis://app:pw@[::1]:7001?protocol=resp3").unwrap();
        assert_eq!(t.addr, "[::1]:7001");
        assert_eq!(t.user.as_deref(), Some("app"));
        assert_eq!(
            RedisTarget::parse("redis://[::1]").unwrap().addr,
            "[::1]:6379"
        );
        assert!(!t.tls);
        let t = RedisTarget::parse("rediss://:pw@cache.internal:6380/1").unwrap();
        assert!(t.tls);
        assert_eq!(t.addr, "cache.internal:6380");
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert_eq!(
            RedisTarget::parse("rediss://[::1]").unwrap().addr,
            "[::1]:6379"
        );
        assert!(RedisTarget::parse("http://h").is_err());
        assert!(RedisTarget::parse("redis://").is_err());
    }

    #[test]
    fn cancel_probe_is_a_cancel_request() {
        assert_eq!(&CANCEL_PROBE[4..8], &80877102u32.to_be_bytes());
        let mut err = b"E\0\0\0\0SFATAL\0C53300\0Msorry, too many clients\0\0".to_vec();
        let len = (err.len() - 1) as u32;
        err[1..5].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            describe_pg_reply(&err),
            "refused: 53300 sorry, too many clients"
        );
        assert_eq!(describe_pg_reply(b"N"), "\"N\"");
    }

    #[test]
    fn readiness_body() {
        let body = r#"{"ready":false,"phase":"running","pools":[{"pool":"app/app","error":"connection refused"},{"pool":"b/u","error":null}]}"#;
        assert_eq!(
            readiness_detail(body),
            "phase running; pool app/app: connection refused"
        );
        assert_eq!(readiness_detail("oops"), "oops");
    }
}
