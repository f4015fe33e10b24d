//! The audit log, read-only and newest first.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::page_limit;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryParams;
use crate::state::AppState;
use crate::wire::{PrincipalJson, rfc3339};

/// The audit route.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/tenants/{tenant}/audit", get(audit))
}

/// Audit parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page size (1–200, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One audit entry.
#[derive(Serialize, ToSchema)]
pub struct AuditItem {
    /// When.
    pub at: String,
    /// Who, as text that names the kind (`token ci`, `ada@acme.example`, `directory`).
    pub actor: String,
    /// Who, as a principal.
    pub principal: PrincipalJson,
    /// What kind of change.
    pub action: String,
    /// What it changed.
    pub target: String,
    /// State before.
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// State after.
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

/// A page of the audit log, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Entries, newest first.
    pub items: Vec<AuditItem>,
    /// Cursor of the next (older) page.
    pub next_cursor: Option<String>,
}

/// Reads the audit log, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/audit", tag = "audit",
    params(("tenant" = String, Path), AuditQuery), responses((status = 200, body = AuditPage)))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let before = match &query.cursor {
        Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| {
            ApiError::bad_request("invalid_cursor", "cursor is not one this server issued")
        })?),
        None => None,
    };
    let limit = page_limit(query.limit);
    let entries = state.store.audit(&tenant.id, limit, before).await?;
    let next_cursor = (entries.len() == limit as usize)
        .then(|| entries.last().map(|(id, _)| id.to_string()))
        .flatten();
    let items = entries
        .into_iter()
        .map(|(_, e)| AuditItem {
            at: rfc3339(e.at),
            actor: e.actor.display(),
            principal: PrincipalJson::from(&e.actor),
            action: e.action,
            target: e.target,
            before: e.before,
            after: e.after,
        })
        .collect();
    Ok(Json(AuditPage { items, next_cursor }))
}
