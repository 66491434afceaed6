//! The insight part of the admin HTTP API, as a router with its state applied so the admin
//! server can `.merge()` it:
//!
//! | route | what |
//! |---|---|
//! | `GET /api/queries?sort=total_time\|calls\|p99\|mean\|errors&limit=N&database=D` | fingerprints |
//! | `GET /api/queries/{id}` | one fingerprint (with splits and histogram) |
//! | `GET /api/queries/{id}/plan` | its captured plan |
//! | `GET /api/slow?limit=N` | recent slow samples |
//! | `GET /api/advice` | last advisor run + N+1 findings; `POST` runs the advisor now |
//! | `GET /api/traces/{trace_id}` | statements seen under one trace id |
//! | `GET /api/report?limit=N&advise=false` | everything `pake report` renders; the advisor runs first unless `advise=false` |

use super::model::{
    AdviceReport, CapturedPlan, QueryStats, ReportData, SlowSample, SortBy, TraceStatement,
};
use super::{Insight, InsightError};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;

/// Most rows any list endpoint returns.
const MAX_LIMIT: usize = 1000;

pub fn routes(insight: Arc<Insight>) -> Router {
    Router::new()
        .route("/api/queries", get(queries))
        .route("/api/queries/{id}", get(query))
        .route("/api/queries/{id}/plan", get(plan))
        .route("/api/slow", get(slow))
        .route("/api/advice", get(advice).post(run_advice))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/report", get(report))
        .with_state(insight)
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// `total_time` (default), `calls`, `p99`, `mean` or `errors`.
    sort: Option<String>,
    /// Rows to return (1 to 1000, default 50).
    limit: Option<usize>,
    /// Only this database.
    database: Option<String>,
}

/// An error answer of the insight API.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct InsightApiError {
    pub error: String,
}

fn limit(l: Option<usize>, default: usize) -> usize {
    l.unwrap_or(default).clamp(1, MAX_LIMIT)
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": msg.to_string() })),
    )
        .into_response()
}

/// Fingerprints with their statistics, sorted.
#[utoipa::path(get, path = "/api/queries", tag = "insight", params(ListParams),
    responses((status = 200, body = [QueryStats]), (status = 400, body = InsightApiError)))]
pub async fn queries(State(ins): State<Arc<Insight>>, Query(p): Query<ListParams>) -> Response {
    let sort = match p.sort.as_deref().map(str::parse::<SortBy>).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    Json(ins.queries(sort, limit(p.limit, 50), p.database.as_deref())).into_response()
}

/// One fingerprint, with its splits and latency histogram.
#[utoipa::path(get, path = "/api/queries/{id}", tag = "insight",
    params(("id" = String, Path, description = "Fingerprint id (16 hex digits)")),
    responses((status = 200, body = QueryStats), (status = 404, body = InsightApiError)))]
pub async fn query(State(ins): State<Arc<Insight>>, Path(id): Path<String>) -> Response {
    match ins.query(&id) {
        Ok(q) => Json(q).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

/// The plan captured for a slow fingerprint (EXPLAIN FORMAT JSON).
#[utoipa::path(get, path = "/api/queries/{id}/plan", tag = "insight",
    params(("id" = String, Path, description = "Fingerprint id (16 hex digits)")),
    responses((status = 200, body = CapturedPlan), (status = 404, body = InsightApiError)))]
pub async fn plan(State(ins): State<Arc<Insight>>, Path(id): Path<String>) -> Response {
    match ins.plan(&id) {
        Some(p) => Json(p).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no plan captured for {id}")),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct LimitParam {
    /// Rows to return (1 to 1000).
    limit: Option<usize>,
}

/// Recent slow-query samples (parameters redacted unless configured otherwise).
#[utoipa::path(get, path = "/api/slow", tag = "insight", params(LimitParam),
    responses((status = 200, body = [SlowSample])))]
pub async fn slow(State(ins): State<Arc<Insight>>, Query(p): Query<LimitParam>) -> Response {
    Json(ins.slow_samples(limit(p.limit, 50))).into_response()
}

/// The last index advice and N+1 findings.
#[utoipa::path(get, path = "/api/advice", tag = "insight",
    responses((status = 200, body = AdviceReport)))]
pub async fn advice(State(ins): State<Arc<Insight>>) -> Response {
    Json(ins.last_advice()).into_response()
}

/// Run the index advisor now (hypopg-validated where available).
#[utoipa::path(post, path = "/api/advice", tag = "insight",
    responses((status = 200, body = AdviceReport), (status = 502, body = InsightApiError)))]
pub async fn run_advice(State(ins): State<Arc<Insight>>) -> Response {
    match ins.advise().await {
        Ok(a) => Json(a).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

/// Statements seen under one trace id (sqlcommenter traceparent).
#[utoipa::path(get, path = "/api/traces/{trace_id}", tag = "insight",
    params(("trace_id" = String, Path, description = "32 hex digits")),
    responses((status = 200, body = [TraceStatement]), (status = 400, body = InsightApiError)))]
pub async fn trace(State(ins): State<Arc<Insight>>, Path(id): Path<String>) -> Response {
    match ins.trace(&id) {
        Ok(t) => Json(t).into_response(),
        Err(e @ InsightError::BadTraceId(_)) => error(StatusCode::BAD_REQUEST, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ReportParams {
    /// Top queries to include (1 to 1000, default 20).
    limit: Option<usize>,
    /// Run the index advisor on the current statistics first (default true); `false`
    /// returns the last run's advice, with its age.
    advise: Option<bool>,
}

/// Everything `pake report` renders, with fresh index advice unless `advise=false`.
#[utoipa::path(get, path = "/api/report", tag = "insight", params(ReportParams),
    responses((status = 200, body = ReportData)))]
pub async fn report(State(ins): State<Arc<Insight>>, Query(p): Query<ReportParams>) -> Response {
    let advise = p.advise.unwrap_or(true);
    Json(ins.report_with_advice(limit(p.limit, 20), advise).await).into_response()
}
