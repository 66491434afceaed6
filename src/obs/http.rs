//! Admin HTTP: `/metrics` (Prometheus text), `/health` (the process is alive), `/ready`
//! (accepting clients and every pool's server reachable at last try), the authenticated
//! `/api/…` endpoints, and `/openapi.json`: an OpenAPI 3.1 document generated from these
//! handlers (utoipa), so the contract cannot drift from the code.

use super::api;
use crate::pg::proxy::{Phase, Proxy};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;
use tokio::net::TcpListener;
use utoipa::OpenApi;

/// The admin API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Pake admin API", description = "Metrics, health, readiness and fault injection of a running Pake."),
    paths(
        metrics, health, ready, openapi, api::list_faults, api::add_fault, api::remove_fault,
        crate::insight::http::queries, crate::insight::http::query, crate::insight::http::plan,
        crate::insight::http::slow, crate::insight::http::advice, crate::insight::http::run_advice,
        crate::insight::http::trace, crate::insight::http::report
    ),
    components(schemas(
        Readiness,
        PoolReadiness,
        api::ApiError,
        crate::faults::FaultSpec,
        crate::faults::FaultView,
        crate::faults::FaultKind,
        crate::faults::Scope
    )),
    modifiers(&BasicAuth),
    tags(
        (name = "ops", description = "Monitoring and probes"),
        (name = "faults", description = "Fault injection (admins; off unless general.fault_injection)"),
        (name = "insight", description = "Query insight: statistics, slow plans, index advice, traces")
    )
)]
pub struct ApiDoc;

struct BasicAuth;

impl utoipa::Modify for BasicAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/openapi.json", get(openapi))
        .route("/api/faults", get(api::list_faults).post(api::add_fault))
        .route("/api/faults/{id}", delete(api::remove_fault))
        .with_state(proxy.clone())
        .merge(crate::insight::http::routes(proxy.insight.clone()))
}

/// Serve the admin endpoints until the process exits.
pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener) {
    if let Err(e) = axum::serve(listener, router(proxy)).await {
        tracing::error!(error = %e, "admin HTTP server stopped");
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
async fn metrics(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    proxy.refresh_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        proxy.metrics.render(),
    )
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "ops",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
async fn health() -> &'static str {
    "ok\n"
}

/// Readiness of the whole proxy.
#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    /// Accepting clients, and every pool reached its server at the last try.
    ready: bool,
    /// `running`, `draining` or `closing`.
    phase: String,
    pools: Vec<PoolReadiness>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct PoolReadiness {
    /// `database/user`.
    pool: String,
    /// The last connect or server failure, until a connect succeeds.
    error: Option<String>,
}

/// Readiness: accepting clients, and every pool reached its server at the last try.
#[utoipa::path(get, path = "/ready", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Draining, or a pool cannot reach its server", body = Readiness),
    ))]
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

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
