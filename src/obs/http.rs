//! Admin HTTP: `/metrics` (Prometheus text), `/health` (the process is alive), `/ready`
//! (accepting clients and every pool's server reachable at last try).

use crate::pg::proxy::{Phase, Proxy};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;
use tokio::net::TcpListener;

pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(proxy)
}

/// Serve the admin endpoints until the process exits.
pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener) {
    if let Err(e) = axum::serve(listener, router(proxy)).await {
        tracing::error!(error = %e, "admin HTTP server stopped");
    }
}

async fn metrics(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    proxy.refresh_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        proxy.metrics.render(),
    )
}

async fn health() -> &'static str {
    "ok\n"
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    phase: String,
    pools: Vec<PoolReadiness>,
}

#[derive(Serialize)]
struct PoolReadiness {
    pool: String,
    error: Option<String>,
}

async fn ready(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    let phase = proxy.current_phase();
    let pools: Vec<PoolReadiness> = proxy
        .pools()
        .iter()
        .map(|p| PoolReadiness {
            pool: p.key.to_string(),
            error: p.last_error(),
        })
        .collect();
    let ready = phase == Phase::Running && pools.iter().all(|p| p.error.is_none());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            phase: format!("{phase:?}").to_lowercase(),
            pools,
        }),
    )
}
