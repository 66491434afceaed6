//! The Postgres listener: accept, admit (`max_client_conn`), log in, and run one session
//! task per client. Accept errors (out of file descriptors…) back off instead of spinning.

use super::error::Error;
use super::login::{login, open, read_startup, Login, Opening, Peer};
use super::proxy::{ClientGuard, Phase, Proxy, UserGuard};
use super::session::Session;
use super::stream::ClientStream;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
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

/// Does something already accept connections on `addr` (a fixed port)? With SO_REUSEPORT
/// the bind succeeds anyway and the kernel splits new connections between the two
/// processes: right for a rolling restart, a trap otherwise (a CancelRequest landing on the
/// process that does not hold its client is lost unless `[peering]` links them).
pub fn already_listening(addr: SocketAddr) -> bool {
    addr.port() != 0
        && std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
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
                let _ = stream.set_nodelay(true);
                tokio::spawn(handle(proxy, ClientStream::Plain(stream), peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// One accepted client, from its first byte to its last.
pub(super) async fn handle(proxy: Arc<Proxy>, mut stream: ClientStream, peer: Peer) {
    let admitted = match proxy.admit() {
        Ok(guard) => guard,
        Err(max) => {
            // boxed: inline, the borrowed stream of this path adds 64 bytes to every task
            Box::pin(async {
                // read the startup packet first so the client is ready to hear the error
                let limit = Duration::from_secs(1);
                let _ = tokio::time::timeout(limit, read_startup(&mut stream)).await;
                reject(&proxy, &mut stream, Error::TooManyClients(max)).await;
            })
            .await;
            return;
        }
    };
    // Boxed, and gone once the client is in: the task of an idle client holds only what its
    // session needs, not the largest state the login ever went through.
    let Some((next, span)) = Box::pin(welcome(&proxy, stream, peer)).await else {
        return;
    };
    match next {
        Next::Session { session, user } => {
            tokio::spawn(session_task(session, admitted, user).instrument(span));
        }
        Next::Replication {
            mut stream,
            server,
            cancel,
            user,
        } => {
            let _held = (admitted, user);
            async {
                match super::replication::relay(&mut stream, *server, &cancel).await {
                    Ok(ended) => tracing::info!(?ended, "replication connection ended"),
                    Err(e) => tracing::info!(error = %e, "replication connection ended"),
                }
                proxy.cancel.unregister(cancel.pid);
            }
            .instrument(span)
            .await;
        }
        Next::Console { stream, pid } => {
            let _admitted = admitted;
            async {
                if let Err(e) = super::console::run(proxy.clone(), stream).await {
                    tracing::debug!(error = %e, "console session ended");
                }
                proxy.cancel.unregister(pid);
            }
            .instrument(span)
            .await;
        }
    }
}

/// A logged-in client's session, in a task of its own: the task that logged it in ends
/// there, and what that task held beside the session (its arguments, the stream before
/// login, the login's results: 448 bytes in release) is not carried by every idle client.
/// The guards keep its places under `max_client_conn` and `max_user_connections`.
async fn session_task(session: Box<Session>, _admitted: ClientGuard, _user: UserGuard) {
    let _ = session.run().await;
}

/// What a client that got in goes on to.
enum Next {
    Session {
        session: Box<Session>,
        /// Its place under the user's `max_user_connections`, for as long as it stays.
        user: UserGuard,
    },
    Console {
        stream: ClientStream,
        pid: i32,
    },
    /// Relayed to a server of its own (`super::replication`).
    Replication {
        stream: ClientStream,
        server: Box<super::server::Server>,
        cancel: Arc<super::cancel::CancelSlot>,
        user: UserGuard,
    },
}

/// Read the opening packet and log the client in by `client_login_timeout`; a cancel request
/// or a failed login ends here. The span is the client's, for the rest of its life.
async fn welcome(
    proxy: &Arc<Proxy>,
    mut stream: ClientStream,
    peer: Peer,
) -> Option<(Next, tracing::Span)> {
    let login_timeout = proxy.config().pool.client_login_timeout;
    let deadline = tokio::time::Instant::now() + login_timeout.0;
    let opened = match tokio::time::timeout_at(deadline, open(proxy, &mut stream)).await {
        Ok(r) => r,
        Err(_) => Err(Error::LoginTimeout(login_timeout)),
    };
    let (startup, buf) = match opened {
        Ok(Opening::Startup(startup, buf)) => (startup, buf),
        Ok(Opening::Cancel { pid, secret }) => {
            let outcome = proxy.cancel.cancel(pid, secret).await;
            let label = outcome.label();
            proxy
                .metrics
                .cancel_requests
                .with_label_values(&[label])
                .inc();
            return None;
        }
        Err(e) => {
            // the span only for this line: a connection that never sent a startup packet
            // holds none while it waits (see `Peer::span`)
            peer.span().in_scope(|| login_failed(proxy, &e));
            reject(proxy, &mut stream, e).await;
            return None;
        }
    };
    let span = peer.span();
    let next = log_in(proxy, stream, peer, *startup, buf, deadline)
        .instrument(span.clone())
        .await?;
    Some((next, span))
}

/// A client that sent its StartupMessage: authenticate it by `deadline`; what it goes on
/// to, or `None` when it was turned away.
async fn log_in(
    proxy: &Arc<Proxy>,
    mut stream: ClientStream,
    peer: Peer,
    startup: super::startup::Startup,
    buf: BytesMut,
    deadline: tokio::time::Instant,
) -> Option<Next> {
    let login_timeout = proxy.config().pool.client_login_timeout;
    let id = peer.id;
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
        Ok(Login::Client(login, user)) => {
            proxy.metrics.client_logins.with_label_values(&["ok"]).inc();
            tracing::debug!(user = %login.startup.user, database = %login.startup.database, "client logged in");
            let cluster = login.cluster.clone()?;
            // on the heap: the task's future would otherwise hold it twice (the argument of
            // `run` and the local it moves into)
            let session = Box::new(Session::new(id, proxy.clone(), stream, cluster, *login));
            Some(Next::Session { session, user })
        }
        Ok(Login::Replication(login, server, user)) => {
            proxy.metrics.client_logins.with_label_values(&["ok"]).inc();
            tracing::info!(user = %login.startup.user, database = %login.startup.database,
                replication = ?login.startup.replication, "replication connection");
            Some(Next::Replication {
                stream,
                server,
                cancel: login.cancel.clone(),
                user,
            })
        }
        Ok(Login::Console(login)) => {
            proxy.metrics.client_logins.with_label_values(&["ok"]).inc();
            tracing::info!(user = %login.startup.user, "admin console session");
            let pid = login.cancel.pid;
            Some(Next::Console { stream, pid })
        }
        Err(e) => {
            login_failed(proxy, &e);
            reject(proxy, &mut stream, e).await;
            None
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Found running asyncpg's suite against two Pakes left on one port by mistake: the
    /// kernel split the clients, and 5 of 8 cancels reached the process without the
    /// client. A second Pake on a taken port now says so at start.
    #[test]
    fn a_port_another_process_listens_on_is_noticed() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = first.local_addr().expect("addr");
        assert!(already_listening(addr));
        drop(first);
        assert!(!already_listening(addr));
        assert!(!already_listening("127.0.0.1:0".parse().expect("addr")));
    }

    /// The size of what an async fn returns, without calling it.
    fn future_size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn serve_size<'a, F>(_: fn(&'a mut Session) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn run_size<F>(_: fn(Box<Session>) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle client is one task: its future is sized for the largest state it can be
    /// in, so what only logging in needs (the login, the opening packet, the accepting
    /// task's own state) must not live in it, nor what only some requests or clients need
    /// (starting a request, the idle timer, a listener's inbox). Measured in release: 6,048
    /// bytes at first, 1,192 with the login boxed, 336 in a task of its own with the
    /// request's start, the farewell, the timer and the inbox boxed and one wake-up for
    /// terminate and drain.
    #[test]
    fn an_idle_clients_task_holds_the_session_not_the_login() {
        let task = future_size(session_task);
        let login = future_size(handle);
        let welcome = future_size(welcome);
        let run = run_size(Session::run);
        // the login's state (5 KB here) is boxed for the login only
        assert!(
            login < welcome,
            "the accepting task {login} B holds the login's {welcome} B"
        );
        // the session's task is the session's future, its two guards and its arguments
        assert!(
            task <= run + 128,
            "task {task} B, the session's future {run} B"
        );
        // under a kilobyte in any build (336 bytes in release)
        assert!(task < 1024, "task {task} B");
        // and the session's state is on the heap, not held in the future beside its loop
        let serve = serve_size(Session::serve);
        assert!(
            run < serve + std::mem::size_of::<Session>(),
            "run {run} B: the loop's {serve} B and a Session"
        );
    }
}
