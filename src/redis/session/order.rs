//! The order of a cluster session's redirected commands.
//!
//! A command a node did not run (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) is sent again from its
//! future, once its reply is in. Futures are woken in the order their replies arrive, but
//! not always *polled* in that order (tokio's cooperative budget sends a future that ran
//! out of it to the back of the session's queue), so two redirected commands for one key
//! could be re-sent in the wrong order: measured, a pipelined `SET k v2; MGET k` answered
//! `v1`. So each command sent on a link takes a ticket here, in the order it was queued;
//! a redirected one re-sends only once every command queued before it is *settled* (it has
//! its final answer), and it settles itself only when it has its own. Commands that are not
//! redirected settle as soon as their reply is in and never wait.
//!
//! Bounded: one flag per command of the session on a link and not yet settled (at most the
//! session's pending limit, times the parts of a fan-out).

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Order {
    state: Mutex<State>,
    settled: Notify,
}

#[derive(Default)]
struct State {
    /// Ticket of `open[0]`.
    base: u64,
    /// `true` for a ticket not yet settled, from `base` on.
    open: VecDeque<bool>,
    /// Redirected commands waiting for their turn.
    waiting: usize,
}

/// A command's place in the session's order; settled when dropped.
pub struct Ticket {
    order: Arc<Order>,
    n: u64,
}

impl Order {
    /// A ticket for a command being queued now.
    pub fn take(self: &Arc<Self>) -> Ticket {
        let mut s = self.state.lock();
        let n = s.base + s.open.len() as u64;
        s.open.push_back(true);
        Ticket {
            order: self.clone(),
            n,
        }
    }
}

impl Ticket {
    /// Wait until every command queued before this one is settled.
    pub async fn turn(&self) {
        let order = &self.order;
        loop {
            let notified = order.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = order.state.lock();
                if s.base >= self.n {
                    return;
                }
                s.waiting += 1;
            }
            notified.await;
            order.state.lock().waiting -= 1;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let wake = {
            let mut s = self.order.state.lock();
            let Some(i) = self.n.checked_sub(s.base) else {
                return;
            };
            if let Some(flag) = s.open.get_mut(i as usize) {
                *flag = false;
            }
            let mut advanced = false;
            while s.open.front() == Some(&false) {
                s.open.pop_front();
                s.base += 1;
                advanced = true;
            }
            advanced && s.waiting > 0
        };
        if wake {
            self.order.settled.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_ticket_waits_for_every_earlier_one_only() {
        let order = Arc::new(Order::default());
        let first = order.take();
        let second = order.take();
        let third = order.take();
        // the first never waits
        first.turn().await;
        let waiting = tokio::time::timeout(Duration::from_millis(20), third.turn()).await;
        assert!(waiting.is_err(), "third went before second settled");
        drop(first);
        let waiting = tokio::time::timeout(Duration::from_millis(20), third.turn()).await;
        assert!(waiting.is_err(), "third went before second settled");
        let t = tokio::spawn(async move {
            third.turn().await;
            third
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(second);
        let third = tokio::time::timeout(Duration::from_secs(1), t)
            .await
            .expect("third's turn came")
            .expect("task");
        drop(third);
        assert!(order.state.lock().open.is_empty());
        // settled out of order: the prefix advances only when the hole closes
        let a = order.take();
        let b = order.take();
        drop(b);
        assert_eq!(order.state.lock().open.len(), 2);
        drop(a);
        assert!(order.state.lock().open.is_empty());
    }
}
