//! A dedicated connection to one Redis node, driven with raw RESP bytes: Pake's own
//! `CLIENT TRACKING` connections, and the links a session pins for blocking commands,
//! MULTI/EXEC with WATCH, and pub/sub. Replies are delimited with [`resp::scan`] and kept as
//! the raw bytes Redis sent, so they reach the client exactly as Redis wrote them. With a
//! `rediss://` URL the link speaks TLS (the same connector as the shared pools).

use crate::pg::stream::ServerStream;
use crate::redis::error::Error;
use crate::redis::resp::{self, encode::Proto, Limits};
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Who to connect to, and as whom.
#[derive(Clone)]
pub struct Target {
    /// `host:port`
    pub addr: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u8,
    pub proto: Proto,
    pub connect_timeout: Duration,
    /// TLS to the node (`rediss://`); the server name checked is the host of `addr`.
    pub tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("db", &self.db)
            .field("proto", &self.proto)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

pub struct Link {
    /// Plain TCP or TLS (pub/sub pipes it to the client as it is).
    pub stream: ServerStream,
    /// Bytes read but not yet taken as a frame.
    rbuf: BytesMut,
    /// Where the scan of a frame still arriving in `rbuf` stopped.
    scanner: resp::Scanner,
    pub addr: String,
    /// Redis's id for this connection, once asked (`CLIENT ID`): what `CLIENT UNBLOCK` of
    /// a client blocked on it names.
    pub redis_id: Option<u64>,
}

/// Encode arguments as a multibulk command.
pub fn command(args: &[&[u8]]) -> BytesMut {
    let mut out = BytesMut::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    resp::encode::array(&mut out, args.len());
    for a in args {
        resp::encode::bulk(&mut out, a);
    }
    out
}

/// The message of an error reply (`-ERR …` or `!n…`), if this is one.
pub fn error_text(frame: &[u8]) -> Option<String> {
    match frame.first() {
        Some(b'-') => Some(String::from_utf8_lossy(frame[1..].trim_ascii_end()).into_owned()),
        Some(b'!') => {
            let body = frame.splitn(2, |&b| b == b'\n').nth(1).unwrap_or_default();
            Some(String::from_utf8_lossy(body.trim_ascii_end()).into_owned())
        }
        _ => None,
    }
}

impl Link {
    /// Connect and log in: `HELLO 3 [AUTH]` for RESP3, `AUTH` for RESP2, then `SELECT`.
    pub async fn connect(t: &Target) -> Result<Link, Error> {
        let stream = tokio::time::timeout(t.connect_timeout, open(t))
            .await
            .map_err(|_| Error::Backend(format!("connecting to {} timed out", t.addr)))??;
        let mut link = Link {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            scanner: resp::Scanner::default(),
            addr: t.addr.clone(),
            redis_id: None,
        };
        let user = t.username.as_deref().unwrap_or("default");
        match (t.proto, &t.password) {
            (Proto::Resp3, Some(pw)) => {
                link.login(&[b"HELLO", b"3", b"AUTH", user.as_bytes(), pw.as_bytes()])
                    .await?;
            }
            (Proto::Resp3, None) => {
                link.login(&[b"HELLO", b"3"]).await?;
            }
            (Proto::Resp2, Some(pw)) => {
                link.login(&[b"AUTH", user.as_bytes(), pw.as_bytes()])
                    .await?;
            }
            (Proto::Resp2, None) => {}
        }
        if t.db != 0 {
            link.call_ok(&[b"SELECT", t.db.to_string().as_bytes()])
                .await?;
        }
        Ok(link)
    }

    /// HELLO or AUTH: Redis's refusal (`WRONGPASS …`, `NOPERM …`) is [`Error::Refused`] in
    /// its own words — the user's to fix, not Redis failing.
    async fn login(&mut self, args: &[&[u8]]) -> Result<Bytes, Error> {
        let reply = self.call(args).await?;
        match error_text(&reply) {
            Some(msg) => Err(Error::Refused(msg)),
            None => Ok(reply),
        }
    }

    /// Send a command and read its reply; an error reply becomes `Err`.
    pub async fn call_ok(&mut self, args: &[&[u8]]) -> Result<Bytes, Error> {
        let reply = self.call(args).await?;
        match error_text(&reply) {
            Some(msg) => Err(Error::Backend(format!("{}: {msg}", self.addr))),
            None => Ok(reply),
        }
    }

    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Bytes, Error> {
        self.send(&command(args)).await?;
        self.read_frame().await
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let lost = |e: std::io::Error| Error::LinkLost(format!("{}: {e}", self.addr));
        self.stream.write_all(bytes).await.map_err(lost)?;
        if self.stream.is_tls() {
            // rustls may hold the last records until flushed
            self.stream.flush().await.map_err(lost)?;
        }
        Ok(())
    }

    /// The stream, the bytes read past the last frame taken, the address: for a reader that
    /// scans on its own (a mux link, from the front of those bytes).
    pub fn into_parts(self) -> (ServerStream, BytesMut, String) {
        (self.stream, self.rbuf, self.addr)
    }

    /// Every byte read and not yet taken as a frame (a subscriber's pipe starts with them).
    pub fn take_buffered(&mut self) -> BytesMut {
        self.scanner.reset();
        self.rbuf.split()
    }

    /// A frame already buffered, if whole.
    pub fn buffered_frame(&mut self) -> Result<Option<Bytes>, Error> {
        match self.scanner.scan(&self.rbuf, &Limits::backend()) {
            Ok(Some(n)) => Ok(Some(self.rbuf.split_to(n).freeze())),
            Ok(None) => Ok(None),
            Err(e) => Err(Error::LinkLost(format!("{}: bad reply: {e}", self.addr))),
        }
    }

    /// Read one whole reply or push frame.
    pub async fn read_frame(&mut self) -> Result<Bytes, Error> {
        loop {
            if let Some(f) = self.buffered_frame()? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// Read more bytes into the buffer.
    pub async fn fill(&mut self) -> Result<(), Error> {
        // a wide reply grew the buffer: keep at most 64 KiB of it once it is handled
        crate::limits::shrink_idle(&mut self.rbuf, 64 * 1024, 16 * 1024);
        self.rbuf.reserve(16 * 1024);
        let n = self
            .stream
            .read_buf(&mut self.rbuf)
            .await
            .map_err(|e| Error::LinkLost(format!("{}: {e}", self.addr)))?;
        if n == 0 {
            return Err(Error::LinkLost(format!(
                "{} closed the connection",
                self.addr
            )));
        }
        Ok(())
    }
}

/// TCP, then the TLS handshake when the target asks for it.
async fn open(t: &Target) -> Result<ServerStream, Error> {
    let tcp = TcpStream::connect(&t.addr)
        .await
        .map_err(|e| Error::Backend(format!("cannot connect to {}: {e}", t.addr)))?;
    let _ = tcp.set_nodelay(true);
    let Some(connector) = &t.tls else {
        return Ok(ServerStream::Plain(tcp));
    };
    let host = crate::redis::config::split_host_port(&t.addr)
        .map_or(t.addr.as_str(), |(h, _)| h)
        .to_string();
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|e| Error::Backend(format!("{}: not a TLS server name: {e}", t.addr)))?;
    let tls = connector.connect(name, tcp).await.map_err(|e| {
        let bad_cert = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
        let hint = match bad_cert {
            true => " (the certificate must chain to redis.server_tls_ca_file, and name this host under verify-full)",
            false => " (does this port speak TLS?)",
        };
        Error::UpstreamTls(format!("{}: {e}{hint}", t.addr))
    })?;
    Ok(ServerStream::Tls(Box::new(tls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_errors() {
        assert_eq!(
            &command(&[b"GET", b"k"])[..],
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
        assert_eq!(error_text(b"-ERR no\r\n").as_deref(), Some("ERR no"));
        assert_eq!(error_text(b"!6\r\nERR no\r\n").as_deref(), Some("ERR no"));
        assert_eq!(error_text(b"+OK\r\n"), None);
    }
}
