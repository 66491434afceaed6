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
//! | `GET /api/report?limit=N` | everything `pake report` renders |

use super::model::SortBy;
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

#[derive(Deserialize)]
struct ListParams {
    sort: Option<String>,
    limit: Option<usize>,
    database: Option<String>,
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

async fn queries(State(ins): State<Arc<Insight>>, Query(p): Query<ListParams>) -> Response {
    let sort = match p.sort.as_deref().map(str::parse::<SortBy>).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    Json(ins.queries(sort, limit(p.limit, 50), p.database.as_deref())).into_response()
}

async fn query(State(ins): State<Arc<Insight>>, Path(id): Path<String>) -> Response {
    match ins.query(&id) {
        Ok(q) => Json(q).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn plan(State(ins): State<Arc<Insight>>, Path(id): Path<String>) -> Response {
    match ins.plan(&id) {
        Some(p) => Json(p).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no plan captured for {id}")),
    }
}

#[derive(Deserialize)]
struct LimitParam {
    limit: Option<usize>,
}

async fn slow(State(ins): State<Arc<Insight>>, Query(p): Query<LimitParam>) -> Response {
    Json(ins.slow_samples(limit(p.limit, 50))).into_response()
}

async fn advice(State(ins): State<Arc<Insight>>) -> Response {
    Json(ins.last_advice()).into_response()
}

async fn run_advice(State(ins): State<Arc<Insight>>) -> Response {
    match ins.advise().await {
        Ok(a) => Json(a).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

async fn trace(State(ins): State<Arc<Insight>>, Path(id): Path<String>) -> Response {
    match ins.trace(&id) {
        Ok(t) => Json(t).into_response(),
        Err(e @ InsightError::BadTraceId(_)) => error(StatusCode::BAD_REQUEST, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn report(State(ins): State<Arc<Insight>>, Query(p): Query<LimitParam>) -> Response {
    Json(ins.report(limit(p.limit, 20))).into_response()
}
