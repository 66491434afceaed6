//! The Redis listener: accept, admit (`max_clients`), and run one session task per client.
//! Accept errors (out of file descriptors…) back off instead of spinning.

use super::error::Error;
use super::resp::encode;
use super::session::Session;
use super::Service;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tracing::Instrument;

/// Accept clients until the service starts draining.
pub async fn serve(svc: Arc<Service>, listener: TcpListener) {
    let mut closing = svc.closing();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = closing.wait_for(|c| *c) => {
                tracing::info!("Redis listener stopped accepting");
                return;
            }
        };
        match accepted {
            Ok((mut stream, peer)) => {
                backoff = Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                let svc = svc.clone();
                let id = svc.next_client_id();
                let span = tracing::info_span!("redis_client", id, peer = %peer);
                tokio::spawn(
                    async move {
                        let Some(_guard) = svc.admit() else {
                            let mut out = BytesMut::new();
                            encode::error(&mut out, &Error::TooManyClients.reply());
                            let _ = stream.write_all(&out).await;
                            return;
                        };
                        Session::new(id, svc.clone(), stream).run().await;
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
