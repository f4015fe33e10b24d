//! Portal accounts: creation, role and disabling, passwords and sessions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, patch, post};
use axum::{Json, Router};
use entitle_store::{AccountChange, AccountSummary, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::tenant_role;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::state::AppState;
use crate::wire::rfc3339;

/// The portal account routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/tenants/{tenant}/accounts",
            post(create_account).get(list_accounts),
        )
        .route(
            "/api/v1/tenants/{tenant}/accounts/{id}",
            patch(update_account),
        )
        .route(
            "/api/v1/tenants/{tenant}/accounts/{id}/password",
            post(set_password),
        )
        .route(
            "/api/v1/tenants/{tenant}/accounts/{id}/sessions",
            delete(end_sessions),
        )
}

/// Body of `POST …/accounts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Sign-in email.
    pub email: String,
    /// 12 characters to 1,024 bytes.
    pub password: String,
    /// admin or viewer.
    pub role: String,
}

/// A portal account.
#[derive(Serialize, ToSchema)]
pub struct AccountJson {
    /// Id.
    pub id: String,
    /// Sign-in email.
    pub email: String,
    /// Role.
    pub role: String,
    /// `active`, `disabled` or `invited` (waiting for its invitee to choose a
    /// password or sign in through the identity provider).
    pub status: String,
    /// Whether the account is disabled (cannot sign in, has no sessions).
    pub disabled: bool,
    /// When it was disabled (RFC 3339).
    pub disabled_at: Option<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last signed in (RFC 3339).
    pub last_sign_in_at: Option<String>,
    /// While invited: when its invitation link stops working (RFC 3339).
    pub invitation_expires_at: Option<String>,
    /// How many sessions it has open.
    pub sessions: i64,
}

impl From<AccountSummary> for AccountJson {
    fn from(summary: AccountSummary) -> Self {
        let status = summary.status().as_str().to_owned();
        let invitation_expires_at = summary.pending_invitation().map(|i| rfc3339(i.expires_at));
        let account = summary.account;
        Self {
            id: account.id,
            email: account.email,
            role: account.role.as_str().to_owned(),
            status,
            disabled: account.disabled_at.is_some(),
            disabled_at: account.disabled_at.map(rfc3339),
            created_at: rfc3339(account.created_at),
            last_sign_in_at: summary.last_sign_in_at.map(rfc3339),
            invitation_expires_at,
            sessions: summary.sessions,
        }
    }
}

/// The longest email accepted (RFC 5321's path limit).
pub(crate) const MAX_EMAIL_BYTES: usize = 254;

/// Checks an email's syntax: one `@`, a local part of at most 64 bytes
/// without spaces, quotes or brackets, and a domain of dot-separated labels
/// of letters, digits and dashes. Returns it trimmed.
pub(crate) fn valid_email(text: &str) -> ApiResult<&str> {
    let email = text.trim();
    let refused = || {
        ApiError::unprocessable(
            "invalid_email",
            format!("email must look like name@example.com (at most {MAX_EMAIL_BYTES} bytes)"),
        )
    };
    if email.len() > MAX_EMAIL_BYTES {
        return Err(refused());
    }
    // Accounts are unique by their lower-cased email, so one that could pass
    // for another's (an invisible character, another normal form) is refused
    // with the reason.
    if let Some(refusal) = entitle_core::name_refusal(email) {
        return Err(ApiError::unprocessable(
            "invalid_email",
            format!("email {refusal}"),
        ));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(refused());
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"\"(),:;<>@[]\\".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(email)
    } else {
        Err(refused())
    }
}

/// Creates a portal account (email and password) for the tenant.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/accounts", tag = "tenants", request_body = CreateAccount,
    params(("tenant" = String, Path)), responses((status = 201, body = AccountJson), (status = 409), (status = 422)))]
pub(crate) async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<CreateAccount>,
) -> ApiResult<Response> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let role = tenant_role(&body.role)?;
    let email = valid_email(&body.email)?;
    let password_hash = hash_password(body.password).await?;
    let new = entitle_store::NewAccount {
        tenant_id: Some(tenant.id.clone()),
        email: email.to_owned(),
        password_hash,
        role,
    };
    let account = state.store.create_account(new, &caller.actor).await?;
    let summary = state.store.account_summary(&tenant.id, &account.id).await?;
    Ok((StatusCode::CREATED, Json(AccountJson::from(summary))).into_response())
}

/// A list of accounts.
#[derive(Serialize, ToSchema)]
pub struct AccountList {
    /// The accounts, by email.
    pub items: Vec<AccountJson>,
}

/// Lists the tenant's portal accounts; admins only.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/accounts", tag = "tenants",
    params(("tenant" = String, Path)), responses((status = 200, body = AccountList), (status = 403), (status = 404)))]
pub(crate) async fn list_accounts(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<AccountList>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let accounts = state.store.account_summaries(&tenant.id).await?;
    Ok(Json(AccountList {
        items: accounts.into_iter().map(AccountJson::from).collect(),
    }))
}

/// Body of `PATCH …/accounts/{id}`; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    /// Disable (sign-in refused, sessions ended) or enable.
    pub disabled: Option<bool>,
    /// admin or viewer.
    pub role: Option<String>,
}

/// Disables, enables or changes the role of a portal account; admins only.
/// Nobody disables or demotes the account they are signed in with, nor the
/// tenant's last active admin account (409).
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/accounts/{id}", tag = "tenants", request_body = UpdateAccount,
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = AccountJson), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub(crate) async fn update_account(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    parts: axum::http::request::Parts,
    JsonBody(body): JsonBody<UpdateAccount>,
) -> ApiResult<Json<AccountJson>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let role = body.role.as_deref().map(tenant_role).transpose()?;
    // An admin who disables or demotes their own account could leave the
    // tenant with nobody able to undo it.
    let own = crate::auth::session_account_id(&parts, &state).await? == Some(id.clone());
    if own && (body.disabled == Some(true) || role == Some(Role::Viewer)) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "own_account",
            "you cannot disable or demote the account you are signed in with; ask another admin",
        ));
    }
    let change = AccountChange {
        disabled: body.disabled,
        role,
    };
    let account = state
        .store
        .change_account(&tenant.id, &id, change, &caller.actor)
        .await?;
    let summary = state.store.account_summary(&tenant.id, &account.id).await?;
    Ok(Json(AccountJson::from(summary)))
}

/// Body of `POST …/accounts/{id}/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    /// The new password: 12 characters to 1,024 bytes.
    pub password: String,
    /// The current password, required when changing your own.
    pub current_password: Option<String>,
}

/// Sets an account's password: an admin for any account of the tenant (which
/// ends its sessions), or anyone for their own account given the current one.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/accounts/{id}/password", tag = "tenants", request_body = SetPassword,
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 403), (status = 404), (status = 422)))]
pub(crate) async fn set_password(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    parts: axum::http::request::Parts,
    JsonBody(body): JsonBody<SetPassword>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let own = crate::auth::session_account_id(&parts, &state).await? == Some(id.clone());
    if own {
        let account = state.store.account(Some(&tenant.id), &id).await?;
        let current = body.current_password.unwrap_or_default();
        if !verify_password(current, account.password_hash).await {
            state
                .failures
                .record_failure(crate::extract::client_address(&parts));
            return Err(ApiError::forbidden(
                "current_password is wrong; give your current password to change it",
            ));
        }
    } else {
        caller.require_writer()?;
    }
    let hash = hash_password(body.password).await?;
    // A reset by someone else ends the account's sessions, in case the reason
    // for it is that the password leaked; changing your own keeps you signed in.
    state
        .store
        .set_account_password(Some(&tenant.id), &id, &hash, !own, &caller.actor)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many sessions ended.
#[derive(Serialize, ToSchema)]
pub struct SessionsEnded {
    /// The number of sessions ended.
    pub ended: u64,
}

/// Ends every session of a portal account at once; admins only.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/accounts/{id}/sessions", tag = "tenants",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = SessionsEnded), (status = 403), (status = 404)))]
pub(crate) async fn end_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Json<SessionsEnded>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let ended = state
        .store
        .end_sessions(Some(&tenant.id), &id, &caller.actor)
        .await?;
    Ok(Json(SessionsEnded { ended }))
}

/// The shortest password accepted: ASVS level 2 asks for at least 12 characters.
const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password accepted, in bytes, so that hashing stays cheap.
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a new password's length and hashes it off the async workers, since
/// argon2 takes tens of milliseconds of CPU.
pub(crate) async fn hash_password(password: String) -> ApiResult<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::unprocessable(
            "invalid_password",
            format!(
                "a password is {MIN_PASSWORD_CHARS} characters to {MAX_PASSWORD_BYTES} bytes long"
            ),
        ));
    }
    tokio::task::spawn_blocking(move || crate::password::hash(&password))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "password hashing task failed");
            ApiError::internal()
        })?
        .map_err(|e| ApiError::unprocessable("invalid_password", e.to_string()))
}

/// Whether `password` matches `stored`, checked off the async workers.
async fn verify_password(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || crate::password::verify(&password, &stored))
        .await
        .unwrap_or(false)
}
