//! The pooler's core without sockets: the server connection, the pool and the session
//! against the in-memory backend of [`super::memory`], under tokio's paused clock, so
//! timeouts are exact and each test takes milliseconds.

mod pool;
mod server;
mod session;

use super::memory::Backend;
use super::pool::{Pool, PoolKey};
use super::proxy::Proxy;
use super::server::ServerTarget;
use crate::config::Config;
use std::sync::Arc;
use std::time::Duration;

/// Where `backend` is, logged in to as user `u` of database `db`.
fn target(backend: &Backend, password: Option<&str>) -> ServerTarget {
    target_at(backend.host(), backend.port(), password)
}

/// A server at `host:port`, logged in to as user `u` of database `db`.
fn target_at(host: &str, port: u16, password: Option<&str>) -> ServerTarget {
    ServerTarget {
        host: host.to_string(),
        port,
        user: "u".into(),
        password: password.map(str::to_string),
        passthrough: None,
        database: "db".into(),
        connect_timeout: Duration::from_secs(5),
        tls: None,
        extra: Vec::new(),
    }
}

/// A pool of `size` connections to `backend`, whose clients wait `wait` at most.
fn pool(backend: &Backend, size: usize, wait: Duration) -> Arc<Pool> {
    pool_to(target(backend, Some("p")), |pool| {
        pool.pool_size = size;
        pool.query_wait_timeout = crate::config::Dur(wait);
    })
}

/// A pool of connections to `target`, with the `[pool]` settings `tune` makes.
fn pool_to(target: ServerTarget, tune: impl FnOnce(&mut crate::config::PoolDefaults)) -> Arc<Pool> {
    let mut config = Config::default();
    tune(&mut config.pool);
    let db = crate::config::Database::at("db", &target.host, target.port);
    let user = crate::config::User {
        password: target.password.clone(),
        ..crate::config::User::named("u")
    };
    let key = PoolKey {
        database: "db".into(),
        user: "u".into(),
    };
    let metrics = crate::obs::metrics::Metrics::new().pool("db", "u", "primary");
    let settings = config.pool_settings(&db, &user);
    Pool::new(key, "primary".into(), settings, target, metrics, None)
}

/// A proxy serving database `db` from `backend` to user `app` (password `a`, md5), with
/// `[pool]` settings from `pool` (TOML lines), its pools built as at start.
async fn proxy(backend: &Backend, pool: &str) -> Arc<Proxy> {
    let text = format!(
        "[general]\nauth_type = \"md5\"\n\n[pool]\n{pool}\n\n\
         [[databases]]\nname = \"db\"\nhost = \"{}\"\nport = {}\n\n\
         [[users]]\nname = \"app\"\npassword = \"a\"\n",
        backend.host(),
        backend.port()
    );
    let config = Config::parse(&text).expect("test config parses");
    config.validate().expect("test config is valid");
    let metrics = Arc::new(crate::obs::metrics::Metrics::new());
    let proxy = Proxy::new(config, metrics, Arc::default()).expect("proxy without TLS");
    proxy.start_pools().await;
    proxy
}
