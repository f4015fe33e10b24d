//! Invitations: an admin names an email and a role; entitle makes an account
//! in the state "invited" (no usable password) and answers, once, a link with
//! a random secret (stored only as its hash, valid 72 hours, single use). The
//! invitee opens it to choose a password and is signed in (`portal::admins`);
//! in a tenant that signs in through an identity provider, the invitee may
//! instead simply sign in there (`portal::sso` binds the invited account).
//! Inviting the same email again replaces the link.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use entitle_store::{NewInvitation, secrets};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::accounts::{AccountJson, valid_email};
use super::tenant_role;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::JsonBody;
use crate::state::AppState;
use crate::wire::rfc3339;

/// How long an invitation link works.
pub const INVITATION_HOURS: i64 = 72;

/// The page an invitation link opens; the secret follows in the fragment,
/// which browsers never send to a server, so it stays out of logs and
/// `Referer` headers.
pub const INVITATION_PAGE: &str = "/portal/invitation";

/// What an invited account's password hash starts with: not a PHC string,
/// so no password verifies against it.
const PLACEHOLDER_PREFIX: &str = "invited$";

/// Whether a stored password hash is an invitation's placeholder.
pub fn is_invitation_placeholder(stored: &str) -> bool {
    stored.starts_with(PLACEHOLDER_PREFIX)
}

/// The invitation routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/tenants/{tenant}/invitations",
        post(create_invitation),
    )
}

/// Body of `POST …/invitations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    /// The invitee's email (at most 254 bytes).
    pub email: String,
    /// admin or viewer.
    pub role: String,
}

/// A new invitation; the link is shown once.
#[derive(Serialize, ToSchema)]
pub struct CreatedInvitation {
    /// The invited account.
    pub account: AccountJson,
    /// The link to send to the invitee, when the server knows its public URL
    /// (`--public-url`); otherwise prefix `invitation_path` with the server's address.
    pub invitation_url: Option<String>,
    /// The link's path and secret, e.g. `/portal/invitation#ent_invite_…`.
    pub invitation_path: String,
    /// When the link stops working (RFC 3339).
    pub expires_at: String,
    /// Whether an earlier link for this email was replaced (and stops working).
    pub replaced: bool,
}

/// Invites an email to the tenant's portal with a role; admins only. Inviting
/// an email still waiting for its invitee replaces its link and role; any
/// other account with the email is a conflict.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/invitations", tag = "tenants", request_body = CreateInvitation,
    params(("tenant" = String, Path)),
    responses((status = 201, body = CreatedInvitation), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub(crate) async fn create_invitation(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<CreateInvitation>,
) -> ApiResult<Response> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let role = tenant_role(&body.role)?;
    let email = valid_email(&body.email)?;
    let secret = secrets::new_secret("ent_invite");
    let expires_at = OffsetDateTime::now_utc() + time::Duration::hours(INVITATION_HOURS);
    let new = NewInvitation {
        tenant_id: tenant.id.clone(),
        email: email.to_owned(),
        role,
        token_hash: secrets::hash_secret(&secret),
        expires_at,
        placeholder_hash: format!("{PLACEHOLDER_PREFIX}{}", secrets::new_secret("none")),
    };
    let invited = state.store.invite_account(new, &caller.actor).await?;
    let invitation_path = format!("{INVITATION_PAGE}#{secret}");
    let invitation_url = state
        .config
        .public_url
        .as_deref()
        .map(|base| format!("{}{invitation_path}", base.trim_end_matches('/')));
    tracing::info!(tenant = %tenant.id, account = %invited.summary.account.id, "account invited");
    // The stored time, at the back end's precision, is the one listings show.
    let expires_at = invited
        .summary
        .pending_invitation()
        .map_or(expires_at, |i| i.expires_at);
    let body = CreatedInvitation {
        account: AccountJson::from(invited.summary),
        invitation_url,
        invitation_path,
        expires_at: rfc3339(expires_at),
        replaced: invited.replaced,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
