//! Getting a server and giving it back.
//!
//! * [`Session::attach`]: check out, sync session parameters (one injected `SET`, its
//!   replies swallowed), arm cancellation.
//! * [`Session::release_if_done`]: in transaction mode, at a boundary (nothing owed, idle),
//!   return the server — through a reset first if the client left session state on it.
//! * [`Session::finish`]: when the client leaves or fails, tell it why, then recover the
//!   server in the background (cancel, drain, ROLLBACK, reset) or close it if its state is
//!   unknown. A server never returns to the pool dirty.

use super::Session;
use crate::config::PoolMode;
use crate::pg::cancel::state;
use crate::pg::cluster::Target;
use crate::pg::error::{Error, Source};
use crate::pg::pool::{Pool, PoolError};
use crate::pg::server::replies::Expect;
use crate::pg::server::Server;
use postgres_protocol::message::frontend;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// How long recovering a server left behind may take before it is closed instead.
const RECOVER_LIMIT: Duration = Duration::from_secs(10);

impl Session {
    /// Check out a server on `target`; a replica that cannot be reached is banned and the
    /// request tries the next one, then the primary (nothing has reached the client yet).
    pub(super) async fn attach_routed(&mut self, mut target: Target) -> Result<(), Error> {
        for _ in 0..self.cluster.replicas.len() {
            match self.attach(target).await {
                Err(e) if target != Target::Primary && e.connect_failure().is_some() => {
                    if let Some(r) = self.cluster.replica_state(target) {
                        r.healthy.store(false, std::sync::atomic::Ordering::Relaxed);
                        self.cluster.topology.ban(r, &e.to_string());
                    }
                    target = match self.cluster.topology.choose(self.routing.min_lsn) {
                        Some(r) => Target::Replica(r.index),
                        None => Target::Primary,
                    };
                }
                other => return other,
            }
        }
        self.attach(target).await
    }

    async fn attach(&mut self, mut target: Target) -> Result<(), Error> {
        let mut pool = self.cluster.pool(target).clone();
        self.cancel.start_waiting();
        let waiting = Instant::now();
        let cancel = self.cancel.clone();
        let mut checkout = pool.checkout_until(cancel.wait_canceled()).await;
        if checkout.as_ref().is_err_and(PoolError::is_closed)
            && self.proxy.generation() != self.cluster_gen
        {
            // a RELOAD replaced the pools between the session's look and its checkout: the
            // new primary pool takes the request (nothing has been sent anywhere yet)
            self.refresh_cluster()?;
            target = Target::Primary;
            pool = self.cluster.pool(target).clone();
            checkout = pool.checkout_until(cancel.wait_canceled()).await;
        }
        let mut server = match checkout {
            Ok(s) => s,
            Err(e) => {
                self.cancel.set_state(state::IDLE);
                return Err(e.into());
            }
        };
        // another client's unnamed Parses, answered here after it left, are not this one's
        server.replies.own_unnamed.clear();
        self.pending_settings.attached();
        self.cancel.set_state(state::ACTIVE);
        self.attached_at = Instant::now();
        self.wait_to_report = self.attached_at.duration_since(waiting);
        if let Some(sql) = server.params.sync_sql(&self.params) {
            if frontend::query(&sql, &mut server.wbuf).is_ok() {
                server.unnamed_owner = None; // a Query destroys the unnamed statement
                server.replies.push(Expect::Ready {
                    swallow: true,
                    stmt: false,
                });
            }
        }
        if let Some(begin) = self.routing.pending_begin.take() {
            // the deferred BEGIN opens the transaction on the server its statements chose
            if frontend::query(&begin.text, &mut server.wbuf).is_ok() {
                server.unnamed_owner = None;
                server.replies.push(Expect::Ready {
                    swallow: true,
                    stmt: false,
                });
            }
        }
        let held = server.cancel_target();
        if self.mode == PoolMode::Session {
            self.proxy.cancel.hold(&held, self.cancel.pid);
        }
        self.cancel.attach(held);
        if let Some(l) = self.notify.as_deref().filter(|l| l.active()) {
            l.note_server(server.key.pid, self.cancel.pid);
        }
        if let Some(r) = self.cluster.replica_state(target) {
            r.outstanding
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        pool.metrics.routed.inc();
        tracing::debug!(target = %pool.target_name, "routed");
        self.server = Some(server);
        self.server_target = target;
        Ok(())
    }

    /// The attached server is leaving the session.
    fn detach(&mut self) -> Option<(Box<Server>, Arc<Pool>)> {
        let server = self.server.take()?;
        let target = self.server_target;
        if let Some(r) = self.cluster.replica_state(target) {
            r.outstanding
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let canceled = self.cancel.detach();
        self.cancel.set_state(state::IDLE);
        let pool = self.cluster.pool(target).clone();
        pool.metrics
            .transaction_seconds
            .inc_by(self.attached_at.elapsed().as_secs_f64());
        self.flush_tally(&pool);
        if canceled {
            // the cancel's signal may still be on its way to the backend: reused, the
            // server could cancel the next client's statement instead
            tracing::debug!(
                server = server.id,
                "closing a server a cancel request went to"
            );
            pool.discard(server);
            return None;
        }
        Some((server, pool))
    }

    /// After a RELOAD, take the (database, user) pools of the new configuration; called
    /// between transactions only. A database or user the reload removed ends the session.
    pub(super) fn refresh_cluster(&mut self) -> Result<(), Error> {
        self.cluster_gen = self.proxy.generation();
        // the [otlp] section may have changed too; the pools may be new
        self.otlp = super::trace::Otlp::renew(self.otlp.take(), self.proxy.otlp());
        let removed = || Error::Removed {
            database: self.database().to_owned(),
            user: self.user().to_owned(),
        };
        let user = self.user_entry().ok_or_else(removed)?;
        let cluster = self
            .proxy
            .cluster(self.database(), &user)
            .ok_or_else(removed)?;
        if Arc::ptr_eq(&cluster, &self.cluster) {
            return Ok(());
        }
        if let (Some(old), Some(new)) = (&self.cluster.passthrough, &cluster.passthrough) {
            // new pools of an auth_query user: their servers log in with the key it proved
            new.adopt(old);
        }
        use std::sync::atomic::Ordering::Relaxed;
        self.pool.clients.fetch_sub(1, Relaxed);
        cluster.primary.clients.fetch_add(1, Relaxed);
        self.pool = cluster.primary.clone();
        self.cluster = cluster;
        Ok(())
    }

    /// Transaction mode: hand the server back at a transaction boundary. `Some` when the
    /// transaction may have notified while someone listens: the client then waits for the
    /// listener ([`Session::release_after_notifications`]).
    pub(super) fn release_if_done(&mut self) -> Option<HeldForNotifications> {
        if self.mode != PoolMode::Transaction
            || !self.server.as_deref().is_some_and(Server::is_idle)
            || self.pinned()
        {
            return None;
        }
        self.on_transaction_end(self.server_target);
        let notified = std::mem::take(&mut self.may_notify);
        let (server, pool) = self.detach()?;
        match self.notify.clone().filter(|l| notified && l.active()) {
            // The transaction may have notified while someone listens through Pake. Until
            // the listener has received what it sent: the server stays with this client (the
            // listener names a notification's sender by the client that holds the server it
            // came from), and so does the client's ReadyForQuery — a server delivers its own
            // session's notifications before it (psycopg's and pgjdbc's handlers count on
            // that), and a client told its NOTIFY is done may tell another to look
            Some(listener) => Some(HeldForNotifications {
                listener,
                server,
                pool,
            }),
            None => {
                release(&pool, server);
                None
            }
        }
    }

    /// The listener has received everything committed so far (at most its timeout when it
    /// is lost); the server goes back, and the client gets its ReadyForQuery
    /// ([`Session::ready_after`]).
    pub(super) async fn release_after_notifications(
        &mut self,
        held: HeldForNotifications,
    ) -> Result<(), Error> {
        let result = self.ready_after(&held.listener).await;
        release(&held.pool, held.server);
        result
    }

    /// Add the session's counters to the metrics of `pool`.
    pub(super) fn flush_tally(&mut self, pool: &Pool) {
        let t = std::mem::take(&mut self.tally);
        let m = &pool.metrics;
        if t.queries > 0 {
            m.queries.inc_by(t.queries);
        }
        if t.transactions > 0 {
            m.transactions.inc_by(t.transactions);
        }
        if t.received > 0 {
            m.client_received_bytes.inc_by(t.received);
        }
        if t.sent > 0 {
            m.client_sent_bytes.inc_by(t.sent);
        }
    }

    /// The session is over: report the error (if any) and deal with the server.
    pub(super) async fn finish(&mut self, result: &Result<(), Error>) {
        // a transaction left open still gets its span, marked as cut short
        self.trace_end(true);
        if let Err(e) = result {
            if e.reaches_client() {
                self.proxy
                    .metrics
                    .client_errors
                    .with_label_values(&[e.sqlstate().code()])
                    .inc();
                e.write(&mut self.cwbuf, true);
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = self.client.write_all(&self.cwbuf).await;
                    let _ = self.client.shutdown().await;
                })
                .await;
                self.cwbuf.clear();
                tracing::info!(error = %e, sqlstate = e.sqlstate().code(), "client session ended with an error");
            } else if e.is_server_farewell() {
                // the server's own FATAL is already in the client's buffer
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = self.client.write_all(&self.cwbuf).await;
                    let _ = self.client.shutdown().await;
                })
                .await;
                tracing::debug!(error = %e, "the server ended the client's session");
            } else {
                tracing::debug!(error = %e, "client went away");
            }
        }
        let Some((mut server, pool)) = self.detach() else {
            let primary = self.pool.clone();
            self.flush_tally(&primary);
            return;
        };
        if std::mem::take(&mut server.ddl) {
            // a transaction with DDL left open: its rollback may take away what statements
            // prepared in it name
            self.proxy.statements.forget_all();
        }
        let server_failed = matches!(result, Err(e) if e.source() == Source::Server);
        if server_failed {
            if let Err(e) = result {
                pool.record_server_failure(&e.to_string());
            }
            pool.discard(server);
            return;
        }
        if self.mode == PoolMode::Transaction && server.is_idle() && server.dirty.is_none() {
            pool.checkin(server);
            return;
        }
        let reset = (self.mode == PoolMode::Session || server.dirty.is_some())
            .then(|| pool.settings().defaults.server_reset_query.clone());
        tokio::spawn(recover(pool, server, reset));
    }
}

/// Return a server at a transaction boundary: straight to the pool when clean, through the
/// reset query (in the background) when a client left session state on it.
/// A server detached at a transaction boundary, kept until the listener has what the
/// transaction notified ([`Session::release_if_done`]).
pub(super) struct HeldForNotifications {
    listener: Arc<crate::pg::notify::Listener>,
    server: Box<Server>,
    pool: Arc<Pool>,
}

fn release(pool: &Arc<Pool>, server: Box<Server>) {
    match server.dirty {
        None => pool.checkin(server),
        Some(reason) => {
            tracing::debug!(server = server.id, reason, "resetting server before reuse");
            let reset = Some(pool.settings().defaults.server_reset_query.clone());
            tokio::spawn(recover(pool.clone(), server, reset));
        }
    }
}

async fn recover(pool: Arc<Pool>, mut server: Box<Server>, reset: Option<String>) {
    match server.recover(reset.as_deref(), RECOVER_LIMIT).await {
        // a dirty server whose reset did not run (empty server_reset_query) is closed
        Ok(()) if server.is_idle() && server.dirty.is_none() => pool.checkin(server),
        Ok(()) => pool.discard(server),
        Err(e) => {
            tracing::info!(server = server.id, error = %e, "server not reusable; closing it");
            pool.discard(server);
        }
    }
}
