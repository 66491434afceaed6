//! Wiring a running Pake: bind the listeners, start the admin HTTP server, handle signals,
//! drain on shutdown. `pake serve` calls [`run`]; tests and `pake demo` call [`start`] inside
//! their own runtime.

use crate::config::Config;
use crate::obs::metrics::Metrics;
use crate::pg::proxy::{ConfigSource, Phase, Proxy};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A started Pake inside the current runtime.
pub struct Running {
    pub proxy: Arc<Proxy>,
    /// The address the Postgres listener is bound to (a real port when 0 was asked).
    pub pg_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    /// The address the Redis listener is bound to, when `[redis]` is configured.
    pub redis_addr: Option<SocketAddr>,
    pub redis: Option<Arc<crate::redis::Service>>,
}

/// Bind and start everything in the current Tokio runtime.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with(config, None).await
}

/// [`start`], remembering where the config came from so RELOAD and SIGHUP can re-read it.
pub async fn start_with(config: Config, source: Option<ConfigSource>) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let pg_threads = config.general.pg_threads;
    if config.peering.peer_id == 0
        && crate::pg::listener::already_listening(config.general.pg_listen)
    {
        tracing::warn!(
            listen = %config.general.pg_listen,
            "another process already listens here: the kernel will split new clients between \
             it and this Pake, and without [peering] a cancel request that reaches the other \
             one is lost (fine for a rolling restart: stop the old Pake now)"
        );
    }
    let pg = crate::pg::listener::bind(config.general.pg_listen)
        .with_context(|| format!("cannot listen on {}", config.general.pg_listen))?;
    let pg_addr = pg.local_addr()?;
    let admin = match config.general.admin_listen {
        // SO_REUSEPORT like the data listeners: a rolling restart starts the new Pake
        // beside the old one with the same default config, admin port included
        Some(addr) => Some(
            crate::pg::listener::bind(addr)
                .with_context(|| format!("cannot listen on {addr} (admin)"))?,
        ),
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    // one fault registry for both protocols (admin API, off unless fault_injection)
    let faults = Arc::new(crate::faults::Faults::default());
    faults.set_enabled(config.general.fault_injection);
    // Redis (issue 5): connect before binding, so a bad URL fails the start
    let (redis, redis_addr) = match config.redis.clone() {
        Some(rc) => {
            let listen = rc.listen;
            let reactors = crate::reactor::Reactors::build(rc.threads)
                .context("cannot start the Redis reactor threads")?;
            let svc = crate::redis::Service::start(
                rc,
                &metrics.registry,
                faults.clone(),
                reactors.handles(),
            )
            .await
            .with_context(|| "cannot start the Redis proxy")?;
            let addr = match svc.config.threads {
                0 => {
                    let listener = crate::pg::listener::bind(listen)
                        .with_context(|| format!("cannot listen on {listen} (redis)"))?;
                    let addr = listener.local_addr()?;
                    tokio::spawn(crate::redis::listener::serve(svc.clone(), listener));
                    addr
                }
                _ => crate::redis::listener::serve_on_threads(svc.clone(), listen, reactors)
                    .with_context(|| format!("cannot listen on {listen} (redis)"))?,
            };
            (Some(svc), Some(addr))
        }
        None => (None, None),
    };
    let proxy = Proxy::new(config, metrics, faults).context("TLS set-up")?;
    if let Some(source) = source {
        proxy.set_source(source);
    }
    if let Some(svc) = &redis {
        let _ = proxy.redis.set(svc.clone());
    }
    // every configured database's pools and monitors before the first client (bounded wait)
    proxy.start_pools().await;
    match pg_threads {
        0 => drop(tokio::spawn(crate::pg::listener::serve(proxy.clone(), pg))),
        n => {
            let busy = {
                let proxy = proxy.clone();
                move || proxy.client_count() > 0
            };
            let serving = proxy.clone();
            crate::reactor::Reactors::build(n)
                .and_then(|r| {
                    r.serve_on_threads(
                        pg,
                        "pake-pg",
                        move |l| crate::pg::listener::serve(serving.clone(), l),
                        busy,
                    )
                })
                .context("cannot start the Postgres reactor threads")?;
        }
    }
    if let Some(listener) = admin {
        tokio::spawn(crate::obs::http::serve(proxy.clone(), listener));
    }
    tracing::info!(pg = %pg_addr, redis = ?redis_addr, admin = ?admin_addr, "Pake is ready");
    Ok(Running {
        proxy,
        pg_addr,
        admin_addr,
        redis_addr,
        redis,
    })
}

impl Running {
    /// Stop accepting, let sessions finish their transactions for up to `timeout`, then
    /// close the rest with 57P01; then send the trace spans still queued.
    pub async fn drain(&self, timeout: Duration) {
        if let Some(redis) = &self.redis {
            redis.drain(timeout).await;
        }
        self.proxy.set_phase(Phase::Draining);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.proxy.client_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.proxy.set_phase(Phase::Closing);
        let grace = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.proxy.client_count() > 0 && tokio::time::Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for pool in self.proxy.pools() {
            pool.close();
        }
        self.proxy.finish_otlp().await;
    }
}

/// `pake serve`: build the runtime, start, reload on SIGHUP, drain on SIGTERM/SIGINT (or the
/// console's SHUTDOWN).
pub fn run(config: Config, source: ConfigSource) -> anyhow::Result<()> {
    let workers = match config.general.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    crate::ops::trim::tune();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the Tokio runtime")?;
    runtime.block_on(async move {
        let shutdown_timeout = config.general.shutdown_timeout.0;
        let running = start_with(config, Some(source)).await?;
        spawn_reload_on_hangup(running.proxy.clone());
        crate::ops::trim::spawn();
        let mut phase = running.proxy.phase();
        tokio::select! {
            _ = wait_for_signal() => {}
            _ = phase.wait_for(|p| *p != Phase::Running) => {}
        }
        tracing::info!(timeout = ?shutdown_timeout, "shutting down: draining clients");
        running.drain(shutdown_timeout).await;
        tracing::info!("bye");
        Ok(())
    })
}

/// SIGHUP re-reads the config file and applies it (like the console's RELOAD).
fn spawn_reload_on_hangup(proxy: Arc<Proxy>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: reload only from the console");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match proxy.reload().await {
                Ok(report) => {
                    for line in report {
                        tracing::info!(change = %line, "reload (SIGHUP)");
                    }
                }
                Err(e) => tracing::error!(error = %e, "reload failed; the running config stays"),
            }
        }
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
