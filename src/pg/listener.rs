//! The Postgres listener: accept, admit (`max_client_conn`), log in, and run one session
//! task per client. Accept errors (out of file descriptors…) back off instead of spinning.

use super::error::Error;
use super::login::{login, open, read_startup, Login, Opening, Peer};
use super::proxy::{Phase, Proxy};
use super::session::Session;
use super::stream::ClientStream;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

/// Bind with SO_REUSEADDR and SO_REUSEPORT, so a new Pake can start beside the old one.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accept clients until the proxy starts draining.
pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener) {
    let mut phase = proxy.phase();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = phase.wait_for(|p| *p != Phase::Running) => {
                tracing::info!("Postgres listener stopped accepting");
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let proxy = proxy.clone();
                let id = proxy.next_client_id();
                let local = stream.local_addr().unwrap_or(peer);
                let peer = Peer {
                    id,
                    addr: peer,
                    local,
                };
                tokio::spawn(handle(proxy, stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn handle(proxy: Arc<Proxy>, tcp: TcpStream, peer: Peer) {
    let _ = tcp.set_nodelay(true);
    let mut stream = ClientStream::Plain(tcp);
    let _admitted = match proxy.admit() {
        Ok(guard) => guard,
        Err(max) => {
            // read the startup packet first so the client is ready to hear the error
            let limit = Duration::from_secs(1);
            let _ = tokio::time::timeout(limit, read_startup(&mut stream)).await;
            reject(&proxy, &mut stream, Error::TooManyClients(max)).await;
            return;
        }
    };
    let login_timeout = proxy.config().pool.client_login_timeout;
    let deadline = tokio::time::Instant::now() + login_timeout.0;
    let opened = match tokio::time::timeout_at(deadline, open(&proxy, &mut stream)).await {
        Ok(r) => r,
        Err(_) => Err(Error::LoginTimeout(login_timeout)),
    };
    match opened {
        Ok(Opening::Startup(startup, buf)) => {
            let span = peer.span();
            serve_client(&proxy, stream, peer, *startup, buf, deadline)
                .instrument(span)
                .await
        }
        Ok(Opening::Cancel { pid, secret }) => {
            let outcome = proxy.cancel.cancel(pid, secret).await;
            let label = outcome.label();
            proxy
                .metrics
                .cancel_requests
                .with_label_values(&[label])
                .inc();
        }
        Err(e) => {
            // the span only for this line: a connection that never sent a startup packet
            // holds none while it waits (see `Peer::span`)
            peer.span().in_scope(|| login_failed(&proxy, &e));
            reject(&proxy, &mut stream, e).await;
        }
    }
}

/// A client that sent its StartupMessage: authenticate it by `deadline`, then run its
/// session (or the admin console).
async fn serve_client(
    proxy: &Arc<Proxy>,
    mut stream: ClientStream,
    peer: Peer,
    startup: super::startup::Startup,
    buf: BytesMut,
    deadline: tokio::time::Instant,
) {
    let login_timeout = proxy.config().pool.client_login_timeout;
    let outcome = match tokio::time::timeout_at(
        deadline,
        login(proxy, &mut stream, peer, startup, buf),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(Error::LoginTimeout(login_timeout)),
    };
    match outcome {
        Ok(Login::Client(login)) => {
            let _user_guard = match proxy.admit_user(&login.user) {
                Ok(g) => g,
                Err(max) => {
                    proxy.cancel.unregister(login.cancel.pid);
                    let user = login.user.config.name.clone();
                    reject(
                        proxy,
                        &mut stream,
                        Error::TooManyUserConnections { user, max },
                    )
                    .await;
                    return;
                }
            };
            proxy.metrics.client_logins.with_label_values(&["ok"]).inc();
            tracing::debug!(user = %login.startup.user, database = %login.startup.database, "client logged in");
            let Some(cluster) = login.cluster.clone() else {
                return;
            };
            let _ = Session::new(peer.id, proxy.clone(), stream, cluster, *login)
                .run()
                .await;
        }
        Ok(Login::Console(login)) => {
            proxy.metrics.client_logins.with_label_values(&["ok"]).inc();
            tracing::info!(user = %login.startup.user, "admin console session");
            let pid = login.cancel.pid;
            if let Err(e) = super::console::run(proxy.clone(), stream).await {
                tracing::debug!(error = %e, "console session ended");
            }
            proxy.cancel.unregister(pid);
        }
        Err(e) => {
            login_failed(proxy, &e);
            reject(proxy, &mut stream, e).await;
        }
    }
}

/// Count and log a login that failed (the caller is in the client's span).
fn login_failed(proxy: &Proxy, e: &Error) {
    proxy
        .metrics
        .client_logins
        .with_label_values(&["failed"])
        .inc();
    tracing::info!(error = %e, sqlstate = e.sqlstate().code(), "client login failed");
}

/// Tell a client why it is turned away (FATAL) and close.
async fn reject(proxy: &Proxy, stream: &mut ClientStream, e: Error) {
    if !e.reaches_client() {
        return;
    }
    proxy
        .metrics
        .client_errors
        .with_label_values(&[e.sqlstate().code()])
        .inc();
    let mut out = BytesMut::new();
    e.write(&mut out, true);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    })
    .await;
}
