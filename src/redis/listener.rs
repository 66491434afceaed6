//! The Redis listener: accept, admit (`max_clients`), secure (TLS), and run one session
//! task per client. Accept errors (out of file descriptors…) back off instead of spinning.
//!
//! Redis has no STARTTLS: a TLS client's first byte is a handshake record (0x16), which no
//! RESP command starts with (`*`, or a letter of an inline command). With TLS on, the
//! listener peeks at that byte: a handshake is accepted; plaintext is served under
//! `allow`/`prefer`, and under `require` answered with one `-ERR` line and closed.

use super::config::ClientTlsMode;
use super::error::Error;
use super::resp::encode;
use super::session::Session;
use super::Service;
use crate::pg::stream::ClientStream;
use crate::reactor::Reactors;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

/// Run the Redis listener on each reactor thread (see [`Reactors::serve_on_threads`]); a
/// session's reads and L1 hits never wake another thread. Returns the bound address (the
/// real port when 0 was asked).
pub fn serve_on_threads(
    svc: Arc<Service>,
    addr: std::net::SocketAddr,
    reactors: Reactors,
) -> std::io::Result<std::net::SocketAddr> {
    let first = crate::pg::listener::bind(addr)?;
    let bound = first.local_addr()?;
    let busy = {
        let svc = svc.clone();
        move || svc.client_count() > 0
    };
    reactors.serve_on_threads(first, "pake-redis", move |l| serve(svc.clone(), l), busy)?;
    Ok(bound)
}

/// Accept clients until the service starts draining.
pub async fn serve(svc: Arc<Service>, listener: TcpListener) {
    let mut closing = svc.closing();
    // this listener's sessions wait on a signal of their own, passed on from the service's
    // when the drain starts: one shared by all threads' sessions made its waiter list's
    // lock a cache line both cores wrote (each session now takes its place there once,
    // `Session::closing`)
    let (drain, draining) = tokio::sync::watch::channel(false);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = closing.wait_for(|c| *c) => {
                drain.send_replace(true);
                tracing::info!("Redis listener stopped accepting");
                return;
            }
        };
        match accepted {
            Ok((mut stream, peer)) => {
                backoff = Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                let svc = svc.clone();
                let draining = draining.clone();
                let id = svc.next_client_id();
                // debug: every line a Redis client's task logs is debug, and an enabled span
                // costs a slot in the subscriber's registry whose allocations outlive it
                let span = tracing::debug_span!("redis_client", id, peer = %peer);
                tokio::spawn(
                    async move {
                        let Some(_guard) = svc.admit() else {
                            let mut out = BytesMut::new();
                            encode::error(&mut out, &Error::TooManyClients.reply());
                            let _ = stream.write_all(&out).await;
                            return;
                        };
                        let Some(client) = secure(&svc, stream).await else {
                            return;
                        };
                        let session = Session::new(id, svc.clone(), client, draining);
                        let entry = session.entry();
                        // CLIENT KILL from another client drops the session (and its socket)
                        tokio::select! {
                            _ = session.run() => {}
                            _ = entry.killed() => {}
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// A TLS client has this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's stream: as it is without TLS; else after a handshake, or plain when the
/// mode allows it. `None`: the client is gone (or was refused, and told why).
async fn secure(svc: &Service, mut tcp: TcpStream) -> Option<ClientStream> {
    let Some(acceptor) = &svc.tls else {
        return Some(ClientStream::Plain(tcp));
    };
    let mut closing = svc.closing();
    let mut first = [0u8; 1];
    // a plaintext client may connect and wait before its first command: no deadline here
    let peeked = tokio::select! {
        r = tcp.peek(&mut first) => r,
        _ = closing.wait_for(|c| *c) => return None,
    };
    match peeked {
        Ok(0) | Err(_) => None,
        Ok(_) if first[0] == TLS_HANDSHAKE => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Some(ClientStream::Tls(Box::new(tls))),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake with a Redis client failed");
                    None
                }
                Err(_) => {
                    tracing::debug!("TLS handshake with a Redis client timed out");
                    None
                }
            }
        }
        Ok(_) if svc.config.client_tls_sslmode == ClientTlsMode::Require => {
            tracing::debug!("plaintext Redis client refused: TLS is required");
            let mut out = BytesMut::new();
            encode::error(&mut out, &Error::TlsRequired.reply());
            let _ = tcp.write_all(&out).await;
            let _ = tcp.shutdown().await;
            // read what the client sent until it hangs up (briefly): closing with unread
            // bytes would reset the connection, and the client could lose the reply
            let mut sink = [0u8; 4096];
            let drain = async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} };
            let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
            None
        }
        Ok(_) => Some(ClientStream::Plain(tcp)),
    }
}
