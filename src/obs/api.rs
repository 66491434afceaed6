//! The authenticated admin API: fault injection (`/api/faults`). Admins authenticate with
//! HTTP Basic auth as one of `general.admin_users` and that user's password; the endpoints
//! refuse everything while `general.fault_injection` is off.

use crate::faults::{FaultError, FaultSpec, FaultView};
use crate::pg::proxy::Proxy;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Serialize;
use std::sync::Arc;

/// An error answer of the admin API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    pub error: String,
}

fn err(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}

/// Basic auth as an admin user; `Err` is the response to send (boxed: it is large).
fn admin(proxy: &Proxy, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let unauthorized = || {
        let mut r = err(
            StatusCode::UNAUTHORIZED,
            "admin credentials required (HTTP Basic auth)",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"pake\""),
        );
        Box::new(r)
    };
    let creds = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| B64.decode(v.trim()).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .ok_or_else(unauthorized)?;
    let (user, password) = creds.split_once(':').ok_or_else(unauthorized)?;
    let entry = proxy.user(user).ok_or_else(unauthorized)?;
    if !crate::pg::auth::verify_password(&entry.secret, user, password) {
        return Err(unauthorized());
    }
    if !proxy.config().general.admin_users.iter().any(|a| a == user) {
        return Err(Box::new(err(
            StatusCode::FORBIDDEN,
            format!("user {user:?} is not an admin"),
        )));
    }
    Ok(user.to_string())
}

fn fault_error(e: FaultError) -> Response {
    let status = match e {
        FaultError::Disabled => StatusCode::FORBIDDEN,
        FaultError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        FaultError::NotFound(_) => StatusCode::NOT_FOUND,
    };
    err(status, e.to_string())
}

/// The active faults.
#[utoipa::path(get, path = "/api/faults", tag = "faults",
    responses(
        (status = 200, description = "Active faults", body = [FaultView]),
        (status = 401, description = "No or wrong admin credentials", body = ApiError),
        (status = 403, description = "Fault injection is disabled, or not an admin", body = ApiError),
    ),
    security(("basic" = [])))]
pub async fn list_faults(State(proxy): State<Arc<Proxy>>, headers: HeaderMap) -> Response {
    if let Err(r) = admin(&proxy, &headers) {
        return *r;
    }
    if !proxy.faults.enabled() {
        return fault_error(FaultError::Disabled);
    }
    Json(proxy.faults.list()).into_response()
}

/// Inject a fault.
#[utoipa::path(post, path = "/api/faults", tag = "faults", request_body = FaultSpec,
    responses(
        (status = 201, description = "The fault, now active", body = FaultView),
        (status = 401, description = "No or wrong admin credentials", body = ApiError),
        (status = 403, description = "Fault injection is disabled, or not an admin", body = ApiError),
        (status = 422, description = "The fault is not valid", body = ApiError),
    ),
    security(("basic" = [])))]
pub async fn add_fault(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let user = match admin(&proxy, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return err(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid fault: {e}"),
            )
        }
    };
    match proxy.faults.add(spec) {
        Ok(v) => {
            tracing::warn!(admin = %user, id = v.id, "fault added through the admin API");
            (StatusCode::CREATED, Json(v)).into_response()
        }
        Err(e) => fault_error(e),
    }
}

/// Remove a fault before it expires.
#[utoipa::path(delete, path = "/api/faults/{id}", tag = "faults",
    params(("id" = u64, Path, description = "The fault's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError),
        (status = 403, description = "Fault injection is disabled, or not an admin", body = ApiError),
        (status = 404, description = "No such fault", body = ApiError),
    ),
    security(("basic" = [])))]
pub async fn remove_fault(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    if let Err(r) = admin(&proxy, &headers) {
        return *r;
    }
    match proxy.faults.remove(id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => fault_error(e),
    }
}
