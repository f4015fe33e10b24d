//! Portal accounts: creation, role and disabling, passwords and sessions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, patch, post};
use axum::{Json, Router};
use entitle_store::{Account, AccountChange, Role};
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
    /// Whether the account is disabled (cannot sign in, has no sessions).
    pub disabled: bool,
    /// When it was disabled (RFC 3339).
    pub disabled_at: Option<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

impl From<Account> for AccountJson {
    fn from(account: Account) -> Self {
        Self {
            id: account.id,
            email: account.email,
            role: account.role.as_str().to_owned(),
            disabled: account.disabled_at.is_some(),
            disabled_at: account.disabled_at.map(rfc3339),
            created_at: rfc3339(account.created_at),
        }
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
    let email = body.email.trim();
    if !email.contains('@') || email.len() > 254 || email.contains(char::is_whitespace) {
        return Err(ApiError::unprocessable(
            "invalid_email",
            "email must look like name@example.com",
        ));
    }
    let password_hash = hash_password(body.password).await?;
    let new = entitle_store::NewAccount {
        tenant_id: Some(tenant.id.clone()),
        email: email.to_owned(),
        password_hash,
        role,
    };
    let account = state.store.create_account(new, &caller.actor).await?;
    Ok((StatusCode::CREATED, Json(AccountJson::from(account))).into_response())
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
    let accounts = state.store.accounts(&tenant.id).await?;
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
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/accounts/{id}", tag = "tenants", request_body = UpdateAccount,
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = AccountJson), (status = 403), (status = 404), (status = 422)))]
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
        return Err(ApiError::unprocessable(
            "own_account",
            "you cannot disable or demote the account you are signed in with",
        ));
    }
    let change = AccountChange {
        disabled: body.disabled,
        role,
    };
    let account = state
        .store
        .update_account(Some(&tenant.id), &id, change, &caller.actor)
        .await?;
    Ok(Json(AccountJson::from(account)))
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
const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a new password's length and hashes it off the async workers, since
/// argon2 takes tens of milliseconds of CPU.
async fn hash_password(password: String) -> ApiResult<String> {
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
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server could not complete the request; it has been logged",
            )
        })?
        .map_err(|e| ApiError::unprocessable("invalid_password", e.to_string()))
}

/// Whether `password` matches `stored`, checked off the async workers.
async fn verify_password(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || crate::password::verify(&password, &stored))
        .await
        .unwrap_or(false)
}
