//! Subscribed mode: a client and its own link, bytes both ways until either side closes.

use super::{reserve, Session, HIGH_WATER};
use crate::pg::stream::ClientStream;
use crate::redis::budget::Lease;
use crate::redis::error::Error;
use crate::redis::resp::{self, encode::Proto};
use bytes::{Buf, BytesMut};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio_util::io::poll_read_buf;

impl Session {
    /// Subscribed mode: bytes flow both ways between the client and its link until either
    /// side closes; what the link sends goes to the client in whole frames, so that
    /// `CLIENT TRACKING` invalidations for this connection can go in between (a RESP2
    /// client receives them here, subscribed, from the client that names it in REDIRECT).
    pub(super) async fn pipe(&mut self) -> Result<(), Error> {
        let Some(mut link) = self.link.take() else {
            return Ok(());
        };
        if !self.rbuf.is_empty() {
            self.scanner.reset();
            link.send(&self.rbuf.split()).await?;
        }
        let wbuf = self.wbuf.split();
        self.write_out(&wbuf).await?;
        let mut moved = self.svc.backend.changes();
        let generation = self.pool_gen;
        let mut pipe = Pipe {
            from_link: link.take_buffered(),
            scanner: resp::Scanner::default(),
            out: BytesMut::new(),
            from_client: BytesMut::new(),
            client_unflushed: false,
            link_unflushed: false,
        };
        let Session {
            client,
            reg,
            state,
            wlease,
            closing,
            ..
        } = self;
        let (inbox, proto) = (&reg.entry.inbox, state.proto);
        let io = std::future::poll_fn(|cx| {
            pipe.poll(cx, client, &mut link.stream, inbox, proto, wlease)
        });
        tokio::select! {
            r = io => r,
            () = closing => Err(Error::Shutdown),
            // the subscription is on the old primary: hang up so the client resubscribes
            _ = moved.wait_for(|g| *g != generation) => Err(Error::LinkLost("the primary changed".into())),
        }
    }
}

/// The buffers of a subscribed client's pipe to its link.
struct Pipe {
    /// Bytes from the link not yet a whole frame.
    from_link: BytesMut,
    scanner: resp::Scanner,
    /// Whole frames (and invalidations) for the client.
    out: BytesMut,
    /// Bytes from the client for the link.
    from_client: BytesMut,
    client_unflushed: bool,
    link_unflushed: bool,
}

impl Pipe {
    /// Move bytes both ways until a side closes (`Ok`) or fails. The link's bytes wait in
    /// `from_link` only until their frame is whole, held to the client's reply budget.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut ClientStream,
        link: &mut crate::pg::stream::ServerStream,
        inbox: &crate::redis::client_tracking::Inbox,
        proto: Proto,
        lease: &mut Lease,
    ) -> Poll<Result<(), Error>> {
        let limits = resp::Limits::backend();
        loop {
            let mut progress = false;
            if self.out.len() < HIGH_WATER {
                if inbox.armed() && inbox.drain(cx, &mut self.out, proto, true) {
                    progress = true;
                }
                match recv(cx, &mut *link, &mut self.from_link)? {
                    Some(read) => progress |= read,
                    None => return Poll::Ready(Ok(())),
                }
                while let Some(n) = self
                    .scanner
                    .scan(&self.from_link, &limits)
                    .map_err(Error::Frame)?
                {
                    self.out.extend_from_slice(&self.from_link.split_to(n));
                }
                if let Err(over) = lease.set(self.from_link.len() + self.out.len()) {
                    let command = "a pub/sub message";
                    return Poll::Ready(Err(Error::ReplyBudget { command, over }));
                }
            }
            progress |= send(cx, &mut *client, &mut self.out, &mut self.client_unflushed)?;
            if self.from_client.len() < HIGH_WATER {
                match recv(cx, &mut *client, &mut self.from_client)? {
                    Some(read) => progress |= read,
                    None => return Poll::Ready(Ok(())),
                }
            }
            progress |= send(
                cx,
                &mut *link,
                &mut self.from_client,
                &mut self.link_unflushed,
            )?;
            if !progress {
                return Poll::Pending;
            }
        }
    }
}

/// Read what `from` has into `buf`: `Some(true)` when bytes came, `None` when it closed.
fn recv(
    cx: &mut Context<'_>,
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> Result<Option<bool>, Error> {
    reserve(buf);
    match poll_read_buf(Pin::new(from), cx, buf) {
        Poll::Ready(Ok(0)) => Ok(None),
        Poll::Ready(Ok(_)) => Ok(Some(true)),
        Poll::Ready(Err(e)) => Err(Error::ClientIo(e)),
        Poll::Pending => Ok(Some(false)),
    }
}

/// Write what `buf` holds to `to` (then flush it, once empty); `true` when bytes moved.
fn send(
    cx: &mut Context<'_>,
    to: &mut (impl AsyncWrite + Unpin),
    buf: &mut BytesMut,
    unflushed: &mut bool,
) -> Result<bool, Error> {
    if buf.is_empty() {
        if *unflushed {
            if let Poll::Ready(r) = Pin::new(&mut *to).poll_flush(cx) {
                r.map_err(Error::ClientIo)?;
                *unflushed = false;
            }
        }
        return Ok(false);
    }
    match Pin::new(&mut *to).poll_write(cx, buf) {
        Poll::Ready(Ok(0)) => Err(Error::ClientIo(std::io::ErrorKind::WriteZero.into())),
        Poll::Ready(Ok(n)) => {
            buf.advance(n);
            *unflushed = true;
            Ok(true)
        }
        Poll::Ready(Err(e)) => Err(Error::ClientIo(e)),
        Poll::Pending => Ok(false),
    }
}
