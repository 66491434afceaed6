//! Reactor threads: single-threaded Tokio runtimes, one listener each. A listener bound once
//! per thread with SO_REUSEPORT lets the kernel spread connections over the threads, and a
//! client's task then runs where its socket's readiness arrives: its reads, its replies and
//! what it answers itself never wake another thread. The Redis and Postgres listeners both
//! run on them (`[redis] threads`, `[general] pg_threads`).

use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// The reactor threads' runtimes, built before a service starts so that tasks it owns can be
/// spawned on them before their threads run (see [`crate::redis::tracking`]).
pub struct Reactors {
    runtimes: Vec<tokio::runtime::Runtime>,
}

impl Reactors {
    /// `threads` single-threaded runtimes (none for 0: clients on the main runtime).
    pub fn build(threads: usize) -> std::io::Result<Reactors> {
        let runtimes = (0..threads)
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Reactors { runtimes })
    }

    /// Where tasks can be spawned on each reactor (they run once its thread starts).
    pub fn handles(&self) -> Vec<tokio::runtime::Handle> {
        self.runtimes.iter().map(|r| r.handle().clone()).collect()
    }

    /// Start each reactor's thread, named `{name}-{i}`, with a listener of its own: `first`
    /// (already bound, so a taken port fails the start before this) and, for the others,
    /// the same address bound again (SO_REUSEPORT). Each runs `serve` on its listener until
    /// that returns (the service drains), then keeps running while `busy()` says clients are
    /// left, so their sessions finish before the runtime drops them. Must be called inside
    /// a Tokio runtime (the sockets are bound with it, then handed over).
    pub fn serve_on_threads<S, F>(
        mut self,
        first: TcpListener,
        name: &str,
        serve: S,
        busy: impl Fn() -> bool + Clone + Send + 'static,
    ) -> std::io::Result<()>
    where
        S: Fn(TcpListener) -> F + Clone + Send + 'static,
        F: Future<Output = ()> + 'static,
    {
        let bound = first.local_addr()?;
        let mut listeners = vec![first.into_std()?];
        for _ in 1..self.runtimes.len() {
            listeners.push(crate::pg::listener::bind(bound)?.into_std()?);
        }
        let runtimes = std::mem::take(&mut self.runtimes);
        for (i, (std_listener, runtime)) in listeners.into_iter().zip(runtimes).enumerate() {
            let serve = serve.clone();
            let busy = busy.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        match TcpListener::from_std(std_listener) {
                            Ok(listener) => serve(listener).await,
                            Err(e) => tracing::error!(error = %e, "cannot start a reactor"),
                        }
                        while busy() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    })
                })?;
        }
        Ok(())
    }
}

impl Drop for Reactors {
    /// Reactors never started (the service failed to start) are dropped from async code,
    /// where a runtime may not block to shut down.
    fn drop(&mut self) {
        for runtime in self.runtimes.drain(..) {
            runtime.shutdown_background();
        }
    }
}
