//! Operations endpoints: liveness, readiness, metrics, the OpenAPI document.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use utoipa::OpenApi;

use crate::state::AppState;

/// The operations routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "the process is alive", body = Object)))]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "ready to serve", body = Object),
        (status = 503, description = "storage does not answer", body = Object)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(error) => {
            tracing::warn!(%error, "not ready: storage does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "reason": "storage does not answer"})),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "OpenMetrics text",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "the OpenAPI document", body = Object)))]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::ApiDoc::openapi())
}

/// Documents the error answers every operation shares, so that no annotation
/// can forget them: the status comes from the extractors and the caller checks
/// every handler goes through (authentication, the failed-authentication
/// limiter, the tenant lookup, the role check, the JSON body and the query
/// string), not from the handler's own logic. Statuses that only some handlers
/// answer (409, 412, 422 of meaning) are in their own annotations; this also
/// gives every documented error status the one error body.
pub(crate) struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.put, true),
                (&mut item.patch, true),
                (&mut item.delete, true),
            ];
            for (operation, writes) in operations {
                if let Some(operation) = operation.as_mut() {
                    add_error_responses(path, writes, operation);
                }
            }
        }
    }
}

fn add_error_responses(path: &str, writes: bool, operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{RefOr, Response};

    let authenticated = path.starts_with("/api/v1/tenants")
        || path.starts_with("/api/v1/tokens")
        || path.starts_with("/api/v1/me/")
        || path.starts_with("/agent/v1/");
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let in_path = parameters
        .iter()
        .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Path));
    let in_query = parameters
        .iter()
        .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query));
    let has_body = operation.request_body.is_some();

    let mut statuses = Vec::new();
    // A path parameter, query string or body can be malformed (control
    // characters, wrong types, invalid JSON).
    if has_body || in_query || in_path {
        statuses.push("400");
    }
    if authenticated {
        statuses.push("401");
        statuses.push("429");
        // The admin API's writes need the admin role; the agent protocol has
        // no roles.
        if writes && path.starts_with("/api/") {
            statuses.push("403");
        }
    }
    if in_path {
        statuses.push("404");
    }
    if has_body {
        statuses.push("413");
        statuses.push("422");
    }
    let responses = &mut operation.responses.responses;
    for status in statuses {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(Response::new(default_description(status))));
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if status.starts_with('4') && response.content.is_empty() {
            if response.description.is_empty() {
                response.description = default_description(status).to_owned();
            }
            response.content.insert(
                "application/json".to_owned(),
                RefOr::T(utoipa::openapi::Content::new(Some(
                    utoipa::openapi::Ref::from_schema_name("ErrorJson"),
                ))),
            );
        }
    }
}

fn default_description(status: &str) -> &'static str {
    match status {
        "400" => "malformed request: invalid path or query parameters, or an invalid JSON body",
        "401" => "no credential, or an unknown, revoked or expired one",
        "403" => "the credential's role may not do this",
        "404" => "unknown, or another tenant's",
        "409" => "conflicts with existing data",
        "412" => "If-Match names a stale version",
        "413" => "the request body is too large",
        "422" => "valid JSON with an invalid meaning",
        "429" => "too many failed attempts from this address; try again later",
        _ => "error",
    }
}
