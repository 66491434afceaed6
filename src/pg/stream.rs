//! A connection that is plain TCP or TLS over TCP, on either side of the proxy. Both forms
//! read and write through `AsyncRead`/`AsyncWrite`; the session polls them directly, and
//! TLS streams are flushed after writes (rustls may keep ciphertext until then).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

macro_rules! stream_enum {
    ($name:ident, $tls:ty) => {
        pub enum $name {
            Plain(TcpStream),
            Tls(Box<$tls>),
            /// Transient, while a plain stream is being upgraded to TLS.
            Closed,
            /// One end of an in-memory pipe: unit tests drive sessions and servers without
            /// sockets (see `pg::memory`).
            #[cfg(test)]
            Memory(tokio::io::DuplexStream),
        }

        impl $name {
            /// The TCP connection underneath (for socket options and liveness probes).
            pub fn tcp(&self) -> Option<&TcpStream> {
                match self {
                    $name::Plain(s) => Some(s),
                    $name::Tls(s) => Some(s.get_ref().0),
                    $name::Closed => None,
                    #[cfg(test)]
                    $name::Memory(_) => None,
                }
            }

            /// An in-memory pipe (tests only), which has no socket to check.
            pub fn is_memory(&self) -> bool {
                #[cfg(test)]
                if let $name::Memory(_) = self {
                    return true;
                }
                false
            }

            pub fn is_tls(&self) -> bool {
                matches!(self, $name::Tls(_))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let kind = if self.is_tls() { "tls" } else { "plain" };
                let peer = self.tcp().and_then(|t| t.peer_addr().ok());
                write!(f, "{}({kind}, {:?})", stringify!($name), peer)
            }
        }

        impl AsyncRead for $name {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $name::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    $name::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
                    #[cfg(test)]
                    $name::Memory(s) => Pin::new(s).poll_read(cx, buf),
                    $name::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                }
            }
        }

        impl AsyncWrite for $name {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $name::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    $name::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
                    #[cfg(test)]
                    $name::Memory(s) => Pin::new(s).poll_write(cx, buf),
                    $name::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $name::Plain(s) => Pin::new(s).poll_flush(cx),
                    $name::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
                    #[cfg(test)]
                    $name::Memory(s) => Pin::new(s).poll_flush(cx),
                    $name::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $name::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    $name::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
                    #[cfg(test)]
                    $name::Memory(s) => Pin::new(s).poll_shutdown(cx),
                    $name::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                }
            }
        }
    };
}

stream_enum!(ClientStream, tokio_rustls::server::TlsStream<TcpStream>);
stream_enum!(ServerStream, tokio_rustls::client::TlsStream<TcpStream>);
