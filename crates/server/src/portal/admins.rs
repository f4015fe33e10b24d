//! The Admins page (accounts, API tokens, sessions) and the invitation page
//! where an invitee chooses a password.
//!
//! The Admins page only reads, to inline its first view; every change it
//! offers is a call of `/api/v1` from `assets/admins.js`. Viewers see the page
//! with their own sessions only (and may sign themselves out everywhere): the
//! tenant's accounts and tokens are an admin's business, as in the API.
//!
//! An invitation link is `/portal/invitation#<secret>`: the secret rides in the
//! fragment, which the browser never sends, so it stays out of every log. The
//! page's script posts it to `/portal/invitation/check` (who is invited, or
//! why the link no longer works) and, with the chosen password, to
//! `/portal/invitation`, which signs the invitee in like a password sign-in.
//! Like sign-in, these two are not part of `/api/v1`: they are how a person
//! without a credential gets one.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::header::USER_AGENT;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use entitle_store::{Actor, ActorKind, InvitationLookup, Role, SessionClient, StoreError, secrets};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::{Frame, SignedIn, frame, render};
use crate::admin::accounts::{AccountJson, hash_password};
use crate::admin::invitations::INVITATION_HOURS;
use crate::admin::sessions::SessionJson;
use crate::admin::tenants::TokenJson;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientAddress, JsonBody};
use crate::state::AppState;
use crate::wire::rfc3339;

/// The longest invitation secret looked up; real ones are 75 characters.
const MAX_SECRET: usize = 128;
/// The longest `User-Agent` kept with a session.
const MAX_USER_AGENT: usize = 200;

/// The Admins page and the invitation routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/admins", get(admins_page))
        .route("/portal/invitation", get(invitation_page).post(accept))
        .route("/portal/invitation/check", post(check))
}

#[derive(Template)]
#[template(path = "admins.html")]
struct AdminsPage {
    frame: Frame,
    /// Whether the signed-in person administers the tenant.
    admin: bool,
}

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationPage {
    /// The identity provider's name when sign-in through it is configured.
    sso: Option<String>,
}

async fn admins_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(tenant): Path<String>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let session = &signed_in.0;
    let account = &session.account;
    let admin = account.role != Role::Viewer;
    let load = async {
        let now = OffsetDateTime::now_utc();
        let only = (!admin).then_some(account.id.as_str());
        let sessions: Vec<SessionJson> = state
            .store
            .tenant_sessions(&tenant.id, only)
            .await?
            .into_iter()
            .map(|s| SessionJson::new(s, Some(&session.id)))
            .collect();
        let (accounts, tokens) = if admin {
            let accounts: Vec<AccountJson> = state
                .store
                .account_summaries(&tenant.id)
                .await?
                .into_iter()
                .map(AccountJson::from)
                .collect();
            let tokens: Vec<TokenJson> = state
                .store
                .api_tokens(Some(&tenant.id))
                .await?
                .into_iter()
                .map(|t| TokenJson::new(t, now))
                .collect();
            (Some(accounts), Some(tokens))
        } else {
            (None, None)
        };
        Ok::<_, ApiError>(json!({
            "me": {
                "account_id": account.id,
                "email": account.email,
                "session_id": session.id,
            },
            "accounts": accounts,
            "tokens": tokens,
            "sessions": sessions,
            "invitation_hours": INVITATION_HOURS,
            "sso": state.config.oidc.as_ref().map(|o| o.settings.display_name.clone()),
        }))
    };
    let data = load.await.map_err(IntoResponse::into_response)?;
    let frame = frame(&signed_in, &tenant, "admins", "Admins", data, "admins.js");
    Ok(render(&AdminsPage { frame, admin }))
}

async fn invitation_page(State(state): State<AppState>) -> Response {
    render(&InvitationPage {
        sso: state
            .config
            .oidc
            .as_ref()
            .map(|o| o.settings.display_name.clone()),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    token: String,
    password: String,
}

/// Who an invitation link is for, or why it no longer works.
async fn check(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    JsonBody(body): JsonBody<CheckBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let found = open(&state, address, &body.token).await?;
    if let Some(refusal) = found.refusal(OffsetDateTime::now_utc()) {
        return Err(gone(refusal));
    }
    Ok(Json(json!({
        "email": found.account.email,
        "tenant": found.tenant_name,
        "role": found.account.role.as_str(),
        "expires_at": rfc3339(found.invitation.expires_at),
    })))
}

/// Uses an invitation link: sets the chosen password and signs the invitee in.
async fn accept(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AcceptBody>,
) -> ApiResult<Response> {
    super::require_json(&headers)?;
    let found = open(&state, address, &body.token).await?;
    if let Some(refusal) = found.refusal(OffsetDateTime::now_utc()) {
        return Err(gone(refusal));
    }
    let password_hash = hash_password(body.password).await?;
    let account = state
        .store
        .accept_invitation(&secrets::hash_secret(&body.token), &password_hash)
        .await
        .map_err(gone)?;
    let tenant_id = account.tenant_id.clone();
    let actor = Actor::new(
        ActorKind::Account,
        account.id.as_str(),
        account.email.as_str(),
    );
    state
        .store
        .append_audit(
            tenant_id.as_deref(),
            &actor,
            "sign_in.success",
            &account.email,
            None,
            Some(&json!({"address": address.map(|a| a.to_string()), "method": "invitation"})),
        )
        .await?;
    let cookie =
        super::start_session(&state, &account.id, session_client(address, &headers)).await?;
    tracing::info!(account = %account.id, "invitation accepted");
    let redirect = format!("/t/{}/entitlements/private_access", found.tenant_name);
    Ok(super::with_session(
        Json(json!({"redirect": redirect})).into_response(),
        cookie,
    ))
}

/// Where a sign-in comes from, bounded display text for the sessions list.
pub(super) fn session_client(
    address: Option<std::net::IpAddr>,
    headers: &HeaderMap,
) -> SessionClient {
    let user_agent = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|text| {
            text.chars()
                .filter(|c| !c.is_control())
                .take(MAX_USER_AGENT)
                .collect::<String>()
        })
        .filter(|text| !text.trim().is_empty());
    SessionClient {
        address: address.map(|a| a.to_string()),
        user_agent,
    }
}

/// The invitation a link's secret opens. An unknown secret counts as a failed
/// credential of the client, like a wrong token.
async fn open(
    state: &AppState,
    address: Option<std::net::IpAddr>,
    token: &str,
) -> ApiResult<InvitationLookup> {
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invitation_unknown",
            "this invitation link is not valid: it may be incomplete, or replaced by a newer invitation; ask an administrator for a new link",
        )
    };
    let plausible = !token.is_empty()
        && token.len() <= MAX_SECRET
        && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plausible {
        return Err(state.failures.fail(address, unknown()));
    }
    match state.store.invitation(&secrets::hash_secret(token)).await {
        Ok(found) => Ok(found),
        Err(StoreError::NotFound { .. }) => Err(state.failures.fail(address, unknown())),
        Err(other) => Err(other.into()),
    }
}

/// A link that worked once but no longer does: 410, with the reason.
fn gone(error: StoreError) -> ApiError {
    match error {
        StoreError::Refused { code, message } => ApiError::new(StatusCode::GONE, code, message),
        other => other.into(),
    }
}
