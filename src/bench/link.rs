//! A simulated network link for the load tests (never in the proxy): a user-space TCP relay
//! in front of a server that delays every chunk by a one-way latency and paces it to a
//! bandwidth, in both directions — Toxiproxy's latency toxic in spirit. Redis is rarely on
//! the same host as its clients; with Redis behind a 250 µs link, a cache in the proxy pays
//! what it pays in production.
//!
//! Each chunk read is stamped with the time it may be delivered (`read time + the time to
//! serialise it behind earlier chunks at the bandwidth + the delay`) and queued; the writer
//! sleeps until that time. Many chunks are in flight at once, so throughput is limited by
//! the bandwidth, not by the delay. The queue per direction is bounded in bytes: a reader
//! that gets ahead waits (and TCP pushes back on the sender) instead of buffering more.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// `[link]` of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    /// One-way delay, microseconds (a round trip costs twice this).
    pub delay_us: u64,
    /// Bandwidth per direction per connection, megabits per second; unlimited when absent.
    #[serde(default)]
    pub bandwidth_mbit: Option<f64>,
}

impl LinkSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.delay_us > 10_000_000 {
            return Err("delay_us: at most 10 s".into());
        }
        if self.bandwidth_mbit.is_some_and(|b| b.is_nan() || b <= 0.0) {
            return Err("bandwidth_mbit: must be positive".into());
        }
        Ok(())
    }

    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us)
    }

    /// Time to put `bytes` on the wire.
    fn serialise(&self, bytes: usize) -> Duration {
        match self.bandwidth_mbit {
            Some(mbit) => Duration::from_secs_f64(bytes as f64 * 8.0 / (mbit * 1e6)),
            None => Duration::ZERO,
        }
    }
}

/// Largest chunk read at once.
const CHUNK: usize = 16 << 10;
/// Bytes in flight per direction of one connection.
pub const MAX_IN_FLIGHT: usize = 256 << 10;

/// A running relay; stops accepting (and drops its connections) on drop.
pub struct Relay {
    /// Where clients connect instead of the server.
    pub addr: SocketAddr,
    /// Most bytes queued in one direction of one connection so far (for tests).
    peak: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listen on a free loopback port and relay every connection to `upstream`.
    pub async fn start(upstream: SocketAddr, link: LinkSettings) -> std::io::Result<Relay> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let peak = Arc::new(AtomicUsize::new(0));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let p = p.clone();
                conns.spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, link, p).await;
                    }
                });
                // reap finished connections so the set does not grow with every accept
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Relay { addr, peak, task })
    }

    pub fn peak_in_flight(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // aborting the accept loop drops its JoinSet, which aborts every connection
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, link: LinkSettings, peak: Arc<AtomicUsize>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pipe(cr, sw, link, peak.clone());
    let down = pipe(sr, cw, link, peak);
    // each direction ends on its own (EOF read, queue drained, write side shut), so a
    // half-closed connection still delivers the answer to the request before it
    tokio::join!(up, down);
}

/// One direction: read chunks, stamp them, deliver each at its time.
async fn pipe<R, W>(mut from: R, mut to: W, link: LinkSettings, peak: Arc<AtomicUsize>)
where
    R: AsyncReadExt + Unpin + Send + 'static,
    W: AsyncWriteExt + Unpin + Send + 'static,
{
    let budget = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>, OwnedSemaphorePermit)>();
    let reader = async move {
        let mut wire_free = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.truncate(n);
            // chunk sizes are ≤ CHUNK ≤ MAX_IN_FLIGHT, so the permit always exists
            let Ok(permit) = budget.clone().acquire_many_owned(n as u32).await else {
                return;
            };
            let in_flight = MAX_IN_FLIGHT - budget.available_permits();
            peak.fetch_max(in_flight, Ordering::Relaxed);
            let now = Instant::now();
            wire_free = wire_free.max(now) + link.serialise(n);
            if tx.send((wire_free + link.delay(), buf, permit)).is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, buf, permit)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&buf).await.is_err() {
                return;
            }
            drop(permit);
        }
        let _ = to.shutdown().await;
    };
    // the writer drains what the reader queued before a half-close
    let (_, _) = tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    fn link(delay_us: u64) -> LinkSettings {
        LinkSettings {
            delay_us,
            bandwidth_mbit: None,
        }
    }

    #[tokio::test]
    async fn a_round_trip_pays_the_delay_both_ways() {
        let relay = Relay::start(echo_server().await, link(20_000))
            .await
            .unwrap();
        let mut c = TcpStream::connect(relay.addr).await.unwrap();
        for _ in 0..3 {
            let began = StdInstant::now();
            c.write_all(b"ping").await.unwrap();
            let mut back = [0u8; 4];
            c.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"ping");
            // a lower bound only: the relay sleeps at least 20 ms each way
            assert!(
                began.elapsed() >= Duration::from_millis(40),
                "{:?}",
                began.elapsed()
            );
        }
    }

    #[tokio::test]
    async fn bytes_arrive_whole_and_in_order() {
        let relay = Relay::start(
            echo_server().await,
            LinkSettings {
                delay_us: 200,
                bandwidth_mbit: Some(2000.0),
            },
        )
        .await
        .unwrap();
        let c = TcpStream::connect(relay.addr).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "the bytes changed on the way");
        assert!(relay.peak_in_flight() <= MAX_IN_FLIGHT);
    }

    #[tokio::test]
    async fn a_stalled_receiver_bounds_what_the_relay_holds() {
        // a server that accepts and never reads
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let relay = Relay::start(addr, link(100)).await.unwrap();
        let mut c = TcpStream::connect(relay.addr).await.unwrap();
        let chunk = vec![b'x'; 1 << 20];
        // 64 MiB cannot all go anywhere: the writes must stall well before
        let stalled = tokio::time::timeout(Duration::from_secs(2), async {
            for _ in 0..64 {
                c.write_all(&chunk).await.unwrap();
            }
        })
        .await
        .is_err();
        assert!(
            stalled,
            "64 MiB went through a relay to a server that never reads"
        );
        assert!(
            relay.peak_in_flight() <= MAX_IN_FLIGHT,
            "{}",
            relay.peak_in_flight()
        );
        assert!(relay.peak_in_flight() > 0);
        hold.abort();
    }

    #[test]
    fn bandwidth_paces_chunks() {
        let l = LinkSettings {
            delay_us: 0,
            bandwidth_mbit: Some(8.0),
        };
        assert_eq!(l.serialise(1_000_000), Duration::from_secs(1));
        assert_eq!(link(5).serialise(1_000_000), Duration::ZERO);
        assert!(LinkSettings {
            delay_us: 1,
            bandwidth_mbit: Some(0.0)
        }
        .validate()
        .is_err());
    }
}
