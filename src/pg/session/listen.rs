//! Transaction mode `LISTEN`/`UNLISTEN`, answered through the database's listening
//! connection ([`crate::pg::notify`]), and the notifications it hands this session, written
//! to the client between transactions.

use super::Session;
use crate::pg::error::Error;
use crate::pg::sql::SessionEffect;
use crate::pg::wire::backend;

impl Session {
    /// A lone `LISTEN`/`UNLISTEN` between transactions: writes its CommandComplete (or an
    /// ErrorResponse when the listening connection is unavailable). `false` when the
    /// statement is not one, or the database has no listener (it goes to a server then).
    pub(super) async fn answer_listen(&mut self, effect: &SessionEffect) -> bool {
        match effect {
            SessionEffect::Listen(channel) => {
                if self.listen.is_none() {
                    let Some(listener) = self.proxy.listener(&self.database) else {
                        return false;
                    };
                    let limit = self.proxy.config().general.listen_queue_size.0 as usize;
                    self.listen = Some(listener.subscriber(limit));
                }
                let Some(sub) = self.listen.as_mut() else {
                    return false;
                };
                match sub.listen(channel).await {
                    Ok(()) => backend::command_complete(&mut self.cwbuf, "LISTEN"),
                    Err(e) => Error::Listen(e.to_string()).write(&mut self.cwbuf, false),
                }
                true
            }
            SessionEffect::Unlisten(channel) => {
                if let Some(sub) = self.listen.as_mut() {
                    sub.unlisten(channel.as_deref());
                    if !sub.is_listening() {
                        self.listen = None;
                    }
                }
                backend::command_complete(&mut self.cwbuf, "UNLISTEN");
                true
            }
            _ => false,
        }
    }

    /// Write the notifications waiting for this client (between transactions only).
    pub(super) fn deliver_notifications(&mut self) -> Result<(), Error> {
        let Some(sub) = self.listen.as_ref() else {
            return Ok(());
        };
        if self.server.is_some() {
            return Ok(());
        }
        sub.inbox.drain_into(&mut self.cwbuf).map_err(|limit| {
            self.proxy
                .metrics
                .pg_listen_dropped
                .with_label_values(&[&self.database])
                .inc();
            Error::NotificationsBehind(limit)
        })
    }
}
