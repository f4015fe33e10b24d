//! Portal sessions: who is signed in to a tenant, ending one session, and
//! "sign out everywhere" for the caller's own account.
//!
//! Admins see and end every session of the tenant's accounts. A viewer signed
//! in to the portal sees and ends only their own; a viewer token, which speaks
//! for no account, gets 403. Sessions are named by a public id, never by
//! their secret.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{delete, get};
use axum::{Json, Router};
use entitle_store::{ActorKind, Role, SessionInfo};
use serde::Serialize;
use utoipa::ToSchema;

use super::accounts::SessionsEnded;
use crate::auth::{Caller, bearer};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::wire::rfc3339;

/// The session routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/sessions", get(list_sessions))
        .route(
            "/api/v1/tenants/{tenant}/sessions/{id}",
            delete(end_session),
        )
        .route("/api/v1/me/sessions", delete(sign_out_everywhere))
}

/// A portal session: never its secret.
#[derive(Serialize, ToSchema)]
pub struct SessionJson {
    /// Public id, to end it.
    pub id: String,
    /// Whose session.
    pub account_id: String,
    /// The account's email.
    pub email: String,
    /// The account's role.
    pub role: String,
    /// When it started (RFC 3339).
    pub created_at: String,
    /// When it ends (RFC 3339).
    pub expires_at: String,
    /// When it was last used, to the minute (RFC 3339).
    pub last_seen_at: String,
    /// The address it signed in from.
    pub address: Option<String>,
    /// The browser it signed in with.
    pub user_agent: Option<String>,
    /// Whether it is the session of this request.
    pub current: bool,
}

impl SessionJson {
    /// The wire form; `current` is the id of the request's own session.
    pub fn new(session: SessionInfo, current: Option<&str>) -> Self {
        Self {
            current: current == Some(session.id.as_str()),
            id: session.id,
            account_id: session.account_id,
            email: session.email,
            role: session.role.as_str().to_owned(),
            created_at: rfc3339(session.created_at),
            expires_at: rfc3339(session.expires_at),
            last_seen_at: rfc3339(session.last_seen_at),
            address: session.client.address,
            user_agent: session.client.user_agent,
        }
    }
}

/// A list of sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionList {
    /// The sessions, newest first (at most 1,000).
    pub items: Vec<SessionJson>,
}

/// Whose sessions a caller may see and end in the tenant: `None` for all
/// (admins), or the caller's own account (a signed-in viewer).
fn scope(caller: &Caller) -> ApiResult<Option<String>> {
    if caller.role != Role::Viewer {
        return Ok(None);
    }
    if caller.actor.kind == ActorKind::Account {
        return Ok(Some(caller.actor.id.clone()));
    }
    Err(ApiError::forbidden(
        "a viewer token cannot see or end sessions; a viewer signed in to the portal sees their own",
    ))
}

/// The id of the request's own portal session, if it has one.
pub(crate) async fn current_session_id(
    parts: &Parts,
    state: &AppState,
) -> ApiResult<Option<String>> {
    if bearer(parts).is_some() {
        return Ok(None);
    }
    Ok(crate::auth::session(parts, state).await?.map(|s| s.id))
}

/// Lists the open portal sessions of the tenant's accounts (a viewer: their own).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/sessions", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = SessionList), (status = 403), (status = 404)))]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    parts: Parts,
) -> ApiResult<Json<SessionList>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let only = scope(&caller)?;
    let current = current_session_id(&parts, &state).await?;
    let sessions = state
        .store
        .tenant_sessions(&tenant.id, only.as_deref())
        .await?;
    Ok(Json(SessionList {
        items: sessions
            .into_iter()
            .map(|s| SessionJson::new(s, current.as_deref()))
            .collect(),
    }))
}

/// Ends one portal session of the tenant (a viewer: one of their own) at once.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/sessions/{id}", tag = "tenants",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 403), (status = 404)))]
pub(crate) async fn end_session(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let only = scope(&caller)?;
    state
        .store
        .end_session(&tenant.id, &id, only.as_deref(), &caller.actor)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Signs the caller's own account out of every session, this one included;
/// for a person signed in to the portal (a token has no sessions: 422).
#[utoipa::path(delete, path = "/api/v1/me/sessions", tag = "tenants",
    responses((status = 200, body = SessionsEnded), (status = 422)))]
pub(crate) async fn sign_out_everywhere(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<SessionsEnded>> {
    if caller.actor.kind != ActorKind::Account {
        return Err(ApiError::unprocessable(
            "no_account",
            "an API token speaks for no account and has no sessions; to end an account's sessions, DELETE /api/v1/tenants/{tenant}/accounts/{id}/sessions",
        ));
    }
    let ended = state
        .store
        .end_sessions(caller.tenant_id.as_deref(), &caller.actor.id, &caller.actor)
        .await?;
    Ok(Json(SessionsEnded { ended }))
}
