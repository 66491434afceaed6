//! Replication connections: `replication=true` (physical: pg_basebackup, pg_receivewal, a
//! standby) and `replication=database` (logical decoding: pg_recvlogical, Debezium,
//! postgres.js `subscribe`). They are never pooled. Once Pake has authenticated the client,
//! it gets a server connection of its own to the primary (the promoted one after a
//! failover), logged in with the pool's server credentials and the client's own startup
//! parameters, and Pake relays bytes both ways until either side closes, as PgBouncer does
//! since 1.23. What flows then (replication commands, CopyBoth streams) is the server's
//! business: Pake neither parses nor records it, so pooling, routing and insight do not
//! apply, and the server's own checks (the REPLICATION attribute, `pg_hba.conf`'s
//! `replication` lines, `max_wal_senders`) decide, with their own SQLSTATEs.

use super::cancel::CancelSlot;
use super::cluster::{Cluster, Target};
use super::error::Error;
use super::pool::PoolError;
use super::server::Server;
use super::startup::Startup;
use super::stream::ClientStream;
use tokio::io::AsyncWriteExt;

/// Log in to the primary as a replication client, with `startup`'s parameters.
pub async fn connect(cluster: &Cluster, startup: &Startup, id: u64) -> Result<Server, Error> {
    let mut target = cluster.pool(Target::Primary).target().clone();
    target.extra = startup.params.clone();
    if let Some(mode) = &startup.replication {
        target.extra.push(("replication".into(), mode.clone()));
    }
    Server::connect(id, &target)
        .await
        .map_err(|e| Error::Pool(PoolError::Connect(e)))
}

/// The client's cancel key reaches `server` whenever it comes: a replication connection
/// has no requests Pake could see start and end, so it counts as always running one (the
/// server ignores a cancel with nothing to cancel, and a walsender streaming WAL).
pub fn attach_cancel(slot: &CancelSlot, server: &Server) {
    slot.attach(server.cancel_target());
    slot.set_running(true);
}

/// How a relayed connection ended.
#[derive(Debug)]
pub enum Ended {
    /// Either side closed: bytes each way, client to server first.
    Closed(u64, u64),
    /// `pg_terminate_backend` of the pid Pake gave the client: both connections are
    /// dropped (the stream may be mid-message, so no ErrorResponse can be slipped in).
    Terminated,
}

/// Relay until either side closes or the client is terminated: what the server sent after
/// its ReadyForQuery first, then both directions at once through fixed buffers (8 KiB each
/// way: bounded whatever the stream).
pub async fn relay(
    client: &mut ClientStream,
    mut server: Server,
    slot: &CancelSlot,
) -> std::io::Result<Ended> {
    if !server.rbuf.is_empty() {
        client.write_all(&server.rbuf).await?;
        server.rbuf.clear();
    }
    let copy = tokio::io::copy_bidirectional(client, &mut server.stream);
    tokio::pin!(copy);
    loop {
        if slot.is_terminated() {
            return Ok(Ended::Terminated);
        }
        tokio::select! {
            r = &mut copy => return r.map(|(up, down)| Ended::Closed(up, down)),
            _ = slot.attention() => {} // terminated, or a phase change: looked at above
        }
    }
}
