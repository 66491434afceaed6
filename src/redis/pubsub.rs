//! The order of a subscription and the messages published after it; of a blocking command
//! and the writes after it.
//!
//! Directly, a client that sends `SUBSCRIBE ch` and then (without waiting for the
//! confirmation) has another connection `PUBLISH ch m` gets `m`: one Redis reads the two
//! sockets in the order they were written. Through Pake the subscription first opens a link
//! of its own to Redis (a connection, its login), while the `PUBLISH` goes at once on a
//! shared link, so it overtook the subscription: measured, 47 of 50 messages lost where
//! directly none was. (redis-rs's own suite relies on the direct order.)
//!
//! So a subscription takes a ticket here when Pake reads it, and gives it back once Redis
//! confirmed it (or it failed); a `PUBLISH`/`SPUBLISH` read while tickets are out waits until
//! every subscription that took its ticket *before* the publish was read is settled. Pake
//! keeps the order it read the two commands in, which is what Redis keeps directly. Nothing
//! is promised across two Pakes, nor by Redis across two of its own connections.
//!
//! Blocking commands (`BLPOP`, `XREADGROUP … BLOCK`…) meet the same race: sent on a link of
//! their own, they lost their place to a write read after them (16 of 20 `XREAD BLOCK … $`
//! answered out of order in Redis's own suite, a `BRPOPLPUSH` blocked for good as the
//! second blocked client took its element). So a second set of [`Openings`] holds them: a
//! blocking command whose session must open its link first takes a ticket when read and
//! gives it back once it is sent (it is answered only when it unblocks); it waits for the
//! blocking commands read before it, and a write read while tickets are out waits for those
//! read before it. A session with its link open sends at once and takes no ticket, so a
//! job queue's consumers looping on `BLPOP` never hold up its producers.
//!
//! Cost: one atomic load per publish (per write) while nothing is being opened. Bounded: one
//! ticket per session (a session has at most one command being opened), and a command
//! waits at most `limit` (the link's connect timeout), so an opening that never settles
//! delays the commands behind it, it never stops them.

use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Commands being opened on links of their own, which some commands read after them wait
/// for: subscriptions (publishes wait) or blocking commands (writes and blocking commands).
#[derive(Default)]
pub struct Openings {
    /// The next ticket to hand out.
    next: AtomicU64,
    /// Tickets out (read, not yet settled: a subscription confirmed, a blocking command sent).
    open: Mutex<BTreeSet<u64>>,
    /// `open.len()`, read without the lock on every publish.
    count: AtomicUsize,
    settled: Notify,
}

/// A command being opened; dropping it settles it.
pub struct Ticket {
    of: Arc<Openings>,
    n: u64,
}

impl Ticket {
    /// Its place in the order the commands were read.
    pub fn number(&self) -> u64 {
        self.n
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.of.open.lock();
        if open.remove(&self.n) {
            self.of.count.store(open.len(), Ordering::Release);
        }
        drop(open);
        self.of.settled.notify_waiters();
    }
}

impl Openings {
    /// A command being opened was read: the commands read from now on that must follow it
    /// wait for it.
    pub fn opening(self: &Arc<Self>) -> Ticket {
        let mut open = self.open.lock();
        let n = self.next.fetch_add(1, Ordering::AcqRel);
        open.insert(n);
        self.count.store(open.len(), Ordering::Release);
        Ticket {
            of: self.clone(),
            n,
        }
    }

    /// Something is being opened: a command read now that must follow it waits.
    pub fn busy(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// Wait until every opening read before now is settled, at most `limit`; `false` when
    /// the limit passed first.
    pub async fn settled_before_now(&self, limit: Duration) -> bool {
        let upto = self.next.load(Ordering::Acquire);
        self.settled_before(upto, limit).await
    }

    /// Wait until every ticket numbered below `upto` is settled, at most `limit`; `false`
    /// when the limit passed first.
    pub async fn settled_before(&self, upto: u64, limit: Duration) -> bool {
        let wait = async {
            loop {
                let settled = self.settled.notified();
                tokio::pin!(settled);
                settled.as_mut().enable();
                if self.open.lock().first().is_none_or(|&n| n >= upto) {
                    return;
                }
                settled.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_publish_waits_for_subscriptions_read_before_it_only() {
        let subs = Arc::new(Openings::default());
        let limit = Duration::from_secs(5);
        assert!(!subs.busy());
        assert!(subs.settled_before_now(limit).await);
        let first = subs.opening();
        assert!(subs.busy());
        let s = subs.clone();
        let publish = tokio::spawn(async move { s.settled_before_now(limit).await });
        tokio::task::yield_now().await;
        // a subscription read after the publish does not hold it
        let later = subs.opening();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!publish.is_finished());
        drop(first);
        assert_eq!(publish.await.ok(), Some(true));
        assert!(subs.busy());
        drop(later);
        assert!(!subs.busy());
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_waits_for_those_read_before_it_not_for_itself() {
        let blocking = Arc::new(Openings::default());
        let limit = Duration::from_secs(5);
        let first = blocking.opening();
        let second = blocking.opening();
        let b = blocking.clone();
        let n = second.number();
        let waiting = tokio::spawn(async move { b.settled_before(n, limit).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished(), "the first is still out");
        drop(first);
        assert_eq!(waiting.await.ok(), Some(true));
        assert!(blocking.settled_before(second.number(), limit).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscription_that_never_settles_delays_a_publish_by_the_limit() {
        let subs = Arc::new(Openings::default());
        let _stuck = subs.opening();
        let start = tokio::time::Instant::now();
        assert!(!subs.settled_before_now(Duration::from_secs(2)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
