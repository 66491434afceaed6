//! Stopping a run early and cleanly: Ctrl-C (or a test) requests a stop, each client ends
//! after its current request, the runner skips the remaining rounds and the report of the
//! rounds so far is still written, marked partial. A handle, not a global, so tests can
//! stop their own runs without touching others in the same process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    flag: AtomicBool,
    wake: Notify,
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    pub fn request(&self) {
        self.0.flag.store(true, Ordering::Relaxed);
        self.0.wake.notify_waiters();
    }

    pub fn requested(&self) -> bool {
        self.0.flag.load(Ordering::Relaxed)
    }

    /// Resolves once a stop is requested.
    pub async fn wait(&self) {
        loop {
            // registered before the check, so a request in between still wakes us
            let woken = self.0.wake.notified();
            if self.requested() {
                return;
            }
            woken.await;
        }
    }

    /// The first Ctrl-C requests a stop (the partial report is still written); a second
    /// one exits at once. Call inside a runtime.
    pub fn on_ctrl_c(&self) {
        let stop = self.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            eprintln!("\nstopping after the current requests (Ctrl-C again to quit at once)");
            stop.request();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_wakes_waiters_before_and_after() {
        let stop = Stop::new();
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!stop.requested());
        stop.request();
        waiter.await.unwrap();
        // a late waiter returns at once
        stop.wait().await;
        assert!(stop.requested());
    }
}
